"""The runc backend end to end through its SandboxBackend methods (root, real runc)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.runc.runc_itest_helpers import (
    container_record,
    sandbox_record,
    stop,
    wait_exit,
)
from tests.support.wait import wait_for
from vmcri.errors import DeadlineExceeded, InvalidArgument
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.model import ImageInfo, Mount, Resources

pytestmark = pytest.mark.integration


def _records(log: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in log.read_text().splitlines():
        _ts, stream, tag, text = (
            line.split(" ", 3) if line.count(" ") >= 3 else (*line.split(" "), "")
        )
        out.append((stream, tag, text))
    return out


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_container_prints_to_cri_log(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir, command=("sh", "-c", "echo hello; echo oops >&2; hostname; echo $FROM_IMAGE")
    )
    backend.create_container(sb, c, image)
    assert backend.supervisor.start(sb, c) > 0
    ex = wait_exit(backend, sb, c)
    assert (ex.exit_code, ex.reason) == (0, "Completed")
    records = _records(Path(c.log_path))
    assert [r for r in records if r[0] == "stdout"] == [
        ("stdout", "F", "hello"),
        ("stdout", "F", "testpod"),
        ("stdout", "F", "1"),
    ]
    assert [r for r in records if r[0] == "stderr"] == [("stderr", "F", "oops")]
    backend.remove_container(sb, c)
    backend.stop_sandbox(sb)
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []
    assert not (backend.layout.state / "containers" / c.id).exists()
    assert not (backend.layout.state / "sandboxes" / sb.id).exists()
    assert _processes_mentioning(c.id) == []


def test_exec_sync_and_stop_with_exit_code(
    backend: RuncBackend, image: ImageInfo, workdir: Path
) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir, command=("sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done")
    )
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    assert backend.supervisor.liveness(sb, c).running
    res = backend.supervisor.exec_sync(sb, c, ["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 7)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        backend.supervisor.exec_sync(sb, c, ["sleep", "30"], 1)
    assert time.monotonic() - t0 < 10
    stop(backend, sb, c, 10)
    ex = backend.supervisor.recorded_exit(sb, c.id)
    assert ex is not None and (ex.exit_code, ex.reason) == (3, "Error")
    stop(backend, sb, c, 10)  # idempotent
    backend.remove_container(sb, c)
    backend.remove_container(sb, c)  # idempotent
    backend.remove_sandbox(sb)


def test_stop_escalates_to_sigkill(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir, command=("sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
    )
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    t0 = time.monotonic()
    stop(backend, sb, c, 1)
    assert 0.9 < time.monotonic() - t0 < 10
    ex = backend.supervisor.recorded_exit(sb, c.id)
    assert ex is not None and ex.exit_code == 137
    backend.remove_container(sb, c)
    backend.remove_sandbox(sb)


def test_oom_kill_is_reported(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    if not os.path.exists("/sys/fs/cgroup/memory/memory.oom_control") and not os.path.exists(
        "/sys/fs/cgroup/cgroup.controllers"
    ):
        pytest.skip("no memory cgroup controller on this host")
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir, command=("sh", "-c", "tail /dev/zero"),
        resources=Resources(memory_limit_in_bytes=32 << 20),
    )  # fmt: skip
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    ex = wait_exit(backend, sb, c, 60)
    assert (ex.exit_code, ex.reason) == (137, "OOMKilled")
    backend.remove_container(sb, c)
    backend.remove_sandbox(sb)


def test_two_containers_share_the_pod_network(
    backend: RuncBackend, image: ImageInfo, workdir: Path
) -> None:
    sb = sandbox_record()
    started = backend.run_sandbox(sb)
    assert started.netns_path
    server = container_record(
        sb, workdir, name="server",
        command=("sh", "-c", "echo pong > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"),
    )  # fmt: skip
    client = container_record(sb, workdir, name="client", command=("sleep", "1000"))
    for c in (server, client):
        backend.create_container(sb, c, image)
        backend.supervisor.start(sb, c)
    ns = [
        backend.supervisor.exec_sync(sb, c, ["readlink", "/proc/self/ns/net"], 10).stdout
        for c in (server, client)
    ]
    assert ns[0] == ns[1] and ns[0] != os.readlink("/proc/self/ns/net").encode() + b"\n"
    deadline = time.monotonic() + 10
    while True:
        res = backend.supervisor.exec_sync(
            sb, client, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], 10
        )
        if res.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert res.stdout == b"pong\n"
    backend.stop_sandbox(sb)
    # The pod's stragglers end with it; their exits come up as events.
    assert all(wait_exit(backend, sb, c) is not None for c in (server, client))
    for c in (server, client):
        backend.remove_container(sb, c)
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []


def test_agent_survives_backend_restart(
    make_backend: Callable[[], RuncBackend], backend: RuncBackend, image: ImageInfo, workdir: Path
) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir,
        command=("sh", "-c", "trap 'echo bye; exit 4' TERM; while :; do echo tick; sleep .2; done"),
    )  # fmt: skip
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    backend.supervisor.drop_link(sb.id)  # as when the daemon's process ends
    del backend  # the daemon is gone; the pod's agent and the container are not
    again = make_backend()
    assert again.sandbox_alive(sb)
    assert again.supervisor.liveness(sb, c).running
    assert again.supervisor.pid(sb, c.id) > 0
    assert again.supervisor.exec_sync(sb, c, ["echo", "still here"], 10).stdout == b"still here\n"
    stop(again, sb, c, 10)
    ex = again.supervisor.recorded_exit(sb, c.id)
    assert ex is not None and ex.exit_code == 4
    texts = [r[2] for r in _records(Path(c.log_path))]
    assert "tick" in texts and texts[-1] == "bye"
    again.remove_container(sb, c)
    again.remove_sandbox(sb)


def test_reopen_log_usage_and_update(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir, command=("sh", "-c", "while true; do echo line; sleep 0.1; done")
    )
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    log = Path(c.log_path)
    wait_for(lambda: log.exists() and "line" in log.read_text(), 10, "the first lines")
    os.rename(log, c.log_path + ".1")
    backend.supervisor.reopen_log(sb, c)
    wait_for(lambda: log.exists() and "line" in log.read_text(), 10, "lines in the new log")
    usage = backend.supervisor.usage(sb, c)
    assert usage.memory_usage_bytes > 0 and usage.process_count >= 1
    assert usage.cpu_usage_core_nano_seconds > 0
    backend.update_resources(sb, c, Resources(memory_limit_in_bytes=64 << 20, cpu_shares=512))
    cg = backend._cgroups_path(sb, c.id).lstrip("/")
    mem = Path("/sys/fs/cgroup/memory", cg, "memory.limit_in_bytes")
    if mem.exists():
        assert int(mem.read_text()) == 64 << 20
    backend.remove_container(sb, c)
    backend.remove_sandbox(sb)


def test_bad_mounts_leave_nothing(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    sb = sandbox_record()
    backend.run_sandbox(sb)
    for mounts, field in (
        ((Mount(container_path="/proc/x", host_path=str(workdir)),), "mounts[0].container_path"),
        (
            (Mount(container_path="/data", host_path=str(workdir / "missing")),),
            "mounts[0].host_path",
        ),
    ):
        c = container_record(sb, workdir, command=("true",), mounts=mounts)
        with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
            backend.create_container(sb, c, image)
        assert not (backend.layout.state / "containers" / c.id).exists()
    assert _mounts_under(workdir / "state" / "containers") == []
    backend.remove_sandbox(sb)


def test_readonly_bind_mount_and_user(
    backend: RuncBackend, image: ImageInfo, workdir: Path
) -> None:
    from vmcri.model import ContainerSecurity

    data = workdir / "data"
    data.mkdir()
    (data / "f").write_text("content\n")
    link = workdir / "link"
    link.symlink_to(data)
    sb = sandbox_record()
    backend.run_sandbox(sb)
    c = container_record(
        sb, workdir,
        command=("sh", "-c", "cat /data/f; id -u; id -G; touch /data/g || echo readonly"),
        mounts=(Mount(container_path="/data", host_path=str(link), readonly=True),),
        security=ContainerSecurity(run_as_username="app"),
    )  # fmt: skip
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    wait_exit(backend, sb, c)
    texts = [r[2] for r in _records(Path(c.log_path)) if r[0] == "stdout"]
    assert texts == ["content", "1000", "1000 3000", "readonly"]
    backend.remove_container(sb, c)
    backend.remove_sandbox(sb)


def test_shared_pid_namespace(backend: RuncBackend, image: ImageInfo, workdir: Path) -> None:
    from tests.integration.runc.runc_itest_helpers import new_id
    from vmcri.model import (
        ContainerSecurity,
        Metadata,
        NamespaceMode,
        NamespaceOptions,
        PodConfig,
        PodSecurity,
    )

    ns = NamespaceOptions(pid=NamespaceMode.POD)
    pod = PodConfig(metadata=Metadata(name="p", uid=new_id()), hostname="pidpod",
                    security=PodSecurity(namespace_options=ns))  # fmt: skip
    sb = sandbox_record(pod)
    backend.run_sandbox(sb)
    c = container_record(sb, workdir, command=("sleep", "1000"),
                         security=ContainerSecurity(namespace_options=ns))  # fmt: skip
    backend.create_container(sb, c, image)
    backend.supervisor.start(sb, c)
    res = backend.supervisor.exec_sync(sb, c, ["cat", "/proc/1/comm"], 10)
    assert res.stdout == b"vmcri-pause\n"
    backend.stop_sandbox(sb)
    assert not backend.sandbox_alive(sb)
    backend.remove_container(sb, c)
    backend.remove_sandbox(sb)
    assert _processes_mentioning(sb.id) == []
    subprocess.run(["true"], check=True)


def test_privileged_container_sees_host_devices(
    backend: RuncBackend, image: ImageInfo, workdir: Path
) -> None:
    from vmcri.model import ContainerSecurity, PodSecurity

    node = next(p for p in ("/dev/loop-control", "/dev/fuse", "/dev/kmsg") if os.path.exists(p))
    pod = sandbox_record().config
    sb = sandbox_record(dataclasses.replace(pod, security=PodSecurity(privileged=True)))
    backend.run_sandbox(sb)
    check = ("sh", "-c", f"test -c {node} && echo present || echo absent")
    privileged = container_record(
        sb, workdir, name="priv", command=check, security=ContainerSecurity(privileged=True)
    )
    plain = container_record(sb, workdir, name="plain", command=check)
    for c in (privileged, plain):
        backend.create_container(sb, c, image)
        backend.supervisor.start(sb, c)
        wait_exit(backend, sb, c)
    assert [r[2] for r in _records(Path(privileged.log_path))] == ["present"]
    assert [r[2] for r in _records(Path(plain.log_path))] == ["absent"]
    for c in (privileged, plain):
        backend.remove_container(sb, c)
    backend.remove_sandbox(sb)
