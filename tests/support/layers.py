"""Image layers built in memory: entries (also malicious ones), then a compressed blob.

``busybox_layer`` is a runnable base: ``/bin/busybox`` from busybox-static with
applet symlinks, ``/etc/passwd``, ``/etc/group`` and the usual directories.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

BUSYBOX = "/bin/busybox"
APPLETS = (
    "sh",
    "ls",
    "cat",
    "echo",
    "id",
    "sleep",
    "true",
    "false",
    "mkdir",
    "rm",
    "ps",
    "env",
    "test",
    "wc",
    "head",
    "grep",
    "sed",
    "stat",
    "readlink",
    "touch",
    "ln",
    "hostname",
    "date",
    "kill",
    "uname",
    "whoami",
    "top",
    "ip",
    "nc",
    "wget",
    "tail",
    "cp",
    "mv",
    "chmod",
    "find",
    "sh",
    "printf",
    "md5sum",
    "sha256sum",
    "dd",
    "df",
)


@dataclass
class Layer:
    """A layer under construction: add entries, then ``blob()``."""

    compression: str = "gzip"  # "gzip", "zstd" or "none"
    _buf: io.BytesIO = field(default_factory=io.BytesIO)
    _tar: tarfile.TarFile | None = None
    mtime: int = 1_700_000_000

    def __post_init__(self) -> None:
        self._tar = tarfile.open(  # noqa: SIM115 -- closed by tar_bytes()
            fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT
        )

    def _info(
        self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = self.mtime
        return info

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        """Add a raw entry (for malicious layers)."""
        assert self._tar is not None
        if data is not None:
            info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Layer:
        return self.add(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(
        self,
        name: str,
        data: bytes,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        xattrs: dict[str, str] | None = None,
    ) -> Layer:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return self.add(info, data)

    def symlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        return self.add(info)

    def hardlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        return self.add(info)

    def whiteout(self, name: str) -> Layer:
        head, _, base = name.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq", b"")

    def device(self, name: str, major: int = 1, minor: int = 3) -> Layer:
        info = self._info(name, tarfile.CHRTYPE, 0o666)
        info.devmajor, info.devminor = major, minor
        return self.add(info)

    def tar_bytes(self) -> bytes:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        return self._buf.getvalue()

    def blob(self) -> tuple[bytes, str, str]:
        """(compressed blob, media type, diff_id)."""
        raw = self.tar_bytes()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        if self.compression == "gzip":
            media = "application/vnd.oci.image.layer.v1.tar+gzip"
            return gzip.compress(raw, compresslevel=1, mtime=0), media, diff_id
        if self.compression == "zstd":
            return (
                zstandard.ZstdCompressor().compress(raw),
                "application/vnd.oci.image.layer.v1.tar+zstd",
                diff_id,
            )
        return raw, "application/vnd.oci.image.layer.v1.tar", diff_id


def busybox_layer(compression: str = "gzip") -> Layer:
    """A runnable base: busybox, its applets as symlinks, passwd/group, the usual dirs."""
    layer = Layer(compression)
    for d in ("bin", "etc", "root", "home", "proc", "sys", "dev", "var", "usr"):
        layer.dir(d, 0o700 if d == "root" else 0o755)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    for applet in dict.fromkeys(APPLETS):
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n"
        b"app:x:1000:1000:app:/home/app:/bin/sh\n"
        b"nobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n")
    layer.dir("home/app", 0o755, 1000, 1000)
    return layer
