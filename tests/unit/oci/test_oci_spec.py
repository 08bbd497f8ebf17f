"""The pure OCI spec builder: Kubernetes semantics and error cases."""

from __future__ import annotations

from typing import Any

import pytest

from vmcri.errors import InvalidArgument, NotFound
from vmcri.model import (
    Capabilities,
    ContainerConfig,
    ContainerSecurity,
    IDMapping,
    KeyValue,
    Metadata,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
    Resources,
    SecurityProfile,
)
from vmcri.oci import process
from vmcri.oci.capabilities import DEFAULT_CAPABILITIES
from vmcri.oci.context import ResolvedDevice, ResolvedUser, SpecContext
from vmcri.oci.spec import build_spec

POD = PodConfig(metadata=Metadata(name="p", uid="u", namespace="ns"), hostname="pod1")
IMAGE: dict[str, object] = {
    "Env": ["PATH=/img/bin", "A=image"],
    "Entrypoint": ["/entry"],
    "Cmd": ["default-arg"],
    "WorkingDir": "/work",
    "User": "app",
}
CTX = SpecContext(
    rootfs="/r",
    net_ns_path="/ns/net",
    ipc_ns_path="/ns/ipc",
    uts_ns_path="/ns/uts",
    hostname="pod1",
    hosts_path="/pod/hosts",
    resolv_conf_path="/pod/resolv.conf",
    hostname_path="/pod/hostname",
    shm_path="/pod/shm",
    cgroups_path="/vmcri/s/c",
)


def cfg(**kw: Any) -> ContainerConfig:
    return ContainerConfig(metadata=Metadata(name="c"), image="img", **kw)


def spec(c: ContainerConfig | None = None, pod: PodConfig = POD, ctx: SpecContext = CTX,
         image: dict[str, object] | None = None) -> dict[str, Any]:  # fmt: skip
    return build_spec(pod, c or cfg(), IMAGE if image is None else image, ctx)


def mounts_by_dest(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in s["mounts"]}


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ((), (), ["/entry", "default-arg"]),
        (("/bin/sh",), (), ["/bin/sh"]),
        (("/bin/sh",), ("-c", "x"), ["/bin/sh", "-c", "x"]),
        ((), ("x", "y"), ["/entry", "x", "y"]),
    ],
)
def test_command_and_args_merge_like_kubernetes(
    command: tuple[str, ...], args: tuple[str, ...], expected: list[str]
) -> None:
    assert spec(cfg(command=command, args=args))["process"]["args"] == expected


def test_no_command_at_all_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="command"):
        spec(image={})


def test_env_merge_order_and_override() -> None:
    env = spec(cfg(envs=(KeyValue("A", "cri"), KeyValue("B", "b"))))["process"]["env"]
    assert env == ["PATH=/img/bin", "HOSTNAME=pod1", "A=cri", "B=b"]


def test_bad_env_name_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"envs\[0\]\.key"):
        spec(cfg(envs=(KeyValue("A=B", "x"),)))


def test_working_dir_precedence_and_validation() -> None:
    assert spec()["process"]["cwd"] == "/work"
    assert spec(cfg(working_dir="/x"))["process"]["cwd"] == "/x"
    assert spec(image={"Cmd": ["x"]})["process"]["cwd"] == "/"
    with pytest.raises(InvalidArgument, match="working_dir"):
        spec(cfg(working_dir="rel"))


def test_user_request_sources() -> None:
    assert process.user_request(cfg(), IMAGE) == process.UserRequest(
        "app", None, "image config User"
    )
    sec = ContainerSecurity(run_as_user=5, run_as_group=6)
    assert process.user_request(cfg(security=sec), IMAGE).user == "5"
    assert process.user_request(cfg(security=sec), IMAGE).group == "6"
    sec = ContainerSecurity(run_as_username="bob")
    assert process.user_request(cfg(security=sec), IMAGE).user == "bob"
    assert process.user_request(cfg(), {"User": "1:2"}) == process.UserRequest(
        "1", "2", "image config User"
    )


def test_group_without_user_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="run_as_group"):
        process.user_request(cfg(security=ContainerSecurity(run_as_group=5)), IMAGE)


def test_supplemental_groups_merge_and_strict() -> None:
    ctx = SpecContext(**{**CTX.__dict__, "user": ResolvedUser(1000, 1000, (3000, 4000))})
    merge = spec(cfg(security=ContainerSecurity(supplemental_groups=(5,))), ctx=ctx)
    assert merge["process"]["user"] == {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [1000, 3000, 4000, 5],
    }
    strict = spec(
        cfg(security=ContainerSecurity(supplemental_groups=(5,), supplemental_groups_policy=1)),
        ctx=ctx,
    )
    assert strict["process"]["user"]["additionalGids"] == [1000, 5]
    with pytest.raises(InvalidArgument, match="supplemental_groups_policy"):
        spec(cfg(security=ContainerSecurity(supplemental_groups_policy=7)), ctx=ctx)


