"""The pod service's network steps with fakes at the CNI and netns seams."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cni import BRIDGE, FakeRunner
from tests.support.runtime import Runtime, wire
from tests.support.spoofguard import FakeSpoofGuard
from vmcri.config import NetworkConfig, parse_config_text
from vmcri.errors import HostCommandError, InvalidArgument
from vmcri.handlers.base import HandlerFeatures
from vmcri.model import ImageInfo, Metadata, NamespaceMode, NamespaceOptions, PodConfig, PodSecurity
from vmcri.network.service import PodNetworking

IMAGE = ImageInfo(id="sha256:" + "a" * 64, name="x", layer_dirs=(), config={})


class FakeNetns:
    def __init__(self) -> None:
        self.pinned: set[Path] = set()

    def create(self, path: Path) -> None:
        self.pinned.add(path)

    def remove(self, path: Path) -> None:
        self.pinned.discard(path)

    def exists(self, path: Path) -> bool:
        return path in self.pinned


def _networked(
    tmp: Path, runner: FakeRunner, guard: FakeSpoofGuard | None = None
) -> tuple[Runtime, FakeNetns]:
    conf = tmp / "net.d"
    conf.mkdir()
    (conf / "10.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "pods", "plugins": [BRIDGE]})
    )
    netns = FakeNetns()
    networking = PodNetworking(
        NetworkConfig(cni_conf_dir=str(conf)),
        tmp / "state",
        lambda: "",
        runner,
        netns,
        guard=guard or FakeSpoofGuard(),
    )
    return wire(tmp, IMAGE, networking=networking), netns


def _pod(network: NamespaceMode = NamespaceMode.POD) -> PodConfig:
    opts = NamespaceOptions(network=network)
    return PodConfig(
        metadata=Metadata(name="p", uid="u", namespace="n"),
        security=PodSecurity(namespace_options=opts),
    )


def test_add_result_is_recorded_and_stop_remove_del_once(tmp_path: Path) -> None:
    runner = FakeRunner()
    rt, netns = _networked(tmp_path, runner)
    sandbox_id = rt.pods.run(_pod(), "runc")
    record = rt.services.store.sandboxes.get(sandbox_id)
    assert record.network is not None and record.network.result
    assert Path(record.network.netns_path) in netns.pinned
    rt.pods.stop(sandbox_id)
    rt.pods.remove(sandbox_id)
    assert [c for c, _, _ in runner.calls] == ["ADD", "DEL"]
    assert netns.pinned == set()


def test_the_pod_is_guarded_after_add_and_unguarded_before_del(tmp_path: Path) -> None:
    runner, guard = FakeRunner(), FakeSpoofGuard()
    rt, _ = _networked(tmp_path, runner, guard)
    sandbox_id = rt.pods.run(_pod(), "runc")
    assert list(guard.guarded) == [sandbox_id]
    assert guard.guarded[sandbox_id].result  # installed from the recorded ADD result
    rt.pods.stop(sandbox_id)
    assert guard.guarded == {}
    rt.pods.remove(sandbox_id)
    assert guard.calls == [("install", sandbox_id), ("remove", sandbox_id)]


def test_a_restart_puts_a_ready_pods_guard_back(tmp_path: Path) -> None:
    guard = FakeSpoofGuard()
    rt, _ = _networked(tmp_path, FakeRunner(), guard)
    sandbox_id = rt.pods.run(_pod(), "runc")
    guard.guarded.clear()  # flushed by a firewall reload, say
    rt.pods.check_network(sandbox_id)
    assert list(guard.guarded) == [sandbox_id]


def test_a_guard_that_fails_undoes_the_pod_and_its_add(tmp_path: Path) -> None:
    runner = FakeRunner()
    guard = FakeSpoofGuard(fail=HostCommandError("nft: Could not process rule"))
    rt, netns = _networked(tmp_path, runner, guard)
    with pytest.raises(HostCommandError, match="nft"):
        rt.pods.run(_pod(), "runc")
    assert rt.services.store.sandboxes.list() == []
    assert netns.pinned == set()
    assert [c for c, _, _ in runner.calls] == ["ADD", "DEL"]
    assert [call for call, _ in guard.calls] == ["install", "remove"]


def test_a_host_network_pod_is_not_guarded(tmp_path: Path) -> None:
    guard = FakeSpoofGuard()
    rt, _ = _networked(tmp_path, FakeRunner(), guard)
    sandbox_id = rt.pods.run(_pod(NamespaceMode.NODE), "runc")
    rt.pods.remove(sandbox_id)
    assert guard.calls == []


def test_failed_add_undoes_everything(tmp_path: Path) -> None:
    runner = FakeRunner(fail={("ADD", "bridge"): HostCommandError("no IP addresses available")})
    rt, netns = _networked(tmp_path, runner)
    with pytest.raises(HostCommandError, match="no IP addresses available"):
        rt.pods.run(_pod(), "runc")
    assert rt.services.store.sandboxes.list() == []
    assert netns.pinned == set()
    assert [c for c, _, _ in runner.calls] == ["ADD", "DEL"]


def test_host_network_is_refused_by_a_backend_without_it(tmp_path: Path) -> None:
    rt = wire(tmp_path, IMAGE)
    no_host: Any = lambda: HandlerFeatures(host_network=False)  # noqa: E731
    rt.backend.features = no_host  # type: ignore[method-assign]
    with pytest.raises(InvalidArgument, match=r"namespace_options\.network.*runc handler"):
        rt.pods.run(_pod(NamespaceMode.NODE), "runc")
    assert rt.services.store.sandboxes.list() == []


def test_host_network_pods_are_routed_when_configured(tmp_path: Path) -> None:
    config = parse_config_text(
        "[runtimes.vm]\nbackend = 'vm'\nhost_network_handler = 'runc'\n"
        "[runtimes.runc]\nbackend = 'runc'\n"
    )
    rt = wire(tmp_path, IMAGE, config=config)
    registry = rt.services.handlers
    runc = registry.resolve("runc")
    vm_backend: Any = type(
        "NoHost", (), {"features": lambda self: HandlerFeatures(host_network=False)}
    )()
    registry._handlers["vm"] = dataclasses.replace(
        runc, name="vm", backend_name="vm", backend=vm_backend
    )
    sandbox_id = rt.pods.run(_pod(NamespaceMode.NODE), "vm")
    assert rt.services.store.sandboxes.get(sandbox_id).handler == "runc"


def test_metadata_that_would_forge_cni_args_is_refused(tmp_path: Path) -> None:
    rt, _ = _networked(tmp_path, FakeRunner())
    forged = dataclasses.replace(
        _pod(), metadata=Metadata(name="p;K8S_POD_NAMESPACE=kube-system", uid="u", namespace="n")
    )
    with pytest.raises(InvalidArgument, match=r"config\.metadata\.name"):
        rt.pods.run(forged, "runc")
