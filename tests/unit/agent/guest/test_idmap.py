"""The agent's ID mapping of a user-namespaced container's files, with a fake kernel:
which spec asks for it, how its mappings are checked, what is mapped and what is
detached again, and the guest sysctls such a pod's users get."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.guest_mounter import FakeMounter
from tests.support.idmapper import FakeIdMapper
from vmcri.agent.guest.containers import CLONES, Container, ContainerManager, GuestPaths
from vmcri.agent.guest.idmap import IdMaps, mapped_owner, spec_id_maps
from vmcri.agent.guest.userns_net import UNPRIVILEGED, open_to_the_pods_users
from vmcri.errors import InvalidArgument
from vmcri.model import IDMapping

KUBELET = [{"containerID": 0, "hostID": 65536, "size": 65536}]


def _r(inside: int, outside: int, length: int) -> IDMapping:
    return IDMapping(host_id=outside, container_id=inside, length=length)


def _spec(namespaces: list[dict[str, str]], uids: object = KUBELET) -> dict[str, object]:
    return {
        "process": {},
        "linux": {"namespaces": namespaces, "uidMappings": uids, "gidMappings": KUBELET},
    }


def test_only_a_user_namespace_the_runtime_makes_is_mapped_by_the_agent() -> None:
    assert spec_id_maps(_spec([{"type": "pid"}])) is None
    # The runc handler's pods join the pod's namespace by path: the host mapped their files.
    assert spec_id_maps(_spec([{"type": "user", "path": "/run/ns/user"}])) is None
    maps = spec_id_maps(_spec([{"type": "user"}]))
    assert maps is not None
    assert maps.uids == (IDMapping(host_id=65536, container_id=0, length=65536),)
    assert maps.root() == (65536, 65536)


@pytest.mark.parametrize(
    ("uids", "named"),
    [
        ([], "uidMappings: a user namespace needs"),
        ([{"containerID": 0, "hostID": 0, "size": 10}], "uidMappings[0].hostID"),
        ([{"containerID": 0, "hostID": "1", "size": 10}], "uidMappings[0]: needs integer"),
        ([{"containerID": 0, "hostID": 5, "size": 0}], "uidMappings[0]: out of range"),
        ([{"containerID": 0, "hostID": 1 << 32, "size": 1}], "uidMappings[0]: out of range"),
        ([KUBELET[0]] * 341, "uidMappings: a user namespace needs 1-340"),
        ("0 65536 65536", "uidMappings: a user namespace needs"),
    ],
)
def test_a_bad_mapping_is_refused_naming_it(uids: object, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named.replace("[", r"\[").replace("]", r"\]")):
        spec_id_maps(_spec([{"type": "user"}], uids))


def test_an_owner_is_mapped_where_the_mapping_covers_it() -> None:
    maps = IdMaps((_r(0, 65536, 1000),), (_r(0, 70000, 10),))
    assert mapped_owner(0, 5, maps) == (65536, 70005)
    assert mapped_owner(2000, 20, maps) == (2000, 20)  # unmapped: as it is


def _manager(tmp_path: Path, mounter: FakeMounter, mapper: FakeIdMapper) -> ContainerManager:
    none = cast(Any, None)
    return ContainerManager(
        runc=none, reaper=none, events=none, mounter=mounter, cgroups=none,
        paths=GuestPaths(state=tmp_path / "state", scratch=tmp_path / "scratch"),
        idmapper=mapper,
    )  # fmt: skip


def _container(manager: ContainerManager, cid: str) -> Container:
    container = Container(cid, manager.paths.bundle(cid), manager.paths.scratch_of(cid), "")
    container.bundle.mkdir(parents=True, mode=0o700)
    container.rootfs.mkdir()
    return container


def test_layers_and_a_disk_empty_dir_are_mapped_a_tmpfs_one_is_given_to_the_pods_root(
    tmp_path: Path,
) -> None:
    mounter = FakeMounter()
    memory = tmp_path / "state" / "empty-dirs"
    mapper = FakeIdMapper(mounter, unmappable=(str(memory),))
    manager = _manager(tmp_path, mounter, mapper)
    container = _container(manager, "c1")
    disk_dir = tmp_path / "scratch" / "volumes" / "cache"
    mem_dir = memory / "mem"
    copy = tmp_path / "state" / "volumes" / "config"
    for path in (disk_dir, mem_dir, copy):
        path.mkdir(parents=True)
    me = (os.getuid(), os.getgid())
    maps = IdMaps((_r(0, me[0], 1),), (_r(0, me[1], 1),))
    spec: dict[str, object] = {
        "mounts": [
            {"destination": "/cache", "type": "bind", "source": str(disk_dir)},
            {"destination": "/mem", "type": "bind", "source": str(mem_dir)},
            {"destination": "/config", "type": "bind", "source": str(copy)},
            {"destination": "/sys", "type": "bind", "source": "/sys"},
        ]
    }
    layers = ["/run/vmcri/layers/1", "/run/vmcri/layers/2"]

    manager._mount_mapped(container, layers, spec, maps)

    clones = container.bundle / CLONES
    layer_clones = [str(clones / "layer0"), str(clones / "layer1")]
    assert mapper.clones[:2] == [(layers[0], layer_clones[0], False),
                                 (layers[1], layer_clones[1], False)]  # fmt: skip
    overlay = [m for m in mounter.mounts if m[2] == "overlay"]
    assert len(overlay) == 1 and overlay[0][4].startswith(f"lowerdir={':'.join(layer_clones)},")
    # The layer clones are detached once the overlay holds its own; the volume's stays
    # until runc has bound it.
    assert set(mounter.unmounted) == set(layer_clones)
    mounts = cast(list[dict[str, str]], spec["mounts"])
    assert mapper.clones[2] == (str(disk_dir), str(clones / "mount0"), True)
    assert mounts[0]["source"] == str(clones / "mount0")
    # tmpfs cannot be ID-mapped on 6.1: the emptyDir stays, its top given to the pod's root.
    assert mounts[1]["source"] == str(mem_dir)
    assert (mem_dir.stat().st_uid, mem_dir.stat().st_gid) == me
    # A copy and a kernel file system are not the agent's to map.
    assert mounts[2]["source"] == str(copy) and mounts[3]["source"] == "/sys"
    assert len(mapper.clones) == 3 and len(mapper.namespaces) == 1
    upper = container.scratch / "upper"
    assert (upper.stat().st_uid, upper.stat().st_gid) == me
    # runc needs to pass the bundle's directories as the container's root.
    assert container.bundle.stat().st_mode & 0o001

    manager._detach_clones(container)
    assert str(clones / "mount0") in mounter.unmounted
    assert not any(m[1].startswith(str(clones)) for m in mounter.mounts)


def test_an_unmapped_root_is_refused(tmp_path: Path) -> None:
    mounter = FakeMounter()
    manager = _manager(tmp_path, mounter, FakeIdMapper(mounter))
    container = _container(manager, "c2")
    maps = IdMaps((_r(1, 65536, 10),), (_r(0, 65536, 10),))
    with pytest.raises(InvalidArgument, match="root is unmapped"):
        manager._mount_mapped(container, ["/l"], {"mounts": []}, maps)
    assert mounter.mounts == []


def test_the_pods_users_may_bind_low_ports_and_ping_unless_the_pod_said_otherwise(
    tmp_path: Path,
) -> None:
    proc_sys = tmp_path / "sys"
    for key in UNPRIVILEGED:
        path = proc_sys / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("default")
    pods = {"net.ipv4.ping_group_range": "1 1", "net.core.somaxconn": "1024"}
    spec: dict[str, object] = {"linux": {"sysctl": dict(pods)}}
    open_to_the_pods_users(spec, proc_sys)
    assert spec == {"linux": {}}  # the guest wrote them at SetupSandbox
    assert (proc_sys / "net/ipv4/ip_unprivileged_port_start").read_text() == "0"
    assert (proc_sys / "net/ipv4/ping_group_range").read_text() == "default"