def test_default_capabilities_and_add_drop() -> None:
    caps = spec()["process"]["capabilities"]
    assert caps["bounding"] == list(DEFAULT_CAPABILITIES) and caps["inheritable"] == []
    c = cfg(
        security=ContainerSecurity(
            capabilities=Capabilities(add=("NET_ADMIN",), drop=("KILL", "cap_chown"))
        )
    )
    got = spec(c)["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in got and "CAP_KILL" not in got and "CAP_CHOWN" not in got


def test_drop_all_then_add() -> None:
    c = cfg(
        security=ContainerSecurity(
            capabilities=Capabilities(add=("NET_BIND_SERVICE",), drop=("ALL",))
        )
    )
    assert spec(c)["process"]["capabilities"]["permitted"] == ["CAP_NET_BIND_SERVICE"]


def test_add_all_respects_available_capabilities() -> None:
    ctx = SpecContext(**{**CTX.__dict__, "available_capabilities": ("CAP_CHOWN", "CAP_KILL")})
    c = cfg(security=ContainerSecurity(capabilities=Capabilities(add=("ALL",))))
    assert spec(c, ctx=ctx)["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_KILL"]


def test_unknown_capability_names_the_entry() -> None:
    c = cfg(security=ContainerSecurity(capabilities=Capabilities(add=("CHOWN", "NOPE"))))
    with pytest.raises(InvalidArgument, match=r"add_capabilities\[1\]"):
        spec(c)


def test_privileged_needs_a_privileged_pod() -> None:
    with pytest.raises(InvalidArgument, match="privileged"):
        spec(cfg(security=ContainerSecurity(privileged=True)))
    pod = PodConfig(metadata=POD.metadata, security=PodSecurity(privileged=True))
    s = spec(cfg(security=ContainerSecurity(privileged=True)), pod=pod)
    assert "maskedPaths" not in s["linux"] and "seccomp" not in s["linux"]
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "ro" not in mounts_by_dest(s)["/sys"]["options"]


def test_masked_readonly_paths_defaults_and_overrides() -> None:
    s = spec()
    assert "/proc/kcore" in s["linux"]["maskedPaths"] and "/proc/sys" in s["linux"]["readonlyPaths"]
    s = spec(cfg(security=ContainerSecurity(masked_paths=(), readonly_paths=("/proc/x",))))
    assert s["linux"]["maskedPaths"] == [] and s["linux"]["readonlyPaths"] == ["/proc/x"]


def test_no_new_privs_and_readonly_rootfs() -> None:
    s = spec(cfg(security=ContainerSecurity(no_new_privs=True, readonly_rootfs=True)))
    assert s["process"]["noNewPrivileges"] is True and s["root"] == {"path": "/r", "readonly": True}
    assert "ro" in mounts_by_dest(s)["/etc/hosts"]["options"]


def test_seccomp_kinds() -> None:
    default = spec(cfg(security=ContainerSecurity(seccomp=SecurityProfile(kind=0))))["linux"][
        "seccomp"
    ]
    names = {n for rule in default["syscalls"] for n in rule["names"]}
    assert default["defaultAction"] == "SCMP_ACT_ALLOW" and {"keyctl", "mount", "clone3"} <= names
    assert "seccomp" not in spec()["linux"]  # Unconfined is the CRI default (kind 1)
    with pytest.raises(InvalidArgument, match="localhost_ref"):
        spec(cfg(security=ContainerSecurity(seccomp=SecurityProfile(kind=2, localhost_ref="x"))))
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    ctx = SpecContext(**{**CTX.__dict__, "seccomp_localhost": profile})
    got = spec(cfg(security=ContainerSecurity(seccomp=SecurityProfile(2, "p.json"))), ctx=ctx)
    assert got["linux"]["seccomp"] == profile
    with pytest.raises(InvalidArgument, match="profile_type"):
        spec(cfg(security=ContainerSecurity(seccomp=SecurityProfile(kind=9))))


def test_sys_admin_lifts_mount_denial() -> None:
    c = cfg(security=ContainerSecurity(capabilities=Capabilities(add=("SYS_ADMIN",)),
                                       seccomp=SecurityProfile(kind=0)))  # fmt: skip
    names = {n for rule in spec(c)["linux"]["seccomp"]["syscalls"] for n in rule["names"]}
    assert "mount" not in names and "keyctl" in names


def test_pod_namespaces_are_joined() -> None:
    ns = {n["type"]: n.get("path") for n in spec()["linux"]["namespaces"]}
    assert ns == {
        "pid": None,
        "network": "/ns/net",
        "uts": "/ns/uts",
        "ipc": "/ns/ipc",
        "mount": None,
    }


def test_host_network_and_ipc() -> None:
    opts = NamespaceOptions(
        network=NamespaceMode.NODE, ipc=NamespaceMode.NODE, pid=NamespaceMode.NODE
    )
    s = spec(cfg(security=ContainerSecurity(namespace_options=opts)))
    assert [n["type"] for n in s["linux"]["namespaces"]] == ["mount"]
    assert "hostname" not in s


def test_pod_pid_needs_the_pods_namespace() -> None:
    opts = NamespaceOptions(pid=NamespaceMode.POD)
    with pytest.raises(InvalidArgument, match=r"namespace_options\.pid"):
        spec(cfg(security=ContainerSecurity(namespace_options=opts)))
    ctx = SpecContext(**{**CTX.__dict__, "pid_ns_path": "/ns/pid"})
    ns = spec(cfg(security=ContainerSecurity(namespace_options=opts)), ctx=ctx)["linux"][
        "namespaces"
    ]
    assert {"type": "pid", "path": "/ns/pid"} in ns


def test_target_pid_namespace() -> None:
    opts = NamespaceOptions(pid=NamespaceMode.TARGET, target_id="other")
    with pytest.raises(NotFound, match="target_id"):
        spec(cfg(security=ContainerSecurity(namespace_options=opts)))
    ctx = SpecContext(**{**CTX.__dict__, "target_pid_ns_path": "/proc/9/ns/pid"})
    ns = spec(cfg(security=ContainerSecurity(namespace_options=opts)), ctx=ctx)["linux"][
        "namespaces"
    ]
    assert ns[0] == {"type": "pid", "path": "/proc/9/ns/pid"}


def test_container_network_mode_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"namespace_options\.network"):
        spec(
            cfg(
                security=ContainerSecurity(
                    namespace_options=NamespaceOptions(network=NamespaceMode.CONTAINER)
                )
            )
        )


