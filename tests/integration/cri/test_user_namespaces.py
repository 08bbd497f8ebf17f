"""A pod with its own user namespace through the CRI, as kubelet asks for ``hostUsers: false``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.cri.conftest import HANDLER, SLEEPER, CriEnv
from tests.integration.harness import daemon_with_busybox
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

BASE = 65536 * 7
SIZE = 65536


@pytest.fixture(scope="module")
def env() -> Iterator[CriEnv]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("needs root and runc")
    # The daemon's state must be passable by the pod's root (pytest's tmp root is 0700).
    tmp = Path(tempfile.mkdtemp(prefix="vmcri-cri-userns-", dir="/tmp"))
    tmp.chmod(0o711)
    try:
        with daemon_with_busybox(tmp, lambda t, _registry, i, d: CriEnv(t, i, d)) as cri_env:
            yield cri_env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def namespaces(host_id: int = BASE) -> pb.NamespaceOption:
    mapping = [pb.IDMapping(host_id=host_id, container_id=0, length=SIZE)]
    return pb.NamespaceOption(
        userns_options=pb.UserNamespace(mode=pb.POD, uids=mapping, gids=mapping)
    )


def run_pod(env: CriEnv, name: str, ns: pb.NamespaceOption) -> str:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="cri"),
        log_directory=str(env.tmp / "logs" / name),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)
        ),
    )
    request = pb.RunPodSandboxRequest(config=config, runtime_handler=HANDLER)
    sandbox_id = str(env.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id)
    env.sandboxes.append(sandbox_id)
    return sandbox_id


def test_runc_handler_announces_user_namespaces(env: CriEnv) -> None:
    status = env.runtime.Status(pb.StatusRequest(), timeout=30)
    handlers = {h.name: h.features for h in status.runtime_handlers}
    assert handlers[HANDLER].user_namespaces


def test_pod_root_is_mapped(env: CriEnv) -> None:
    sandbox_id = run_pod(env, "mapped", namespaces())
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=env.image),
        command=SLEEPER,
        log_path="app.log",
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(namespace_options=namespaces())
        ),
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    container_id = env.runtime.CreateContainer(request, timeout=60).container_id
    env.start(container_id)
    out = env.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=container_id,
            cmd=["sh", "-c", "cat /proc/self/uid_map; id -u; stat -c %u /bin /etc/resolv.conf"],
            timeout=30,
        ),
        timeout=60,
    ).stdout.decode()
    assert out.split() == ["0", str(BASE), str(SIZE), "0", "0", "0"]
    assert env.status(container_id).state == pb.CONTAINER_RUNNING


def test_bad_mapping_is_refused_and_leaves_no_pod(env: CriEnv) -> None:
    before = env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
    with pytest.raises(grpc.RpcError) as caught:
        run_pod(env, "root-mapped", namespaces(host_id=0))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "userns_options.uids[0].host_id" in str(caught.value.details())
    after = env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
    assert len(after) == len(before)


def test_pod_survives_a_daemon_kill(env: CriEnv) -> None:
    sandbox_id = run_pod(env, "restart", namespaces(BASE + SIZE))
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=env.image),
        command=SLEEPER,
        log_path="app.log",
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    container_id = env.runtime.CreateContainer(request, timeout=60).container_id
    env.start(container_id)
    env.restart()
    pod = env.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).status
    assert pod.state == pb.SANDBOX_READY
    out = env.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=container_id, cmd=["cat", "/proc/self/uid_map"], timeout=30
        ),
        timeout=60,
    ).stdout.split()
    assert out == [b"0", str(BASE + SIZE).encode(), str(SIZE).encode()]
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    env.sandboxes.remove(sandbox_id)
