"""Pull + unpack throughput of vmcri against its ceiling and skopeo+umoci, same image, same run.

Builds a multi-layer image (default 4 layers, 200 MB of files, part random, part
compressible text, many small files and a few big ones), pushes it to a local
docker-registry, then times:

* ``ceiling``: ``zcat <blob> | tar -x`` of every layer blob straight from the
  registry's storage (no HTTP, no digest checks, no safety checks);
* ``vmcri``:   ImageService.pull into an empty root (HTTP, verify, safe unpack);
* ``skopeo+umoci``: ``skopeo copy docker://... oci:...`` then ``umoci unpack``.

Run as root: ``.venv/bin/python bench/pull_bench.py [--size-mb 200] [--layers 4]``.
Targets: vmcri >= 0.9 x ceiling, and faster than skopeo+umoci.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.layers import Layer
from tests.support.push import push_image
from tests.support.registry import LocalRegistry
from vmcri.images.service import ImageService

WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"kernel", b"overlay", b"registry", b"layer"]


def build_layers(size_mb: int, count: int, seed: int = 1) -> list[Layer]:
    rng = random.Random(seed)
    per_layer = size_mb * 1_000_000 // count
    layers = []
    for n in range(count):
        layer = Layer("gzip")
        layer.dir(f"l{n}")
        done = 0
        i = 0
        while done < per_layer:
            kind = i % 10
            if kind == 0:  # a big random (incompressible) file
                size = min(8_000_000, per_layer - done)
                data = rng.randbytes(size)
            elif kind < 5:  # medium text (compressible)
                size = min(400_000, per_layer - done)
                data = b" ".join(rng.choice(WORDS) for _ in range(size // 6))[:size]
            else:  # small files, like a distro's /usr
                size = min(rng.randint(200, 20_000), per_layer - done)
                data = rng.randbytes(size // 2) + b"\0" * (size - size // 2)
            layer.file(f"l{n}/d{i % 50}/f{i}", data, 0o644)
            done += size
            i += 1
        layers.append(layer)
    return layers


def timed(fn: object) -> float:
    start = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - start


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vmcri-pull-bench-"))
    try:
        print(f"building {args.layers} layers, {args.size_mb} MB of files ...", flush=True)
        layers = build_layers(args.size_mb, args.layers)
        with LocalRegistry(work / "registry") as reg:
            pushed = push_image(reg.host, "bench/big:1", layers)
            ref = f"{reg.host}/bench/big:1"
            blobs = [
                reg.storage / "docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data"
                for d in pushed.layer_digests
            ]
            compressed = sum(b.stat().st_size for b in blobs)
            conf = work / "registries.conf"
            conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
            results: dict[str, float] = {}

            def ceiling() -> None:
                dest = work / "ceiling"
                dest.mkdir()
                for blob in blobs:
                    subprocess.run(f"zcat {blob} | tar -x -C {dest}", shell=True, check=True)

            def vmcri() -> None:
                ImageService(work / "vmcri-root", conf).pull(ref)

            def skopeo_umoci() -> None:
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        f"docker://{ref}",
                        f"oci:{work}/oci:big",
                    ],
                    check=True,
                )
                subprocess.run(
                    ["umoci", "unpack", "--image", f"{work}/oci:big", str(work / "bundle")],
                    check=True,
                    capture_output=True,
                )

            for name, fn in (
                ("ceiling", ceiling),
                ("vmcri", vmcri),
                ("skopeo+umoci", skopeo_umoci),
            ):
                drop_caches()
                results[name] = timed(fn)
            unpacked = args.size_mb * 1_000_000
            print(
                f"\nimage: {args.layers} layers, {unpacked / 1e6:.0f} MB unpacked, "
                f"{compressed / 1e6:.0f} MB compressed"
            )
            print(f"{'method':<14} {'seconds':>8} {'MB/s':>8} {'vs ceiling':>11}")
            for name, secs in results.items():
                print(
                    f"{name:<14} {secs:8.2f} {unpacked / 1e6 / secs:8.1f} "
                    f"{results['ceiling'] / secs:10.2f}x"
                )
            ratio = results["ceiling"] / results["vmcri"]
            vs_skopeo = results["skopeo+umoci"] / results["vmcri"]
            print(f"\nvmcri/ceiling throughput ratio: {ratio:.2f} (target >= 0.9)")
            print(f"vmcri speed-up over skopeo+umoci: {vs_skopeo:.2f}x (target > 1)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("run as root (unpack keeps ownership)", file=sys.stderr)
    sys.exit(main())