USERNS = NamespaceOptions(
    userns_mode=NamespaceMode.POD,
    uid_mappings=(IDMapping(host_id=100000, container_id=0, length=65536),),
    gid_mappings=(IDMapping(host_id=200000, container_id=0, length=65536),),
)
USERNS_POD = PodConfig(
    metadata=POD.metadata, hostname="pod1", security=PodSecurity(namespace_options=USERNS)
)
USERNS_CTX = SpecContext(**{**CTX.__dict__, "user_ns_path": "/ns/user"})


def test_user_namespace_is_joined_first_with_its_mappings() -> None:
    s = spec(cfg(security=ContainerSecurity(namespace_options=USERNS)), USERNS_POD, USERNS_CTX)
    linux = s["linux"]
    assert linux["namespaces"][0] == {"type": "user", "path": "/ns/user"}
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    # A container that names no user namespace gets its pod's.
    assert spec(cfg(), USERNS_POD, USERNS_CTX)["linux"]["uidMappings"] == linux["uidMappings"]
    assert "uidMappings" not in spec()["linux"]


def test_user_namespace_must_match_the_pod() -> None:
    other = NamespaceOptions(
        userns_mode=NamespaceMode.POD,
        uid_mappings=(IDMapping(300000, 0, 65536),),
        gid_mappings=USERNS.gid_mappings,
    )
    with pytest.raises(InvalidArgument, match="userns_options: must be the same"):
        spec(cfg(security=ContainerSecurity(namespace_options=other)), USERNS_POD, USERNS_CTX)
    with pytest.raises(InvalidArgument, match="userns_options: must be the same"):
        spec(cfg(security=ContainerSecurity(namespace_options=USERNS)), POD, USERNS_CTX)
    with pytest.raises(InvalidArgument, match=r"namespace_options\.userns_options"):
        spec(cfg(), USERNS_POD, CTX)  # the runtime gave no namespace to join


def test_user_namespace_mounts_must_be_private() -> None:
    mount = Mount(
        container_path="/d", host_path="/h", propagation=MountPropagation.HOST_TO_CONTAINER
    )
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]\.propagation"):
        spec(cfg(mounts=(mount,)), USERNS_POD, USERNS_CTX)


