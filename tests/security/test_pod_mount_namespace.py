"""A VM pod's own mount namespace (``vmcri/host/mount_ns.py``): what is mounted there never
reaches the host's namespace, and no daemon thread is left in it, whatever the work does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmcri.errors import HostCommandError
from vmcri.host import mount_ns
from vmcri.host.mounts import HARDENED, HostMounter, mount_points

pytestmark = pytest.mark.integration


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Path]:
    """A pod directory as the vm backend makes it: mounts/, share/, and the pinned namespace."""
    mounter = HostMounter(HARDENED)
    mounter.make_private(tmp_path)
    base = tmp_path / "pod"
    base.mkdir()
    mounter.share_readonly(base / "mounts", base / "share", base / "mountns")
    yield base
    mounter.unmount_below(base / "mounts", base / "mountns")
    mounter.unmount_below(tmp_path)


def _here() -> str:
    return os.readlink("/proc/thread-self/ns/mnt")


def test_a_volume_bound_in_the_pod_namespace_never_reaches_the_hosts(
    pod: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    mounter = HostMounter(HARDENED)
    mounter.bind(volume, volume / "sub")  # a mount inside the hostPath, as a node makes one
    mounter.release_share(pod / "share")  # as once the pod's VM is up
    target = pod / "mounts" / "containers" / "c" / "volumes" / "0"
    mounter.bind(volume, target, namespace=pod / "mountns")

    assert mount_points(target) == []  # the host: neither the volume nor its submount ...
    assert mount_points(pod / "share" / "containers") == []
    there = mount_ns.run_in(pod / "mountns", lambda: mount_points(pod))
    assert target in there and target / "sub" in there  # ... the pod's namespace: both
    assert pod / "share" / "containers" / "c" / "volumes" / "0" / "sub" in there
    mounter.unmount(volume / "sub")
    os.rmdir(volume / "sub")  # the node removes the directory: no EBUSY
    left = mount_ns.run_in(pod / "mountns", lambda: mount_points(pod))
    assert target in left and target / "sub" not in left


def test_no_thread_stays_in_the_pod_namespace_whatever_the_work_does(pod: Path) -> None:
    host = _here()

    def fails() -> None:
        assert _here() != host  # it did run in the pod's namespace
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError, match="the work failed"):
        mount_ns.run_in(pod / "mountns", fails)
    assert _here() == host
    assert mount_ns.run_in(pod / "mountns", _here) != host


def test_a_pin_that_is_no_namespace_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "mountns"
    fake.write_text("not a namespace")
    with pytest.raises(OSError):
        mount_ns.run_in(fake, _here)
    with pytest.raises(HostCommandError, match="umount below"):
        HostMounter().unmount_below(tmp_path, fake)
    (tmp_path / "link").symlink_to(fake)
    with pytest.raises(OSError):  # O_NOFOLLOW
        mount_ns.run_in(tmp_path / "link", _here)
