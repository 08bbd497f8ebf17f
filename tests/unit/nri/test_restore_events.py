"""What NRI plugins see of RestorePod, over the fake backend and checkpointer and the real
adaptation: the restored pod's RunPodSandbox and each container's creation and start, as
containerd's restore shows them; an adjustment that cannot reach a restored process (its
environment) fails the restore naming it and leaves nothing, one that can (annotations,
resources) holds; a plugin refusing the start fails the restore and leaves nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkpointer import FakeCheckpointer
from tests.support.nri_plugin import Behaviour, ScriptedPlugin
from tests.support.runtime import Runtime, wire
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.api import nri_pb2
from vmcri.config import NriConfig
from vmcri.errors import PluginError
from vmcri.model import ImageInfo
from vmcri.nri.adaptation import Adaptation
from vmcri.store.records import ContainerState
from vmcri.store.store import Store

IMAGE = ImageInfo(id="sha256:" + "c" * 64, name="example.test/app:1", layer_dirs=(), config={})


class _DeadlineOnly:
    """A servicer context with only a deadline (``seconds`` from now)."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def time_remaining(self) -> float:
        return self._at - time.monotonic()


def _Deadline(seconds: float) -> Any:
    return _DeadlineOnly(seconds)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        config = NriConfig(
            enable=True,
            socket_path=str(tmp / "nri" / "nri.sock"),
            plugin_path=str(tmp / "none"),
            request_timeout_s=2.0,
            registration_timeout_s=2.0,
        )
        adaptations: list[Adaptation] = []

        def nri(store: Store) -> Adaptation:
            adaptations.append(
                Adaptation(config, store, lambda c, r: None, lambda c, d: None, lambda s: False)
            )
            return adaptations[0]

        self.rt: Runtime = wire(
            tmp,
            IMAGE,
            checkpointer=lambda supervisor: FakeCheckpointer(supervisor.running),
            nri=nri,
        )
        self.nri = adaptations[0]
        self.nri.start()
        self.plugins: list[ScriptedPlugin] = []

    def plugin(self, behaviour: Behaviour) -> ScriptedPlugin:
        plugin = ScriptedPlugin("watch", "10", behaviour)
        plugin.connect(str(self.tmp / "nri" / "nri.sock"))
        self.plugins.append(plugin)
        wait_for(lambda: plugin.synchronized, 5, "Synchronize")
        return plugin

    def pod_config(self, uid: str) -> pb.PodSandboxConfig:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"pod-{uid}", uid=uid, namespace="ns"),
            log_directory=str(self.tmp / f"logs-{uid}"),
        )

    def checkpointed(self) -> Path:
        """A pod with one running container ("app"), checkpointed; its directory."""
        ctx: Any = None
        sandbox = self.rt.servicer.RunPodSandbox(
            pb.RunPodSandboxRequest(config=self.pod_config("u1")), ctx
        ).pod_sandbox_id
        created = self.rt.servicer.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox, config=_app(), sandbox_config=self.pod_config("u1")
            ),
            ctx,
        ).container_id
        self.rt.servicer.StartContainer(pb.StartContainerRequest(container_id=created), ctx)
        target = self.tmp / "checkpoint"
        target.mkdir()
        request = pb.CheckpointPodRequest(pod_sandbox_id=sandbox, path=str(target))
        self.rt.servicer.CheckpointPod(request, _Deadline(30))
        return target

    def restore(self, target: Path) -> str:
        request = pb.RestorePodRequest(
            path=str(target), config=self.pod_config("u2"), container_configs=[_app()]
        )
        return str(self.rt.servicer.RestorePod(request, _Deadline(30)).pod_sandbox_id)


def _app() -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image="app:1"),
        log_path="app/0.log",
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.nri.stop()
    for p in e.plugins:
        p.close()


def _restore_events(plugin: ScriptedPlugin) -> list[tuple[str, str]]:
    return [(s.event, s.container) for s in plugin.seen if s.pod == "pod-u2"]


def test_a_restored_pod_and_container_are_told_as_created_and_started(env: Env) -> None:
    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        out.adjust.annotations["nri.test/placed"] = "yes"
        out.adjust.linux.resources.cpu.cpus = "0"
        return out

    target = env.checkpointed()
    plugin = env.plugin(Behaviour(adjust=adjust))
    new = env.restore(target)
    assert _restore_events(plugin) == [
        ("RUN_POD_SANDBOX", ""),
        ("CREATE_CONTAINER", "app"),
        ("VALIDATE_CONTAINER_ADJUSTMENT", "app"),
        ("POST_CREATE_CONTAINER", "app"),
        ("START_CONTAINER", "app"),
        ("POST_START_CONTAINER", "app"),
    ]
    (restored,) = env.rt.services.store.containers_of(new)
    assert restored.state is ContainerState.RUNNING
    assert restored.config.annotations["nri.test/placed"] == "yes"
    assert restored.config.resources.cpuset_cpus == "0"


def test_an_adjustment_a_restored_process_cannot_take_fails_the_restore(env: Env) -> None:
    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        out.adjust.env.add(key="FROM_PLUGIN", value="1")
        return out

    target = env.checkpointed()
    pods_before = [s.id for s in env.rt.services.store.sandboxes.list()]
    plugin = env.plugin(Behaviour(adjust=adjust))
    with pytest.raises(PluginError, match="env of a restored container"):
        env.restore(target)
    assert [s.id for s in env.rt.services.store.sandboxes.list()] == pods_before
    assert len(env.rt.services.store.containers.list()) == 1
    events = _restore_events(plugin)
    assert events[0] == ("RUN_POD_SANDBOX", "") and events[-1] == ("REMOVE_POD_SANDBOX", "")
    assert ("START_CONTAINER", "app") not in events


def test_a_refused_start_fails_the_restore_and_leaves_nothing(env: Env) -> None:
    target = env.checkpointed()
    pods_before = [s.id for s in env.rt.services.store.sandboxes.list()]
    plugin = env.plugin(Behaviour(refuse={"START_CONTAINER"}))
    with pytest.raises(PluginError, match="10-watch"):
        env.restore(target)
    assert [s.id for s in env.rt.services.store.sandboxes.list()] == pods_before
    assert len(env.rt.services.store.containers.list()) == 1
    assert ("START_CONTAINER", "app") in _restore_events(plugin)
    assert ("POST_START_CONTAINER", "app") not in _restore_events(plugin)
