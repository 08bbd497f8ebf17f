"""What a container sees of its PID namespace, read through the CRI (ExecSync as ``ps``
would read /proc), for the PID namespace tests of both handlers (tests/integration/vm,
tests/security)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

# Every process of the namespace as "pid|comm|cmdline" (NULs as spaces).
LIST_PROCESSES = (
    "for d in /proc/[0-9]*; do "
    'printf "%s|%s|" "${d#/proc/}" "$(cat $d/comm 2>/dev/null)"; '
    "tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done"
)
KERNEL_THREADS = ("kthreadd", "ksoftirqd", "kworker", "rcu_", "migration", "kswapd", "cpuhp")
PAUSE = "vmcri-pause"  # the comm of a shared PID namespace's PID 1 (host/pause.py)
POD_TIMEOUT_S = 240  # a VM pod may cold-boot under software emulation


class PodEnv(Protocol):
    """What the helpers need of a suite's environment (tests/integration/vm's VmEnv)."""

    tmp: Path
    sandboxes: list[str]

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub: ...


@dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    cmdline: str


def pid_pod(
    env: PodEnv, name: str, handler: str, pid: pb.NamespaceMode
) -> tuple[str, pb.PodSandboxConfig]:
    """A pod (recorded for teardown) whose PID namespace mode is ``pid``."""
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname=name,
        log_directory=str(env.tmp / "logs" / name),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pid)
            )
        ),
    )
    request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
    sandbox_id = env.runtime.RunPodSandbox(request, timeout=POD_TIMEOUT_S).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    return sandbox_id, config


def container_linux(
    pid: pb.NamespaceMode,
    target_id: str = "",
    security: pb.LinuxContainerSecurityContext | None = None,
) -> pb.LinuxContainerConfig:
    """A container's linux config with PID namespace mode ``pid`` (kubelet copies the pod's)."""
    context = pb.LinuxContainerSecurityContext()
    if security is not None:
        context.CopyFrom(security)
    context.namespace_options.pid = pid
    context.namespace_options.target_id = target_id
    return pb.LinuxContainerConfig(security_context=context)


def run(env: PodEnv, container_id: str, script: str) -> pb.ExecSyncResponse:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    response: pb.ExecSyncResponse = env.runtime.ExecSync(request, timeout=90)
    return response


def processes(env: PodEnv, container_id: str) -> dict[int, Process]:
    """The processes an exec in the container sees, by pid."""
    result = run(env, container_id, LIST_PROCESSES)
    assert result.exit_code == 0, result.stderr
    seen: dict[int, Process] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        pid, comm, cmdline = line.split("|", 2)
        seen[int(pid)] = Process(int(pid), comm, cmdline.strip())
    return seen


def assert_no_agent_nor_kernel_threads(seen: dict[int, Process]) -> None:
    """Nothing of the node (or the guest) beyond the pod: no vmcri agent, no kernel thread."""
    for process in seen.values():
        assert "vmcri.agent" not in process.cmdline, process
        assert "vmcri agent" not in process.cmdline, process
        assert not process.comm.startswith(KERNEL_THREADS), process
