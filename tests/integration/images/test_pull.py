"""Pulls from a real docker-registry of images built here from busybox-static."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.layers import Layer
from tests.support.push import push_busybox_image, push_image
from tests.support.registry import LocalRegistry
from vmcri.errors import DigestMismatch, FailedPrecondition, NotFound, UnsafeContent
from vmcri.images.auth import Auth, Deadline
from vmcri.images.registries_conf import Endpoint
from vmcri.images.registry_client import BlobSink, RegistryClient
from vmcri.images.service import ImageService

pytestmark = pytest.mark.integration


def _extra() -> Layer:
    return (
        Layer("zstd")
        .whiteout("etc/group")
        .dir("data")
        .file("data/a", b"hello\n")
        .symlink("data/link", "a")
        .hardlink("data/hl", "data/a")
        .file("data/suid", b"#!/bin/sh\n", 0o4755, uid=1000, gid=1000)
    )


def _overlay(tmp: Path, dirs: tuple[str, ...]) -> Path:
    merged = tmp / "merged"
    merged.mkdir()
    lower = ":".join(reversed(dirs))  # overlay wants the topmost first
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True
    )
    return merged


def test_multilayer_image_is_runnable_through_overlay(
    tmp_path: Path, registry: LocalRegistry, conf: Path
) -> None:
    pushed = push_busybox_image(
        registry.host, "test/multi:1", extra_layers=[_extra()], user="1000:1000", index=True
    )
    svc = ImageService(tmp_path / "root", conf)
    ref = f"{registry.host}/test/multi:1"
    image_id = svc.pull(ref, deadline=Deadline.after(60))
    assert image_id == pushed.config_digest
    record = svc.status(ref)
    assert record is not None
    assert record.repo_tags == (ref,)
    assert record.repo_digests == (f"{registry.host}/test/multi@{pushed.manifest_digest}",)
    assert (record.uid, record.username) == (1000, "")
    assert svc.status(image_id) == record == svc.status(image_id[7:19])
    assert svc.status(f"{registry.host}/test/multi@{pushed.manifest_digest}") == record
    info = svc.image_for_container(ref)
    assert len(info.layer_dirs) == 2 and info.config["User"] == "1000:1000"
    merged = _overlay(tmp_path, info.layer_dirs)
    try:
        assert not (merged / "etc/group").exists()  # the whiteout hides the lower file
        assert (merged / "etc/passwd").exists()
        assert os.readlink(merged / "data/link") == "a"
        assert (merged / "data/hl").stat().st_ino == (merged / "data/a").stat().st_ino
        st = (merged / "data/suid").stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (1000, 0o4755)
        out = subprocess.run(
            ["chroot", str(merged), "/bin/sh", "-c", "cat /data/link; id -u"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert out == "hello\n0\n"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_pull_by_digest_and_same_id_from_two_registries(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    pushed = push_busybox_image(registry.host, "test/twice:1", cmd=["true"])
    with LocalRegistry(tmp_path / "second") as second:
        push_busybox_image(second.host, "other/name:2", cmd=["true"])
        conf = tmp_path / "r.conf"
        conf.write_text(
            "".join(
                f'[[registry]]\nlocation = "{h}"\ninsecure = true\n'
                for h in (registry.host, second.host)
            )
        )
        svc = ImageService(tmp_path / "root", conf)
        a = svc.pull(f"{registry.host}/test/twice@{pushed.manifest_digest}")
        b = svc.pull(f"{second.host}/other/name:2")
    assert a == b == pushed.config_digest
    (record,) = svc.list()
    assert record.repo_tags == (f"{second.host}/other/name:2",)
    assert len(record.repo_digests) == 2


def test_mirror_is_used_for_an_unreachable_origin(tmp_path: Path, registry: LocalRegistry) -> None:
    pushed = push_busybox_image(registry.host, "mirrored/pause:3.9", cmd=["true"])
    conf = tmp_path / "r.conf"
    conf.write_text(
        '[[registry]]\nprefix = "registry.example.invalid"\n'
        'location = "registry.example.invalid"\n'
        f'[[registry.mirror]]\nlocation = "{registry.host}/mirrored"\n'
        "insecure = true\n"
    )
    svc = ImageService(tmp_path / "root", conf)
    assert svc.pull("registry.example.invalid/pause:3.9") == pushed.config_digest
    assert svc.status("registry.example.invalid/pause:3.9") is not None


def test_malicious_layers_fail_and_leave_nothing(
    tmp_path: Path, registry: LocalRegistry, conf: Path
) -> None:
    svc = ImageService(tmp_path / "root", conf)
    evil = {
        "traversal": Layer().file("../../../../tmp/vmcri-pwned", b"x"),
        "hardlink": Layer().hardlink("passwd", "../../../../../etc/passwd"),
        "device": Layer().device("dev/mem", 1, 1),
    }
    for name, layer in evil.items():
        push_busybox_image(registry.host, f"evil/{name}:1", extra_layers=[layer])
        with pytest.raises(UnsafeContent):
            svc.pull(f"{registry.host}/evil/{name}:1")
    assert not Path("/tmp/vmcri-pwned").exists()
    assert svc.list() == []
    layers = sorted(p.name for p in svc.layers.root.iterdir())
    assert all(not n.startswith(".tmp") for n in layers)
    assert len(layers) == 1  # only the good busybox base layer, shared by all three


def test_wrong_diff_id_is_refused(tmp_path: Path, registry: LocalRegistry, conf: Path) -> None:
    push_image(registry.host, "evil/diffid:1", [Layer().file("f", b"1")], bad_diff_id=True)
    svc = ImageService(tmp_path / "root", conf)
    with pytest.raises(DigestMismatch):
        svc.pull(f"{registry.host}/evil/diffid:1")
    assert svc.list() == [] and list(svc.layers.root.iterdir()) == []


def test_unknown_image_is_not_found(tmp_path: Path, registry: LocalRegistry, conf: Path) -> None:
    svc = ImageService(tmp_path / "root", conf)
    with pytest.raises(NotFound):
        svc.pull(f"{registry.host}/no/such:image")
    with pytest.raises(NotFound):
        svc.image_for_container("no/such:image")


def test_concurrent_pulls_download_each_blob_once(
    tmp_path: Path, registry: LocalRegistry, conf: Path
) -> None:
    layers = [Layer().file(f"l{i}", os.urandom(2 << 20)) for i in range(3)]
    push_busybox_image(registry.host, "test/dedup:1", extra_layers=layers)
    fetched: list[str] = []
    lock = threading.Lock()

    class Counting(RegistryClient):
        def fetch_blob(self, digest: str, sink: BlobSink) -> None:
            with lock:
                fetched.append(digest)
            super().fetch_blob(digest, sink)

    def factory(ep: Endpoint, auth: Auth, deadline: Deadline) -> RegistryClient:
        return Counting(ep, auth, deadline)

    svc = ImageService(tmp_path / "root", conf, client_factory=factory)
    results: list[str] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(svc.pull(f"{registry.host}/test/dedup:1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 4
    assert len(fetched) == len(set(fetched)) == 5  # config + 4 layers, each once
    assert len(svc.list()) == 1


def test_remove_gc_and_in_use(tmp_path: Path, registry: LocalRegistry, conf: Path) -> None:
    push_busybox_image(registry.host, "gc/a:1", extra_layers=[Layer().file("a", b"a")])
    push_busybox_image(registry.host, "gc/b:1", extra_layers=[Layer().file("b", b"b")])
    used: set[str] = set()
    svc = ImageService(tmp_path / "root", conf, in_use=lambda: used)
    a = svc.pull(f"{registry.host}/gc/a:1")
    svc.pull(f"{registry.host}/gc/a:1")  # again: nothing changes
    b = svc.pull(f"{registry.host}/gc/b:1")
    assert len(svc.layers.chain_dirs()) == 3  # the base is shared
    used.add(a)
    with pytest.raises(FailedPrecondition):
        svc.remove(f"{registry.host}/gc/a:1")
    used.clear()
    blobs_before = svc.content.blob_digests()
    svc.remove(f"{registry.host}/gc/a:1")
    svc.remove(f"{registry.host}/gc/a:1")  # idempotent
    assert [r.id for r in svc.list()] == [b]
    assert len(svc.layers.chain_dirs()) == 2
    gone = blobs_before - svc.content.blob_digests()
    assert a in gone and len(gone) == 3  # its config, manifest and unique layer blob
    svc.image_for_container(b)
    svc.remove(b)
    assert svc.layers.chain_dirs() == set() and svc.content.blob_digests() == set()
    usage = svc.fs_info()
    assert usage.inodes_used > 0 and usage.mountpoint.endswith("images")
