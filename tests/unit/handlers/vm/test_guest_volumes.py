"""Which of kubelet's volumes a VM pod keeps in its guest, and the host's read of them
(kubelet's ``..data`` layout, modes, digests, bounds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmcri.agent.types import VolumeKind
from vmcri.handlers.vm import guest_volumes
from vmcri.handlers.vm.guest_volumes import MAX_FILES, TooBig, guest_volume, read_volume
from vmcri.model import Mount, MountPropagation

PODS = "/var/lib/kubelet/pods/0f1e"
VOL = f"{PODS}/volumes/kubernetes.io"
COPY, EMPTY, FILE = VolumeKind.COPY, VolumeKind.EMPTY_DIR, VolumeKind.FILE


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        (Mount("/c", f"{VOL}~empty-dir/cache"), ("empty-dir~cache", EMPTY)),
        (Mount("/c", f"{VOL}~configmap/app", readonly=True), ("configmap~app", COPY)),
        (Mount("/c", f"{VOL}~secret/db", readonly=True), ("secret~db", COPY)),
        (Mount("/c", f"{VOL}~projected/kube-api", readonly=True), ("projected~kube-api", COPY)),
        (Mount("/c", f"{VOL}~downward-api/info", readonly=True), ("downward-api~info", COPY)),
        (Mount("/etc/hosts", f"{PODS}/etc-hosts"), ("etc-hosts", VolumeKind.FILE)),
        # What stays on the share:
        (Mount("/c", f"{VOL}~configmap/app"), None),  # writable
        (Mount("/c", f"{VOL}~csi/pv"), None),
        (Mount("/c", f"{PODS}/volume-subpaths/app/c/0", readonly=True), None),
        (Mount("/d", f"{PODS}/containers/app/0a1b"), ("termination~app~0a1b", FILE)),
        (Mount("/d", f"{PODS}/containers/app/0a1b", readonly=True), None),
        (Mount("/d", f"{PODS}/containers/app/../0a1b"), None),
        (Mount("/c", "/srv/data"), None),
        (Mount("/c", f"{VOL}~empty-dir/cache",
               propagation=MountPropagation.HOST_TO_CONTAINER), None),
        (Mount("/c", "", image="busybox"), None),
    ],
)  # fmt: skip
def test_kubelet_volumes_are_told_by_their_host_path(
    mount: Mount, expected: tuple[str, VolumeKind] | None
) -> None:
    found = guest_volume(mount)
    assert (found.name, found.kind) == expected if found else expected is None


def test_an_empty_dir_on_a_tmpfs_is_a_memory_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_volumes, "_fs_type", lambda path: guest_volumes.TMPFS_MAGIC)
    found = guest_volume(Mount("/c", f"{VOL}~empty-dir/m"))
    assert found is not None and found.kind is VolumeKind.EMPTY_DIR_MEMORY


def _layout(path: Path, files: dict[str, bytes], gen: str) -> None:
    """kubelet's atomic writer: files in a generation dir, ``..data`` and key symlinks."""
    (path / gen).mkdir(parents=True)
    for key, data in files.items():
        (path / gen / key).parent.mkdir(parents=True, exist_ok=True)
        (path / gen / key).write_bytes(data)
        os.chmod(path / gen / key, 0o400)
    os.symlink(gen, path / "..tmp")
    os.rename(path / "..tmp", path / "..data")
    for top in {key.split("/")[0] for key in files}:
        if not (path / top).is_symlink():
            os.symlink(f"..data/{top}", path / top)


def test_a_kubelet_volume_reads_as_its_visible_files(tmp_path: Path) -> None:
    path = tmp_path / "pods" / "u" / "volumes" / "kubernetes.io~projected" / "token"
    path.mkdir(parents=True)
    _layout(path, {"token": b"jwt", "ca.crt": b"pem", "sub/namespace": b"default"}, "..g1")
    volume = guest_volume(Mount("/v", str(path), readonly=True))
    assert volume is not None
    first = read_volume(volume)
    assert [(f.path, f.data, f.mode) for f in first.files] == [
        ("ca.crt", b"pem", 0o400),
        ("sub/namespace", b"default", 0o400),
        ("token", b"jwt", 0o400),
    ]
    assert read_volume(volume).digest == first.digest
    _layout(path, {"token": b"jwt2", "ca.crt": b"pem", "sub/namespace": b"default"}, "..g2")
    assert read_volume(volume).digest != first.digest


def test_more_files_than_the_bound_are_too_many(tmp_path: Path) -> None:
    path = tmp_path / "pods" / "u" / "volumes" / "kubernetes.io~configmap" / "many"
    path.mkdir(parents=True)
    for i in range(MAX_FILES + 1):
        (path / f"k{i}").write_text("v")
    volume = guest_volume(Mount("/v", str(path), readonly=True))
    assert volume is not None
    with pytest.raises(TooBig, match="files"):
        read_volume(volume)