def test_privileged_container_gets_every_host_device() -> None:
    privileged_pod = PodConfig(metadata=POD.metadata, security=PodSecurity(privileged=True))
    host = (
        ResolvedDevice("/dev/null", "/dev/null", "c", 1, 3, 0o666),
        ResolvedDevice("/dev/sda", "/dev/sda", "b", 8, 0, 0o660, gid=6),
    )
    ctx = SpecContext(**{**CTX.__dict__, "host_devices": host})
    s = spec(cfg(security=ContainerSecurity(privileged=True)), privileged_pod, ctx)
    assert [d["path"] for d in s["linux"]["devices"]] == ["/dev/null", "/dev/sda"]
    assert s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert spec(ctx=ctx)["linux"]["devices"] == []  # not for an ordinary container


def test_default_mounts_and_pod_files() -> None:
    m = mounts_by_dest(spec())
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
            "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} == set(m)  # fmt: skip
    assert m["/dev/shm"]["source"] == "/pod/shm" and m["/sys"]["options"][-1] == "ro"
    own = spec(
        cfg(
            security=ContainerSecurity(
                namespace_options=NamespaceOptions(ipc=NamespaceMode.CONTAINER)
            )
        )
    )
    assert mounts_by_dest(own)["/dev/shm"]["type"] == "tmpfs"


@pytest.mark.parametrize("target", ["/proc", "/proc/sys/x", "/sys", "/sys/../sys/kernel"])
def test_mounts_into_proc_and_sys_are_refused(target: str) -> None:
    c = cfg(
        mounts=(
            Mount(container_path="/ok", host_path="/a"),
            Mount(container_path=target, host_path="/b"),
        )
    )
    with pytest.raises(InvalidArgument, match=r"mounts\[1\]\.container_path"):
        spec(c)


def test_bind_mount_options_and_propagation() -> None:
    c = cfg(mounts=(
        Mount(container_path="/a", host_path="/ha", readonly=True),
        Mount(container_path="/b", host_path="/hb", propagation=MountPropagation.HOST_TO_CONTAINER),
        Mount(container_path="/c", host_path="/hc", readonly=True, recursive_read_only=True),
        Mount(container_path="/etc/hosts", host_path="/kubelet/hosts"),
    ))  # fmt: skip
    s = spec(c)
    m = mounts_by_dest(s)
    assert m["/a"]["options"] == ["rbind", "rprivate", "ro"]
    assert m["/b"]["options"] == ["rbind", "rslave", "rw"]
    assert m["/c"]["options"] == ["rbind", "rprivate", "rro"]
    assert m["/etc/hosts"]["source"] == "/kubelet/hosts"
    assert s["linux"]["rootfsPropagation"] == "rslave"
    shared = cfg(
        mounts=(
            Mount(container_path="/s", host_path="/h", propagation=MountPropagation.BIDIRECTIONAL),
        )
    )
    assert spec(shared)["linux"]["rootfsPropagation"] == "rshared"


@pytest.mark.parametrize(
    ("mount", "field"),
    [
        (Mount(container_path="rel", host_path="/a"), "container_path"),
        (Mount(container_path="/a", host_path="rel"), "host_path"),
        (
            Mount(container_path="/a", host_path="/a", recursive_read_only=True),
            "recursive_read_only",
        ),
        (
            Mount(
                container_path="/a",
                host_path="/a",
                readonly=True,
                recursive_read_only=True,
                propagation=MountPropagation.HOST_TO_CONTAINER,
            ),
            "recursive_read_only",
        ),
        (Mount(container_path="/a", image="missing"), "image"),
    ],
)
def test_bad_mounts_name_the_field(mount: Mount, field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"mounts\[0\]\.{field}"):
        spec(cfg(mounts=(mount,)))


def test_duplicate_mount_targets() -> None:
    c = cfg(
        mounts=(
            Mount(container_path="/a", host_path="/x"),
            Mount(container_path="/a/", host_path="/y"),
        )
    )
    with pytest.raises(InvalidArgument, match=r"mounts\[1\]"):
        spec(c)


def test_image_volume_with_sub_path() -> None:
    ctx = SpecContext(**{**CTX.__dict__, "image_volume_paths": {"img2": "/images/img2"}})
    c = cfg(mounts=(Mount(container_path="/v", image="img2", image_sub_path="data"),))
    assert mounts_by_dest(spec(c, ctx=ctx))["/v"]["source"] == "/images/img2/data"
    bad = cfg(mounts=(Mount(container_path="/v", image="img2", image_sub_path="../../etc"),))
    with pytest.raises(InvalidArgument, match="image_sub_path"):
        spec(bad, ctx=ctx)


