"""The spec of a container whose runtime makes its user namespace (a VM pod's guest):
no path to join, the pod's mappings, sysfs and mqueue bound instead of mounted, no host
name to set, and no PID namespace its user namespace would not own."""

from __future__ import annotations

from typing import Any

import pytest

from vmcri.errors import Unimplemented
from vmcri.model import (
    ContainerConfig,
    ContainerSecurity,
    IDMapping,
    Metadata,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
)
from vmcri.oci.context import SpecContext
from vmcri.oci.spec import build_spec

IDS = (IDMapping(host_id=65536, container_id=0, length=65536),)
USERNS = NamespaceOptions(userns_mode=NamespaceMode.POD, uid_mappings=IDS, gid_mappings=IDS)
GUEST = SpecContext(
    rootfs="/r",
    net_ns_path="/proc/1/ns/net",
    ipc_ns_path="/proc/1/ns/ipc",
    uts_ns_path="/proc/1/ns/uts",
    hostname="pod1",
    in_vm=True,
    own_userns=True,
)


def _pod(opts: NamespaceOptions = USERNS) -> PodConfig:
    return PodConfig(
        metadata=Metadata(name="p", uid="u", namespace="ns"),
        hostname="pod1",
        security=PodSecurity(namespace_options=opts),
        sysctls={"net.ipv4.tcp_keepalive_time": "600"},
    )


def _spec(opts: NamespaceOptions = USERNS, ctx: SpecContext = GUEST) -> dict[str, Any]:
    container = ContainerConfig(
        metadata=Metadata(name="c"),
        image="img",
        command=("sh",),
        security=ContainerSecurity(namespace_options=opts),
    )
    return build_spec(_pod(opts), container, {}, ctx)


def _by_dest(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in spec["mounts"]}


def test_the_runtime_makes_the_user_namespace_with_the_pods_mappings() -> None:
    spec = _spec()
    namespaces = spec["linux"]["namespaces"]
    assert {"type": "user"} in namespaces
    assert {"type": "network", "path": "/proc/1/ns/net"} in namespaces
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert spec["linux"]["gidMappings"] == spec["linux"]["uidMappings"]


def test_kernel_file_systems_of_the_guests_namespaces_are_bound_and_no_host_name_is_set() -> None:
    spec = _spec()
    mounts = _by_dest(spec)
    assert mounts["/sys"]["type"] == "bind" and mounts["/sys"]["source"] == "/sys"
    assert "rbind" in mounts["/sys"]["options"] and "ro" in mounts["/sys"]["options"]
    assert mounts["/dev/mqueue"]["type"] == "bind"
    assert mounts["/dev/mqueue"]["source"] == "/dev/mqueue"
    assert mounts["/proc"]["type"] == "proc"  # its own PID namespace: its own proc
    assert "hostname" not in spec
    # Without a user namespace, the same guest spec mounts them and sets the name.
    plain = _spec(NamespaceOptions())
    assert _by_dest(plain)["/sys"]["type"] == "sysfs"
    assert _by_dest(plain)["/dev/mqueue"]["type"] == "mqueue"
    assert plain["hostname"] == "pod1"


def test_an_ipc_namespace_of_its_own_keeps_its_own_mqueue() -> None:
    own_ipc = NamespaceOptions(
        userns_mode=NamespaceMode.POD,
        uid_mappings=IDS,
        gid_mappings=IDS,
        ipc=NamespaceMode.CONTAINER,
    )
    assert _by_dest(_spec(own_ipc))["/dev/mqueue"]["type"] == "mqueue"


@pytest.mark.parametrize("mode", [NamespaceMode.POD, NamespaceMode.TARGET])
def test_a_pid_namespace_another_user_namespace_owns_is_refused(mode: NamespaceMode) -> None:
    opts = NamespaceOptions(
        userns_mode=NamespaceMode.POD,
        uid_mappings=IDS,
        gid_mappings=IDS,
        pid=mode,
        target_id="other" if mode is NamespaceMode.TARGET else "",
    )
    with pytest.raises(Unimplemented, match=r"namespace_options\.pid"):
        _spec(opts)


def test_a_pod_user_namespace_to_join_wins() -> None:
    ctx = SpecContext(**{**GUEST.__dict__, "user_ns_path": "/ns/user"})
    spec = _spec(ctx=ctx)
    assert {"type": "user", "path": "/ns/user"} in spec["linux"]["namespaces"]
    assert _by_dest(spec)["/sys"]["type"] == "sysfs"
