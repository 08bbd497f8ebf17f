"""An exec is the container's own process with another command, on both handlers.

Each exec (ExecSync, a streaming Exec with and without a tty) reads its own identity and
confinement from /proc and is compared, field by field, with the container's main
process (PID 1 of its PID namespace) and with what the container asked for: user, group,
supplemental groups (plain, and under SupplementalGroupsPolicy Merge and Strict, with a
user named by ``run_as_username``), the five capability sets, NoNewPrivs, the seccomp
mode, the OOM score adjustment, the environment (a tty exec adds TERM=xterm on top) and
the working directory. The guest's crun ran an exec without the container's process as
root with its own defaults (issue 21).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conformance.conftest import HANDLERS, Pod, Pods
from tests.integration.streaming.clients import spdy_exec
from tests.support.layers import Layer
from tests.support.push import push_busybox_image
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

UID, GID, GROUP = 1001, 2002, 1234
OOM_SCORE_ADJ = 500
WORKDIR = "/var"
SLEEP = ["sleep", "3600"]
VIEWS = ("sync", "stream", "tty")
STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
SEP = "@@vmcri@@"
# Everything one process is, from /proc/<pid>: status, environment, cwd, OOM score.
PROBE = (
    "cat /proc/{pid}/status; echo " + SEP + "; cat /proc/{pid}/environ; echo " + SEP + ";"
    " readlink /proc/{pid}/cwd; echo " + SEP + "; cat /proc/{pid}/oom_score_adj"
)
# An image whose /etc/group makes its user "app" (1000) a member of group 3000: Merge keeps
# that group, Strict does not.
MEMBERS_IMAGE = "test/exec-members:1"
MEMBER_GROUP = 3000


@dataclass(frozen=True)
class View:
    """One process as it saw itself; ``tty``: an exec with a terminal."""

    status: dict[str, str]
    env: list[str]
    cwd: str
    oom_score_adj: int
    tty: bool = False


def _parse(output: bytes, tty: bool = False) -> View:
    parts = output.replace(b"\r\n", b"\n").split(SEP.encode() + b"\n")
    assert len(parts) == 4, output
    status = {}
    for line in parts[0].decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            status[key] = " ".join(value.split())
    env = [e.decode() for e in parts[1].rstrip(b"\n").split(b"\0") if e]
    return View(status, env, parts[2].decode().strip(), int(parts[3].strip()), tty)


def _run(pod: Pod, name: str, security: pb.LinuxContainerSecurityContext, image: str) -> str:
    """A container of ``image`` running sleep with ``security``, the env and cwd asked for."""
    security.namespace_options.pid = pb.NamespaceMode.CONTAINER  # /proc/1 is its own
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=image),
        command=SLEEP,
        envs=[pb.KeyValue(key="FOO", value=b"container"), pb.KeyValue(key="TERM", value=b"dumb")],
        working_dir=WORKDIR,
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(
            security_context=security,
            resources=pb.LinuxContainerResources(oom_score_adj=OOM_SCORE_ADJ),
        ),
    )
    request = pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config
    )
    container_id = str(pod.runtime.CreateContainer(request, timeout=120).container_id)
    pod.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return container_id


def _sync(pod: Pod, container_id: str, cmd: list[str]) -> bytes:
    result = pod.exec(container_id, cmd)
    assert result.exit_code == 0, result.stderr
    return bytes(result.stdout)


def _view(pod: Pod, container_id: str, how: str) -> View:
    """The exec's own view of itself, run as ``how``: ExecSync or a streaming Exec."""
    cmd = ["sh", "-c", PROBE.format(pid="$$")]
    if how == "sync":
        return _parse(_sync(pod, container_id, cmd))
    tty = how == "tty"
    request = pb.ExecRequest(container_id=container_id, cmd=cmd, tty=tty, stdout=True,
                             stderr=not tty)  # fmt: skip
    url = str(pod.runtime.Exec(request, timeout=60).url)
    result = spdy_exec(url, stdout=True, stderr=not tty, tty=tty)
    assert result.status.get("status") == "Success", (result.status, result.stderr)
    return _parse(result.stdout, tty)


@pytest.fixture(scope="module", params=HANDLERS)
def handler_pod(request: pytest.FixtureRequest, pods: Pods) -> Pod:
    return pods.get(str(request.param))


@pytest.fixture(scope="module")
def ident(handler_pod: Pod) -> Iterator[str]:
    """A container with its own user, group, groups and capabilities, escalation allowed."""
    security = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=UID),
        run_as_group=pb.Int64Value(value=GID),
        supplemental_groups=[GROUP],
        capabilities=pb.Capability(add_capabilities=["SYS_TIME"], drop_capabilities=["NET_RAW"]),
        seccomp=pb.SecurityProfile(),  # RuntimeDefault
        no_new_privs=False,  # crun's own default for an exec is True
    )
    container_id = _run(handler_pod, "exec-ident", security, handler_pod.env.image)
    yield container_id
    handler_pod.remove(container_id)


@pytest.fixture(scope="module")
def main(handler_pod: Pod, ident: str) -> View:
    """The container's main process, seen from an exec (it may read its own user's /proc)."""
    return _parse(_sync(handler_pod, ident, ["sh", "-c", PROBE.format(pid="1")]))


