"""Bring up a VM pod with one container through vmcri's CRI socket, as kubelet would.

The image is built here from busybox-static and served by Debian's docker-registry
on loopback, so the demo needs no internet. The pod is left running; run again to
replace it, or with --cleanup to remove it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

# The registry helpers live in tests/support/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

POD = "vmcri-demo"
LOG_DIR = Path("/var/log/pods/vmcri-demo")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def remove_old(runtime: api_pb2_grpc.RuntimeServiceStub) -> None:
    for sandbox in runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        if sandbox.metadata.name == POD:
            say(f"removing the previous demo pod {sandbox.id[:13]}")
            runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=300
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", default="/run/vmcri/vmcri.sock")
    parser.add_argument("--handler", default="vm", help="RuntimeClass handler (vm or runc)")
    parser.add_argument("--cleanup", action="store_true", help="only remove the demo pod")
    args = parser.parse_args()

    channel = grpc.insecure_channel(f"unix:{args.socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    version = runtime.Version(pb.VersionRequest(), timeout=30)
    say(
        f"connected to {version.runtime_name} {version.runtime_version} "
        f"(CRI {version.runtime_api_version})"
    )
    remove_old(runtime)
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # kubelet, too, starts a pod's logs afresh
    if args.cleanup:
        return 0

    with tempfile.TemporaryDirectory(prefix="vmcri-demo-") as tmp, LocalRegistry(Path(tmp)) as reg:
        push_busybox_image(reg.host, "demo/busybox:1")
        image = f"{reg.host}/demo/busybox:1"
        say(f"pulling {image} from a docker-registry on loopback")
        ref = images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300)
        say(f"image {ref.image_ref}")

    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=POD, uid="vmcri-demo-uid", namespace="default"),
        hostname=POD,
        log_directory=str(LOG_DIR),
    )
    started = time.monotonic()
    say(f"RunPodSandbox with handler {args.handler!r} (a VM boots; tens of seconds without KVM)")
    sandbox_id = runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod, runtime_handler=args.handler), timeout=600
    ).pod_sandbox_id
    say(f"pod {sandbox_id[:13]} ready after {time.monotonic() - started:.1f}s")
    network = runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).status.network
    extra = [ip.ip for ip in network.additional_ips]
    say(f"pod IP {network.ip or '(none)'}" + (f", also {', '.join(extra)}" if extra else ""))
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="hello"),
        image=pb.ImageSpec(image=image),
        command=["/bin/sh", "-c", "echo hello from $(hostname): $(uname -sr); exec sleep 1d"],
        log_path="hello.log",
    )
    container_id = runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=container, sandbox_config=pod),
        timeout=300,
    ).container_id
    runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=120)
    say(f"container {container_id[:13]} running after {time.monotonic() - started:.1f}s")

    log_file = LOG_DIR / "hello.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        log_file.exists() and "hello from" in log_file.read_text()
    ):
        time.sleep(0.5)
    say(f"its log ({log_file}):\n{log_file.read_text() if log_file.exists() else '(empty)'}")
    result = runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=["cat", "/proc/version"], timeout=60),
        timeout=120,
    )
    say(f"exec 'cat /proc/version' in it: {result.stdout.decode().strip()}")
    status = runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id))
    say(f"container state: {pb.ContainerState.Name(status.status.state)}")
    where = " (`virsh list` shows its VM)" if args.handler == "vm" else ""
    say(f"the pod keeps running{where}; remove it with: scripts/run.sh --cleanup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
