"""kill -9 in the middle of a pull: the store stays consistent and the next pull finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.layers import Layer
from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry
from tests.support.throttling_proxy import ThrottlingProxy
from tests.support.wait import wait_until
from vmcri.images.service import ImageService

pytestmark = pytest.mark.integration
SOURCE = Path(__file__).resolve().parents[3]


def test_kill9_mid_pull_then_repull(tmp_path: Path, registry: LocalRegistry) -> None:
    layers = [Layer("none").file(f"big{i}", os.urandom(3 << 20)) for i in range(3)]
    pushed = push_busybox_image(registry.host, "crash/big:1", extra_layers=layers)
    proxy = ThrottlingProxy(registry.host, rate=4 << 20)
    root = tmp_path / "root"
    conf = tmp_path / "r.conf"
    conf.write_text(
        "".join(
            f'[[registry]]\nlocation = "{h}"\ninsecure = true\n'
            for h in (registry.host, proxy.host)
        )
    )
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SOURCE)!r})
        from pathlib import Path
        from vmcri.images.service import ImageService
        ImageService(Path({str(root)!r}), Path({str(conf)!r}), download_workers=1).pull(
            "{proxy.host}/crash/big:1")
    """)
    try:
        child = subprocess.Popen([sys.executable, "-c", script])
        ingest = root / "images/blobs/ingest"
        unpacking = root / "images/layers"

        def half_way() -> bool:
            """A layer blob is complete and another is half downloaded, with its unpack
            (which follows the download) under way."""
            blobs = list((root / "images/blobs/sha256").glob("*")) if ingest.exists() else []
            partial = [p for p in ingest.glob("*") if p.stat().st_size > 0] if blobs else []
            tmp = list(unpacking.glob(".tmp-*")) if partial else []
            return len(blobs) >= 4 and bool(partial) and bool(tmp)

        if not wait_until(half_way, 20):
            child.kill()
            pytest.fail("the throttled pull never got half way")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        proxy.close()
    assert not list((root / "images/records").iterdir())  # no image appeared
    leftovers = list(ingest.iterdir())
    assert leftovers, "the kill should have interrupted a download"
    svc = ImageService(root, conf)  # start-up sweeps what the dead process left
    assert list(ingest.iterdir()) == []
    assert not [p for p in svc.layers.root.iterdir() if p.name.startswith(".tmp")]
    assert svc.pull(f"{registry.host}/crash/big:1") == pushed.config_digest
    info = svc.image_for_container(f"{registry.host}/crash/big:1")
    assert (Path(info.layer_dirs[3]) / "big2").stat().st_size == 3 << 20


def test_unfinished_layer_dir_is_redone(tmp_path: Path, registry: LocalRegistry) -> None:
    pushed = push_busybox_image(registry.host, "crash/small:1", cmd=["true"])
    conf = tmp_path / "r.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    root = tmp_path / "root"
    svc = ImageService(root, conf)
    svc.pull(f"{registry.host}/crash/small:1")
    chain = pushed.diff_ids[0]
    # Simulate a crash between rename and meta.json, and a dead pid's temp dir.
    (svc.layers.dir(chain) / "meta.json").unlink()
    for p in (root / "images/records").iterdir():
        p.unlink()
    (svc.layers.root / ".tmp-999999999-abc").mkdir()
    svc2 = ImageService(root, conf)
    assert not (svc2.layers.root / ".tmp-999999999-abc").exists()
    svc2.pull(f"{registry.host}/crash/small:1")
    assert (svc2.layers.diff_dir(chain) / "bin/busybox").exists()