@pytest.fixture(scope="module", params=VIEWS)
def execd(request: pytest.FixtureRequest, handler_pod: Pod, ident: str) -> View:
    return _view(handler_pod, ident, str(request.param))


def test_the_main_process_is_what_the_container_asked_for(main: View) -> None:
    """The reference the exec is compared with (so a wrong one cannot hide a wrong exec)."""
    assert main.status["Uid"].split() == [str(UID)] * 4
    assert main.status["Gid"].split() == [str(GID)] * 4
    assert str(GROUP) in main.status["Groups"].split()
    assert (main.cwd, main.oom_score_adj) == (WORKDIR, OOM_SCORE_ADJ)
    assert {"FOO=container", "TERM=dumb"} <= set(main.env)


def test_exec_uid(execd: View, main: View) -> None:
    assert execd.status["Uid"] == main.status["Uid"] == " ".join([str(UID)] * 4)


def test_exec_gid(execd: View, main: View) -> None:
    assert execd.status["Gid"] == main.status["Gid"] == " ".join([str(GID)] * 4)


def test_exec_supplemental_groups(execd: View, main: View) -> None:
    assert str(GROUP) in execd.status["Groups"].split()
    assert sorted(execd.status["Groups"].split()) == sorted(main.status["Groups"].split())


@pytest.mark.parametrize("capset", ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
def test_exec_capabilities(execd: View, main: View, capset: str) -> None:
    assert execd.status[capset] == main.status[capset]


def test_exec_bounding_set_has_the_added_and_not_the_dropped_capability(execd: View) -> None:
    bounding = int(execd.status["CapBnd"], 16)
    cap_net_raw, cap_sys_time = 13, 25
    assert bounding & (1 << cap_sys_time) and not bounding & (1 << cap_net_raw)


def test_exec_no_new_privs(execd: View, main: View) -> None:
    assert execd.status["NoNewPrivs"] == main.status["NoNewPrivs"] == "0"


def test_exec_no_new_privs_set_by_the_container(handler_pod: Pod) -> None:
    """The other value: a container that forbids escalation forbids it in its execs too."""
    security = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=UID),
                                                no_new_privs=True)  # fmt: skip
    container_id = _run(handler_pod, "exec-nnp", security, handler_pod.env.image)
    try:
        execd = _sync(handler_pod, container_id, ["grep", "^NoNewPrivs:", "/proc/self/status"])
        main = _sync(handler_pod, container_id, ["grep", "^NoNewPrivs:", "/proc/1/status"])
    finally:
        handler_pod.remove(container_id)
    assert execd.split() == main.split() == [b"NoNewPrivs:", b"1"]


def test_exec_seccomp_mode(execd: View, main: View) -> None:
    assert execd.status["Seccomp"] == main.status["Seccomp"] == "2"


def test_exec_oom_score_adj(execd: View, main: View) -> None:
    assert execd.oom_score_adj == main.oom_score_adj == OOM_SCORE_ADJ


def test_exec_cwd(execd: View, main: View) -> None:
    assert execd.cwd == main.cwd == WORKDIR


def test_exec_env_is_the_containers_and_a_tty_adds_term(execd: View, main: View) -> None:
    expected = [("TERM=xterm" if execd.tty and e.startswith("TERM=") else e) for e in main.env]
    assert execd.env == expected


# ---- supplemental groups policy, and a user by name ----------------------------------------


@pytest.fixture(scope="module")
def members_image(handler_pod: Pod) -> str:
    env = handler_pod.env
    group = b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\nmembers:x:3000:app\n"
    push_busybox_image(
        env.registry.host, MEMBERS_IMAGE, extra_layers=[Layer().file("etc/group", group)]
    )
    image = f"{env.registry.host}/{MEMBERS_IMAGE}"
    env.daemon.images().PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
    return image


def _groups_of_user_app(
    pod: Pod, image: str, policy: pb.SupplementalGroupsPolicy, name: str
) -> tuple[bytes, bytes]:
    """(the exec's ``id -u; id -G``, the main process's Groups line) for user "app"."""
    security = pb.LinuxContainerSecurityContext(
        run_as_username="app", supplemental_groups=[GROUP], supplemental_groups_policy=policy
    )
    container_id = _run(pod, name, security, image)
    try:
        execd = _sync(pod, container_id, ["sh", "-c", "id -u; id -G"])
        main = _sync(pod, container_id, ["grep", "^Groups:", "/proc/1/status"])
    finally:
        pod.remove(container_id)
    return execd, main


def test_exec_run_as_username_and_merged_groups(handler_pod: Pod, members_image: str) -> None:
    execd, main = _groups_of_user_app(handler_pod, members_image, pb.Merge, "exec-merge")
    uid, groups = execd.decode().split("\n", 1)
    assert uid == "1000"
    assert set(groups.split()) == {"1000", str(MEMBER_GROUP), str(GROUP)}
    assert set(groups.split()) - {"1000"} <= set(main.decode().split()[1:])


def test_exec_strict_groups_leave_out_the_images(handler_pod: Pod, members_image: str) -> None:
    execd, main = _groups_of_user_app(handler_pod, members_image, pb.Strict, "exec-strict")
    uid, groups = execd.decode().split("\n", 1)
    assert uid == "1000"
    assert set(groups.split()) == {"1000", str(GROUP)}
    assert str(MEMBER_GROUP) not in re.split(r"\s+", main.decode())
