"""The OCI spec a VM pod's container gets (``vmcri/handlers/vm/spec.py``): what the host
puts in for the guest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from vmcri.errors import InvalidArgument, NotFound
from vmcri.handlers.vm.spec import container_spec, shares_pid, target_of
from vmcri.ids import new_id
from vmcri.model import (
    ContainerConfig,
    ContainerSecurity,
    ImageInfo,
    Metadata,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
    SecurityProfile,
)
from vmcri.store.records import ContainerRecord, SandboxRecord

IMAGE = ImageInfo(id="sha256:" + "a" * 64, name="example.test/app:1", layer_dirs=(), config={})


def _linux(tmp: Path, seccomp: SecurityProfile, privileged: bool = False) -> dict[str, Any]:
    pod = PodConfig(metadata=Metadata(name="p"), security=PodSecurity(privileged=privileged))
    sandbox = SandboxRecord(id=new_id(), handler="vm", backend="vm", config=pod)
    security = ContainerSecurity(seccomp=seccomp, privileged=privileged)
    config = ContainerConfig(
        metadata=Metadata(name="c"), image="app:1", command=("true",), security=security
    )
    container = ContainerRecord(
        id=new_id(), sandbox_id=sandbox.id, config=config, image_id=IMAGE.id, image_name="x"
    )
    (tmp / "rootfs").mkdir(exist_ok=True)
    spec = container_spec(sandbox, container, IMAGE, str(tmp / "rootfs"), "/run/r", {})
    return cast(dict[str, Any], spec["linux"])


def test_a_localhost_profile_is_read_on_the_host_into_the_guest_spec(tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    spec = _linux(tmp_path, SecurityProfile(kind=2, localhost_ref=str(path)))
    assert spec["seccomp"] == profile
    # Privileged containers run unconfined; their profile file is not even read.
    missing = SecurityProfile(kind=2, localhost_ref=str(tmp_path / "missing.json"))
    assert "seccomp" not in _linux(tmp_path, missing, privileged=True)


def test_runtime_default_and_unconfined_in_the_guest_spec(tmp_path: Path) -> None:
    default = _linux(tmp_path, SecurityProfile(kind=0))["seccomp"]
    assert default["defaultAction"] == "SCMP_ACT_ALLOW" and default["syscalls"]
    assert "seccomp" not in _linux(tmp_path, SecurityProfile(kind=1))


def _pid_namespace(
    tmp: Path, mode: NamespaceMode, runtime: dict[str, str], target_pid: int = 0
) -> list[dict[str, str]]:
    """The pid entries of ``linux.namespaces`` for a container in a pod of pid mode ``mode``."""
    pod_mode = mode if mode is not NamespaceMode.TARGET else NamespaceMode.CONTAINER
    pod = PodConfig(
        metadata=Metadata(name="p"),
        security=PodSecurity(namespace_options=NamespaceOptions(pid=pod_mode)),
    )
    sandbox = SandboxRecord(id=new_id(), handler="vm", backend="vm", config=pod, runtime=runtime)
    target = "b" * 64 if mode is NamespaceMode.TARGET else ""
    security = ContainerSecurity(namespace_options=NamespaceOptions(pid=mode, target_id=target))
    config = ContainerConfig(
        metadata=Metadata(name="c"), image="app:1", command=("true",), security=security
    )
    container = ContainerRecord(
        id=new_id(), sandbox_id=sandbox.id, config=config, image_id=IMAGE.id, image_name="x"
    )
    assert target_of(container) == target
    assert shares_pid(pod) is (mode is NamespaceMode.POD)
    (tmp / "rootfs").mkdir(exist_ok=True)
    spec = container_spec(
        sandbox, container, IMAGE, str(tmp / "rootfs"), "/run/r", {}, target_pid=target_pid
    )
    namespaces = cast(list[dict[str, str]], cast(dict[str, Any], spec["linux"])["namespaces"])
    return [ns for ns in namespaces if ns["type"] == "pid"]


def test_a_vm_pods_containers_never_join_the_guests_own_pid_namespace(tmp_path: Path) -> None:
    pinned = {"pid_ns_path": "/run/vmcri/sandbox/pid"}
    assert _pid_namespace(tmp_path, NamespaceMode.POD, pinned) == [
        {"type": "pid", "path": "/run/vmcri/sandbox/pid"}
    ]
    assert _pid_namespace(tmp_path, NamespaceMode.CONTAINER, {}) == [{"type": "pid"}]
    assert _pid_namespace(tmp_path, NamespaceMode.TARGET, {}, target_pid=42) == [
        {"type": "pid", "path": "/proc/42/ns/pid"}
    ]
    # A shared pod whose agent made no namespace (a pod of an older daemon) has none to join.
    with pytest.raises(InvalidArgument, match=r"namespace_options\.pid"):
        _pid_namespace(tmp_path, NamespaceMode.POD, {})
    with pytest.raises(NotFound, match="target_id"):
        _pid_namespace(tmp_path, NamespaceMode.TARGET, {})
