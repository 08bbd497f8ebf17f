"""CRI contract details both handlers share (issue: CRI conformance), through the servicer.

The services are real, the backend a fake; a VM-like backend is the fake with the
features a VM reports (no host network, PID or IPC namespace to share).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.errors import InvalidArgument
from vmcri.handlers.base import HandlerFeatures
from vmcri.model import ImageInfo, SecurityProfile
from vmcri.oci.hostpaths import MAX_PROFILE_BYTES, load_localhost_profile
from vmcri.oci.seccomp import LOCALHOST, RUNTIME_DEFAULT, UNCONFINED

CTX: Any = None
IMAGE = ImageInfo(id="sha256:" + "b" * 64, name="example.test/app:1", layer_dirs=(), config={})
VM_LIKE = HandlerFeatures(host_network=False, host_pid_ipc=False)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(tmp_path, IMAGE)


def _pod(rt: Runtime, namespaces: pb.NamespaceOption | None = None) -> str:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="ns"),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces)
        ),
    )
    request = pb.RunPodSandboxRequest(config=config)
    return str(rt.servicer.RunPodSandbox(request, CTX).pod_sandbox_id)


def _create(rt: Runtime, sandbox_id: str, **fields: Any) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="app:1"), **fields
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    return str(rt.servicer.CreateContainer(request, CTX).container_id)


def test_stop_of_unknown_container_and_sandbox_succeeds(rt: Runtime) -> None:
    # kubelet repeats these after restarts for things that are gone: the CRI makes them
    # idempotent, like the Remove calls.
    gone = "c" * 64
    rt.servicer.StopContainer(pb.StopContainerRequest(container_id=gone, timeout=1), CTX)
    rt.servicer.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=gone), CTX)
    assert rt.services.store.containers.list() == []


@pytest.mark.parametrize(
    "gone",
    ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "../../x", "a" * 65, "ABC", "d\u00e9j\u00e0/vu"],
)
def test_stop_and_remove_of_an_id_of_any_shape_succeed_and_touch_nothing(
    rt: Runtime, tmp_path: Path, gone: str
) -> None:
    sandbox_id = _pod(rt)
    container_id = _create(rt, sandbox_id)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rt.servicer.StopContainer(pb.StopContainerRequest(container_id=gone, timeout=1), CTX)
    rt.servicer.RemoveContainer(pb.RemoveContainerRequest(container_id=gone), CTX)
    rt.servicer.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=gone), CTX)
    rt.servicer.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=gone), CTX)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert [c.id for c in rt.services.store.containers.list()] == [container_id]
    assert rt.services.store.sandboxes.get(sandbox_id).state.name == "READY"


def test_a_writable_image_volume_is_refused_naming_the_field(rt: Runtime) -> None:
    mount = pb.Mount(container_path="/data", image=pb.ImageSpec(image="app:1"), readonly=False)
    sandbox_id = _pod(rt)
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.readonly: an image volume"):
        _create(rt, sandbox_id, mounts=[mount])
    assert rt.services.store.containers.list() == []


def test_container_status_reports_the_digest_of_an_image_volume(rt: Runtime) -> None:
    mounts = [
        pb.Mount(container_path="/etc/x", host_path="/tmp"),
        pb.Mount(container_path="/data", image=pb.ImageSpec(image="app:1"), readonly=True),
    ]
    container_id = _create(rt, _pod(rt), mounts=mounts)
    status = rt.servicer.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container_id), CTX
    ).status
    assert not status.mounts[0].HasField("image")
    assert status.mounts[1].image.image == "app:1"
    assert status.mounts[1].image.image_ref == IMAGE.id


@pytest.mark.parametrize("which", ["pid", "ipc"])
def test_a_vm_like_handler_refuses_host_pid_and_ipc_pods(rt: Runtime, which: str) -> None:
    rt.backend.handler_features = VM_LIKE
    namespaces = pb.NamespaceOption()
    setattr(namespaces, which, pb.NamespaceMode.NODE)
    with pytest.raises(InvalidArgument) as refused:
        _pod(rt, namespaces)
    assert f"namespace_options.{which}: NODE" in refused.value.message
    assert "runc handler" in refused.value.message
    assert rt.services.store.sandboxes.list() == []


@pytest.mark.parametrize("which", ["pid", "ipc", "network"])
def test_a_vm_like_handler_refuses_host_namespaces_of_a_container(rt: Runtime, which: str) -> None:
    sandbox_id = _pod(rt)
    rt.backend.handler_features = VM_LIKE
    namespaces = pb.NamespaceOption()
    setattr(namespaces, which, pb.NamespaceMode.NODE)
    security = pb.LinuxContainerSecurityContext(namespace_options=namespaces)
    with pytest.raises(InvalidArgument, match=rf"namespace_options\.{which}: NODE"):
        _create(rt, sandbox_id, linux=pb.LinuxContainerConfig(security_context=security))
    assert rt.services.store.containers.list() == []


def test_a_handler_that_can_share_them_gets_host_pid_and_ipc(rt: Runtime) -> None:
    features = dataclasses.replace(VM_LIKE, host_pid_ipc=True)
    rt.backend.handler_features = features
    namespaces = pb.NamespaceOption(pid=pb.NamespaceMode.NODE, ipc=pb.NamespaceMode.NODE)
    assert _pod(rt, namespaces)


# ---- seccomp: which profile a security context asks for, and where Localhost files may be


def _container_seccomp(**security: Any) -> SecurityProfile:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(**security)
        ),
    )
    return convert.container_config(config).security.seccomp


def test_an_empty_seccomp_message_means_runtime_default_and_none_unconfined() -> None:
    # The message's zero value is RuntimeDefault; only a missing one is unconfined.
    assert _container_seccomp(seccomp=pb.SecurityProfile()).kind == RUNTIME_DEFAULT
    assert _container_seccomp().kind == UNCONFINED
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert _container_seccomp(seccomp=unconfined).kind == UNCONFINED
    pod = convert.pod_config(
        pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="p"),
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(seccomp=pb.SecurityProfile())
            ),
        )
    )
    assert pod.security.seccomp.kind == RUNTIME_DEFAULT


@pytest.mark.parametrize(
    ("path", "kind", "ref"),
    [
        ("runtime/default", RUNTIME_DEFAULT, ""),
        ("docker/default", RUNTIME_DEFAULT, ""),
        ("unconfined", UNCONFINED, ""),
        ("localhost//etc/p.json", LOCALHOST, "/etc/p.json"),
    ],
)
def test_the_deprecated_profile_path_counts_only_without_a_message(
    path: str, kind: int, ref: str
) -> None:
    assert _container_seccomp(seccomp_profile_path=path) == SecurityProfile(kind, ref)
    message = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert _container_seccomp(seccomp=message, seccomp_profile_path=path).kind == UNCONFINED


def test_bad_seccomp_requests_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"security_context\.seccomp_profile_path: unknown"):
        _container_seccomp(seccomp_profile_path="/etc/p.json")
    stray_ref = pb.SecurityProfile(localhost_ref="/etc/p.json")  # RuntimeDefault with a file
    with pytest.raises(InvalidArgument, match=r"seccomp\.localhost_ref: may only be set"):
        _container_seccomp(seccomp=stray_ref)


def test_a_localhost_profile_is_any_regular_file_kubelet_names(tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    anywhere = tmp_path / "elsewhere" / "p.json"  # outside kubelet's directory
    anywhere.parent.mkdir()
    anywhere.write_text(json.dumps(profile))
    assert load_localhost_profile(str(anywhere), "/nonexistent") == profile
    assert load_localhost_profile(f"localhost/{anywhere}", "/nonexistent") == profile
    # A relative name (older clients) is below the configured profile root.
    assert load_localhost_profile("p.json", str(anywhere.parent)) == profile


def test_a_localhost_profile_that_is_no_bounded_json_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it blocking would hang the RPC
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_PROFILE_BYTES + 1))
    (tmp_path / "list.json").write_text("[]")
    for path, why in (
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
        (tmp_path / "missing.json", "No such file"),
        (big, "larger than"),
        (tmp_path / "list.json", "not a JSON object"),
    ):
        with pytest.raises(InvalidArgument, match=why) as refused:
            load_localhost_profile(str(path), str(tmp_path))
        assert refused.value.message.startswith(
            "config.linux.security_context.seccomp.localhost_ref: "
        )