def test_rro_unsupported_is_refused() -> None:
    ctx = SpecContext(**{**CTX.__dict__, "recursive_read_only_supported": False})
    c = cfg(
        mounts=(
            Mount(container_path="/c", host_path="/hc", readonly=True, recursive_read_only=True),
        )
    )
    with pytest.raises(InvalidArgument, match="recursive_read_only"):
        spec(c, ctx=ctx)


def test_devices() -> None:
    dev = ResolvedDevice("/dev/fuse", "/dev/fuse", "c", 10, 229, 0o666, "rw")
    s = spec(ctx=SpecContext(**{**CTX.__dict__, "devices": (dev,)}))
    assert s["linux"]["devices"][0]["path"] == "/dev/fuse"
    assert s["linux"]["resources"]["devices"][-1] == {
        "allow": True,
        "type": "c",
        "major": 10,
        "minor": 229,
        "access": "rw",
    }
    bad = ResolvedDevice("/dev/x", "/dev/x", "c", 1, 1, 0o600, "rwx")
    with pytest.raises(InvalidArgument, match=r"devices\[0\]\.permissions"):
        spec(ctx=SpecContext(**{**CTX.__dict__, "devices": (bad,)}))


def test_resources() -> None:
    r = Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0-1",
                  memory_limit_in_bytes=1 << 30, oom_score_adj=500)  # fmt: skip
    s = spec(cfg(resources=r), ctx=SpecContext(**{**CTX.__dict__, "pids_limit": 100}))
    res = s["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}
    assert res["memory"] == {"limit": 1 << 30} and res["pids"] == {"limit": 100}
    assert s["process"]["oomScoreAdj"] == 500
    assert s["linux"]["cgroupsPath"] == "/vmcri/s/c"


def test_a_cpu_quota_of_minus_one_is_no_quota_as_kubelet_sends_it() -> None:
    r = Resources(cpu_quota=-1, cpu_period=100000)
    assert spec(cfg(resources=r))["linux"]["resources"]["cpu"] == {"quota": -1, "period": 100000}
    with pytest.raises(InvalidArgument, match="cpu_quota: must not be below -1"):
        spec(cfg(resources=Resources(cpu_quota=-2)))


def test_oom_score_adj_is_never_set_unasked_nor_below_the_floor() -> None:
    assert "oomScoreAdj" not in spec()["process"]
    floor = SpecContext(**{**CTX.__dict__, "min_oom_score_adj": 0})
    assert (
        spec(cfg(resources=Resources(oom_score_adj=-997)), ctx=floor)["process"]["oomScoreAdj"] == 0
    )
    assert spec(cfg(resources=Resources(oom_score_adj=-997)))["process"]["oomScoreAdj"] == -997


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        (Resources(cpu_shares=-1), "cpu_shares"),
        (Resources(memory_limit_in_bytes=-5), "memory_limit_in_bytes"),
        (Resources(oom_score_adj=1001), "oom_score_adj"),
        (Resources(cpu_period=10), "cpu_period"),
        (Resources(cpuset_cpus="a-b"), "cpuset_cpus"),
        (
            Resources(memory_limit_in_bytes=100 << 20, memory_swap_limit_in_bytes=1 << 20),
            "memory_swap",
        ),
    ],
)
def test_bad_resources_name_the_field(resources: Resources, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"resources.{field}"):
        spec(cfg(resources=resources))


def test_sysctls() -> None:
    pod = PodConfig(
        metadata=POD.metadata, sysctls={"net.ipv4.ip_forward": "1", "kernel/shmmax": "9"}
    )
    assert spec(pod=pod)["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "9"}
    with pytest.raises(InvalidArgument, match=r"sysctls\[kernel.panic\]"):
        spec(pod=PodConfig(metadata=POD.metadata, sysctls={"kernel.panic": "1"}))
    host = NamespaceOptions(network=NamespaceMode.NODE)
    with pytest.raises(InvalidArgument, match="net"):
        spec(cfg(security=ContainerSecurity(namespace_options=host)), pod=pod)


def test_spec_is_deterministic_and_json_ready() -> None:
    import json

    assert json.dumps(spec(), sort_keys=True) == json.dumps(spec(), sort_keys=True)
    assert spec()["ociVersion"] == "1.0.2"


def test_stop_signal_precedence() -> None:
    assert process.stop_signal(cfg(), {}) == "SIGTERM"
    assert process.stop_signal(cfg(), {"StopSignal": "SIGQUIT"}) == "SIGQUIT"
    assert process.stop_signal(cfg(stop_signal="SIGINT"), {"StopSignal": "SIGQUIT"}) == "SIGINT"
