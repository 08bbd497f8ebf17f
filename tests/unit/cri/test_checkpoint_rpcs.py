"""CheckpointPod and RestorePod through the servicer, over the fake backend and a fake
handler part (tests/support/checkpointer.py): the framework's own promises.

A checkpoint is all or nothing (an error or the deadline removes every file, the pod
runs on); a restore makes a new sandbox from kubelet's config with its containers
RUNNING, bound by name, restart counts carried; a failed restore leaves nothing.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkpointer import FAKE_PID, FakeCheckpointer
from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.checkpoint.paths import SUBDIR
from vmcri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    HypervisorError,
    InvalidArgument,
    Unimplemented,
)
from vmcri.handlers.checkpointer import Refusal
from vmcri.model import ImageInfo
from vmcri.store.records import ContainerState, SandboxState

IMAGE = ImageInfo(id="sha256:" + "c" * 64, name="example.test/app:1", layer_dirs=(), config={})


class _DeadlineOnly:
    """A servicer context with only a deadline (``seconds`` from now)."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def time_remaining(self) -> float:
        return self._at - time.monotonic()


def Deadline(seconds: float) -> Any:
    return _DeadlineOnly(seconds)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(
        tmp_path, IMAGE, checkpointer=lambda supervisor: FakeCheckpointer(supervisor.running)
    )


@pytest.fixture
def ckpt(rt: Runtime) -> FakeCheckpointer:
    checkpointer = rt.services.handlers.resolve("runc").checkpointer
    assert isinstance(checkpointer, FakeCheckpointer)
    return checkpointer


def _pod_config(uid: str, log_dir: Path) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="counter", uid=uid, namespace="ns"),
        log_directory=str(log_dir),
    )


def _container_config(name: str, restarts: int = 0) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=restarts),
        image=pb.ImageSpec(image="app:1"),
        log_path=f"{name}/0.log",
        annotations={"io.kubernetes.container.restartCount": str(restarts)},
    )


def _running_pod(rt: Runtime, tmp_path: Path) -> tuple[str, list[str]]:
    ctx: Any = None
    sandbox = rt.servicer.RunPodSandbox(
        pb.RunPodSandboxRequest(config=_pod_config("u1", tmp_path / "logs1")), ctx
    ).pod_sandbox_id
    ids = []
    for name, restarts in (("app", 3), ("sidecar", 0)):
        created = rt.servicer.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox,
                config=_container_config(name, restarts),
                sandbox_config=_pod_config("u1", tmp_path / "logs1"),
            ),
            ctx,
        ).container_id
        rt.servicer.StartContainer(pb.StartContainerRequest(container_id=created), ctx)
        ids.append(created)
    return sandbox, ids


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint-counter"
    target.mkdir()
    return target


def _checkpoint(rt: Runtime, sandbox: str, target: Path, seconds: float = 30) -> None:
    request = pb.CheckpointPodRequest(pod_sandbox_id=sandbox, path=str(target))
    rt.servicer.CheckpointPod(request, Deadline(seconds))


def _restore_request(target: Path, tmp_path: Path, names: list[str]) -> pb.RestorePodRequest:
    return pb.RestorePodRequest(
        path=str(target),
        config=_pod_config("u2", tmp_path / "logs2"),
        container_configs=[_container_config(n) for n in names],
    )


