"""A read-only erofs image of an unpacked layer, built once, for VM pods' layer disks.

A VM pod's containers reach their image through block devices, not a file server: each
layer's unpacked directory (``layers/<chain-hex>/diff``, whiteouts and opaque directories
already in overlayfs's form) is packed once into ``layers/<chain-hex>/layer.erofs``, which
every pod VM using the layer gets as a read-only disk (``vmcri/handlers/vm/disks.py``) and
stacks in an overlay of its own. Next to the layer, it goes with it: image GC removes the
chain directory whole (``layer_store.LayerStore.remove``).

Built by ``mkfs.erofs`` (erofs-utils) from the directory the host unpacked and alone
writes: nothing a guest wrote is ever read here. Uncompressed, because under emulation a
guest pays for decompression in translated code, and the layers' files are on disk once
already; file times are kept exactly (Python checks a ``.pyc`` against its source's
mtime). The image appears by rename only when complete, so a crash leaves a temporary
file (swept by the next build), never a torn image under its name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from vmcri.errors import HostCommandError
from vmcri.images.layer_store import KeyedLocks

IMAGE_NAME = "layer.erofs"
MKFS = "mkfs.erofs"
# A layer is at most DEFAULT_LIMITS' unpacked size; mkfs.erofs writes ~200 MB/s here.
MKFS_TIMEOUT_S = 600.0

_locks = KeyedLocks()


def erofs_path(diff_dir: Path) -> Path:
    """Where the erofs image of the layer unpacked at ``diff_dir`` is (or will be)."""
    return diff_dir.parent / IMAGE_NAME


def layer_image(diff_dir: Path) -> Path:
    """The erofs image of the layer at ``diff_dir``, built now if it is not there yet;
    concurrent callers for one layer build it once.

    Raises HostCommandError (mkfs.erofs is missing or failed; nothing is left behind).
    """
    image = erofs_path(diff_dir)
    if image.is_file():
        return image
    with _locks.hold(str(image)):
        if image.is_file():
            return image
        _sweep(image.parent)
        tmp = image.with_name(f".{IMAGE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
        argv = [MKFS, "--quiet", "--preserve-mtime", str(tmp), str(diff_dir)]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=MKFS_TIMEOUT_S, check=False)
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip()[-500:]
                raise HostCommandError(
                    f"{MKFS} of layer {diff_dir.parent.name[:12]}: "
                    f"{message or f'exit {done.returncode}'}",
                    returncode=done.returncode,
                )
            os.chmod(tmp, 0o444)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, image)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostCommandError(f"{MKFS} of layer {diff_dir.parent.name[:12]}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return image


def mkfs_available() -> bool:
    return shutil.which(MKFS) is not None


def _sweep(layer_dir: Path) -> None:
    """Temporary images of builds that did not finish (a daemon killed mid-build)."""
    for entry in layer_dir.glob(f".{IMAGE_NAME}.*"):
        pid = entry.name.split(".")[3] if entry.name.count(".") >= 4 else ""
        if pid == str(os.getpid()):
            continue  # ours: another layer's build, or this one's, guarded by the lock
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
