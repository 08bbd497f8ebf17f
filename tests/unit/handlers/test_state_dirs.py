"""One directory per runtime handler, and no pod lost to the layout before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmcri.config import Config, parse_config_text
from vmcri.daemon import Daemon
from vmcri.errors import ConfigError
from vmcri.handlers.registry import BackendContext, HandlerRegistry
from vmcri.handlers.state_dirs import check_no_kind_dir_pods, handler_dirs
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store

HANDLERS = """
default_runtime_handler = "vm"
[runtimes.vm]
backend = "vm"
[runtimes.vm-kvm]
backend = "vm"
[runtimes.runc]
backend = "runc"
[runtimes.host]
backend = "runc"
"""


def config(tmp: Path) -> Config:
    return parse_config_text(
        f"root = '{tmp}/root'\nstate = '{tmp}/state'\nsocket = '{tmp}/cri.sock'\n" + HANDLERS
    )


def sandbox(handler: str, backend: str) -> SandboxRecord:
    pod = PodConfig(metadata=Metadata(name=f"p-{new_id()[:8]}", uid="u", namespace="n"))
    return SandboxRecord(id=new_id(), handler=handler, backend=backend, config=pod)


def container(sandbox_id: str) -> ContainerRecord:
    return ContainerRecord(
        id=new_id(),
        sandbox_id=sandbox_id,
        config=ContainerConfig(metadata=Metadata(name="c"), image="busybox"),
        image_id="sha256:1",
        image_name="busybox",
    )


def test_the_daemon_gives_two_handlers_of_one_kind_two_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: dict[str, BackendContext] = {}

    def fake_build(self: Any, options: object, context: BackendContext) -> object:
        contexts[str(context.state.name)] = context
        return object()

    monkeypatch.setattr("vmcri.handlers.registry.BackendKind.build", fake_build)
    cfg = config(tmp_path)
    HandlerRegistry.from_config(cfg, Daemon(cfg)._backend_context)

    assert sorted(contexts) == ["host", "runc", "vm", "vm-kvm"]
    states = {c.state for c in contexts.values()}
    roots = {c.root for c in contexts.values()}
    assert len(states) == len(roots) == 4
    # Named like its kind: the directory of the layout before, so its pods are found again.
    assert contexts["vm"].state == tmp_path / "state" / "backends" / "vm"
    assert contexts["vm"].root == tmp_path / "root" / "backends" / "vm"
    assert contexts["vm-kvm"].state == tmp_path / "state" / "backends" / "vm-kvm"
    assert contexts["host"].root == tmp_path / "root" / "backends" / "host"


def test_a_handler_named_otherwise_with_a_vm_pod_in_the_kind_dir_is_refused(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    pod = sandbox("vm-kvm", "vm")
    (cfg.state_dir / "backends" / "vm" / pod.id / "exits").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        check_no_kind_dir_pods(cfg, [pod], lambda sandbox_id: [])
    assert info.value.message.startswith(f"runtimes.vm-kvm: pod sandbox {pod.id} ")
    assert "backends/vm/" in info.value.message


def test_a_runc_container_in_the_kind_dirs_second_level_is_found(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    pod = sandbox("host", "runc")
    held = container(pod.id)
    (cfg.root_dir / "backends" / "runc" / "containers" / held.id).mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"runtimes.host: pod sandbox {pod.id} "):
        check_no_kind_dir_pods(cfg, [pod], lambda sandbox_id: [held])


def test_pods_in_their_own_handlers_dir_start(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    own = sandbox("vm", "vm")
    other = sandbox("vm-kvm", "vm")
    (handler_dirs(cfg, "vm").state / own.id).mkdir(parents=True)
    (handler_dirs(cfg, "vm-kvm").state / other.id).mkdir(parents=True)
    (handler_dirs(cfg, "runc").state / "containers" / new_id()).mkdir(parents=True)
    check_no_kind_dir_pods(cfg, [own, other], lambda sandbox_id: [])
    # The check did look at them: the other handler's pod in the kind's dir is refused.
    (handler_dirs(cfg, "vm").state / other.id).mkdir()
    with pytest.raises(ConfigError, match=f"runtimes.vm-kvm: pod sandbox {other.id} "):
        check_no_kind_dir_pods(cfg, [own, other], lambda sandbox_id: [])


def test_the_daemon_refuses_to_start_over_such_a_pod_and_builds_no_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    monkeypatch.setattr(
        "vmcri.handlers.registry.BackendKind.build", lambda *args: built.append(args)
    )
    cfg = config(tmp_path)
    pod = Store(cfg.root_dir).sandboxes.add(sandbox("vm-kvm", "vm"))
    (cfg.root_dir / "backends" / "vm" / pod.id).mkdir(parents=True)
    daemon = Daemon(cfg)
    with pytest.raises(ConfigError, match=f"runtimes.vm-kvm: pod sandbox {pod.id} "):
        daemon.start()
    assert built == []
    assert not Path(cfg.socket).exists()