def test_checkpoint_then_restore_gives_a_new_pod_with_running_containers(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, (app, sidecar) = _running_pod(rt, tmp_path)
    old_log = tmp_path / "logs1" / "app" / "0.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("2026-12-07T17:00:00Z stdout F 41\n2026-12-07T17:00:01Z stdout F 42\n")
    target = _target(tmp_path)
    _checkpoint(rt, sandbox, target)
    written = target / SUBDIR
    assert stat.S_IMODE(written.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in written.iterdir()} == {0o600}
    assert rt.services.store.sandboxes.get(sandbox).state is SandboxState.READY

    request = _restore_request(target, tmp_path, ["sidecar", "app"])
    new = rt.servicer.RestorePod(request, Deadline(30)).pod_sandbox_id

    assert new != sandbox
    record = rt.services.store.sandboxes.get(new)
    assert record.state is SandboxState.READY and record.config.metadata.uid == "u2"
    restored = {c.config.metadata.name: c for c in rt.services.store.containers_of(new)}
    assert {n: c.state for n, c in restored.items()} == {
        "app": ContainerState.RUNNING,
        "sidecar": ContainerState.RUNNING,
    }
    assert restored["app"].pid == FAKE_PID
    assert restored["app"].log_path == str(tmp_path / "logs2" / "app" / "0.log")
    # Bound by name: each new container got the state saved for the old one of its name.
    assert ckpt.restored[restored["app"].id] == f"memory of {app}".encode()
    assert ckpt.restored[restored["sidecar"].id] == f"memory of {sidecar}".encode()
    # The log goes on in the new log directory from where it was.
    assert Path(restored["app"].log_path).read_text() == old_log.read_text()
    assert not Path(restored["sidecar"].log_path).exists()  # it had logged nothing
    # kubelet reads the restart count from this annotation of the status.
    count = restored["app"].config.annotations["io.kubernetes.container.restartCount"]
    assert count == "3"


def test_a_failing_save_removes_every_file_and_the_pod_runs_on(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, ids = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    ckpt.fail_in_save = True
    with pytest.raises(HypervisorError):
        _checkpoint(rt, sandbox, target)
    assert list(target.iterdir()) == []
    assert rt.services.store.sandboxes.get(sandbox).state is SandboxState.READY
    assert all(rt.services.store.containers.get(c).state is ContainerState.RUNNING for c in ids)


def test_the_calls_deadline_bounds_the_checkpoint_and_leaves_nothing(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    ckpt.during_save = lambda: time.sleep(0.3)  # the handler outlasts the call's deadline
    with pytest.raises(DeadlineExceeded, match="deadline"):
        _checkpoint(rt, sandbox, target, seconds=0.2)
    assert list(target.iterdir()) == []


def test_a_checkpoint_is_never_written_over_another(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    _checkpoint(rt, sandbox, target)
    before = sorted(p.name for p in (target / SUBDIR).iterdir())
    with pytest.raises(FailedPrecondition, match="already holds a checkpoint"):
        _checkpoint(rt, sandbox, target)
    assert sorted(p.name for p in (target / SUBDIR).iterdir()) == before


def test_a_second_checkpoint_of_a_pod_while_one_runs_is_refused(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    refused: list[str] = []

    def again() -> None:
        with pytest.raises(FailedPrecondition) as info:
            _checkpoint(rt, sandbox, second)
        refused.append(info.value.message)

    ckpt.during_save = again
    _checkpoint(rt, sandbox, _target(tmp_path))
    assert refused and "in progress" in refused[0]
    assert list(second.iterdir()) == []
    _checkpoint(rt, sandbox, second)  # once the first is done, the pod may be again


def test_post_checkpoint_state_stopped_stops_the_pod(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    request = pb.CheckpointPodRequest(
        pod_sandbox_id=sandbox,
        path=str(_target(tmp_path)),
        post_checkpoint_state=pb.POST_CHECKPOINT_STATE_STOPPED,
    )
    rt.servicer.CheckpointPod(request, Deadline(30))
    assert rt.services.store.sandboxes.get(sandbox).state is SandboxState.NOTREADY


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["app"], "no config for the checkpoint's container 'sidecar'"),
        (["app", "sidecar", "extra"], "container_configs[2]: the checkpoint holds no"),
        (["app", "app", "sidecar"], "container_configs[1]: container 'app' is given twice"),
    ],
)
def test_container_configs_must_match_the_checkpoint_by_name(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path, names: list[str], message: str
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    _checkpoint(rt, sandbox, target)
    with pytest.raises(InvalidArgument) as info:
        rt.servicer.RestorePod(_restore_request(target, tmp_path, names), Deadline(30))
    assert message in info.value.message
    assert [s.id for s in rt.services.store.sandboxes.list()] == [sandbox]


def test_a_failed_restore_leaves_no_sandbox_and_no_container(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, ids = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    _checkpoint(rt, sandbox, target)
    ckpt.fail_in_restore = True
    with pytest.raises(HypervisorError):
        rt.servicer.RestorePod(_restore_request(target, tmp_path, ["app", "sidecar"]), Deadline(30))
    assert [s.id for s in rt.services.store.sandboxes.list()] == [sandbox]
    assert sorted(c.id for c in rt.services.store.containers_of(sandbox)) == sorted(ids)
    assert len(rt.services.store.containers.list()) == 2


def test_a_handler_that_cannot_checkpoint_is_refused_before_the_directory_is_touched(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    target = _target(tmp_path)
    ckpt.refused = Refusal("UNIMPLEMENTED", "CRIU does not work on this kernel")
    with pytest.raises(Unimplemented, match="CRIU does not work"):
        _checkpoint(rt, sandbox, target)
    assert list(target.iterdir()) == []
    status = rt.runtime.info.status()
    condition = {c.type: c for c in status.conditions}["PodCheckpointRestore"]
    assert not condition.status and "runc: CRIU does not work" in condition.message


@pytest.mark.parametrize("kind", ["missing", "file", "symlink"])
def test_a_path_that_is_not_an_existing_directory_is_refused_naming_it(
    rt: Runtime, ckpt: FakeCheckpointer, tmp_path: Path, kind: str
) -> None:
    sandbox, _ = _running_pod(rt, tmp_path)
    path = tmp_path / "not-a-dir"
    if kind == "file":
        path.write_text("x")
    elif kind == "symlink":
        os.symlink(_target(tmp_path), path)
    with pytest.raises(InvalidArgument, match=r"^path: "):
        _checkpoint(rt, sandbox, path)
    assert not (tmp_path / "checkpoint-counter" / SUBDIR).exists()
