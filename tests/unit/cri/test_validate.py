"""The edge's checks of single requests: what a hostile or broken client may not send.

Each test builds the request a client could send (the wire allows it) and asserts the
refusal names the field. The examples from issue 15 (found by fuzzing a real daemon)
are kept here, as are those the fuzz tier in tests/fuzz finds.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from google.protobuf.descriptor import FieldDescriptor

from vmcri.api import api_pb2 as pb
from vmcri.cri import limits
from vmcri.cri.limits import MAX_EXEC_TIMEOUT_S
from vmcri.cri.validate import check_request
from vmcri.errors import InvalidArgument, NotFound, VmcriError
from vmcri.ids import new_id

MIB = 1024 * 1024


def refusal(request: Any) -> VmcriError:
    with pytest.raises(VmcriError) as info:
        check_request(request)
    return info.value


def pod_request(**config: Any) -> pb.RunPodSandboxRequest:
    config.setdefault("metadata", pb.PodSandboxMetadata(name="p", uid="u", namespace="ns"))
    return pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(**config), runtime_handler="runc")


def pod_resources(**fields: Any) -> pb.RunPodSandboxRequest:
    return pod_request(
        linux=pb.LinuxPodSandboxConfig(resources=pb.LinuxContainerResources(**fields))
    )


def container_request(**config: Any) -> pb.CreateContainerRequest:
    config.setdefault("metadata", pb.ContainerMetadata(name="c"))
    config.setdefault("image", pb.ImageSpec(image="busybox"))
    return pb.CreateContainerRequest(pod_sandbox_id=new_id(), config=pb.ContainerConfig(**config))


def kubelet_pod() -> pb.RunPodSandboxRequest:
    """A RunPodSandbox as kubelet 1.31 sends it for a burstable pod."""
    uid = "1f8e44b0-5d1a-4a4c-9f0e-0c1b2a3d4e5f"
    return pb.RunPodSandboxRequest(
        config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="web-7d4b9", uid=uid, namespace="default"),
            hostname="web-7d4b9",
            log_directory=f"/var/log/pods/default_web-7d4b9_{uid}",
            dns_config=pb.DNSConfig(
                servers=["10.96.0.10"],
                searches=["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                options=["ndots:5"],
            ),
            port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=0)],
            labels={
                "io.kubernetes.pod.name": "web-7d4b9",
                "io.kubernetes.pod.namespace": "default",
                "io.kubernetes.pod.uid": uid,
                "app": "web",
            },
            annotations={
                "kubernetes.io/config.seen": "2026-12-01T09:00:00.000000000Z",
                "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 20000 + "}",
            },
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent="/kubepods/burstable/pod" + uid,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER),
                    run_as_user=pb.Int64Value(value=1000),
                    supplemental_groups=[2000, 3000],
                    seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
                ),
                sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
                overhead=pb.LinuxContainerResources(),
                resources=pb.LinuxContainerResources(
                    cpu_period=100000,
                    cpu_quota=50000,
                    cpu_shares=512,
                    memory_limit_in_bytes=256 * MIB,
                ),
            ),
        ),
        runtime_handler="runc",
    )


def kubelet_container() -> pb.CreateContainerRequest:
    """A CreateContainer as kubelet sends it: volumes, env, limits, hardening."""
    resources = pb.LinuxContainerResources(
        cpu_period=100000,
        cpu_quota=-1,
        cpu_shares=2,
        memory_limit_in_bytes=128 * MIB,
        oom_score_adj=1000,
        memory_swap_limit_in_bytes=128 * MIB,
        hugepage_limits=[
            pb.HugepageLimit(page_size="2MB", limit=0),
            pb.HugepageLimit(page_size="1GB", limit=0),
        ],
        unified={"memory.oom.group": "1", "memory.high": "max"},
    )
    return pb.CreateContainerRequest(
        pod_sandbox_id=new_id(),
        config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="web", attempt=2),
            image=pb.ImageSpec(image="sha256:" + "c" * 64, user_specified_image="nginx:1"),
            command=["/docker-entrypoint.sh"],
            args=["nginx", "-g", "daemon off;"],
            working_dir="/usr/share/nginx",
            envs=[pb.KeyValue(key="KUBERNETES_SERVICE_HOST", value=b"10.96.0.1")],
            mounts=[
                pb.Mount(
                    container_path="/var/run/secrets/kubernetes.io/serviceaccount",
                    host_path="/var/lib/kubelet/pods/x/volumes/kubernetes.io~projected/token",
                    readonly=True,
                ),
                pb.Mount(container_path="/dev/termination-log", host_path="/var/lib/kubelet/t"),
            ],
            devices=[
                pb.Device(container_path="/dev/fuse", host_path="/dev/fuse", permissions="rw")
            ],
            labels={"io.kubernetes.container.name": "web"},
            annotations={"io.kubernetes.container.hash": "a1b2c3"},
            log_path="web/2.log",
            linux=pb.LinuxContainerConfig(
                resources=resources,
                security_context=pb.LinuxContainerSecurityContext(
                    capabilities=pb.Capability(
                        drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]
                    ),
                    run_as_user=pb.Int64Value(value=101),
                    masked_paths=["/proc/kcore", "/proc/keys"],
                    readonly_paths=["/proc/sys"],
                    no_new_privs=True,
                ),
            ),
            stop_signal=pb.SIGNAL_SIGTERM,
        ),
    )


# ---------------------------------------------------------------- no false refusals


def test_what_kubelet_sends_passes() -> None:
    check_request(kubelet_pod())
    check_request(kubelet_container())
    check_request(
        pb.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=new_id(), resources=kubelet_container().config.linux.resources
        )
    )
    check_request(pb.ExecSyncRequest(container_id=new_id()[:12], cmd=["true"], timeout=10))
    # The check walked these requests: one bad field in the same ones is refused.
    pod = kubelet_pod()
    pod.config.hostname = "web-0\nnameserver 6.6.6.6"
    assert refusal(pod).message.startswith("config.hostname:")
    container = kubelet_container()
    container.config.linux.resources.cpu_shares = 1
    assert refusal(container).message.startswith("config.linux.resources.cpu_shares:")


def test_every_rule_names_a_field_of_the_proto() -> None:
    # A misspelt key would silently leave a field with only the generic limits.
    fields = {}
    for message in _all_messages(pb.DESCRIPTOR.message_types_by_name.values()):
        for field in message.fields:
            fields[field.full_name.removeprefix("runtime.v1.")] = field
    missing = [name for name in limits.RULES if name not in fields]
    assert missing == []


def _all_messages(messages: Any) -> list[Any]:
    found = []
    for message in messages:
        found.append(message)
        found.extend(_all_messages(message.nested_types))
    return found


def test_rules_only_bound_what_their_field_has() -> None:
    string_only = ("max_bytes",)
    for name, rule in limits.RULES.items():
        field = _field(name)
        if rule.max_items is not None:
            assert field.is_repeated, name
        if any(getattr(rule, key) is not None for key in string_only):
            assert field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES), name


def _field(name: str) -> FieldDescriptor:
    message_name, _, field_name = name.rpartition(".")
    message = pb.DESCRIPTOR.message_types_by_name[message_name.split(".")[0]]
    for nested in message_name.split(".")[1:]:
        message = message.nested_types_by_name[nested]
    return message.fields_by_name[field_name]


# ---------------------------------------------------------------- issue 15, as fuzzing found it
# cast(): proto3 keeps enum numbers it does not declare; the stubs admit only declared ones.


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListContainersRequest(
            filter=pb.ContainerFilter(
                state=pb.ContainerStateValue(state=cast(pb.ContainerState, 999))
            )
        ),
        pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(
                state=pb.PodSandboxStateValue(state=cast(pb.PodSandboxState, 999))
            )
        ),
        pb.StreamContainersRequest(
            filter=pb.ContainerFilter(
                state=pb.ContainerStateValue(state=cast(pb.ContainerState, 999))
            )
        ),
    ],
)
def test_unknown_enum_value_in_a_filter_is_refused(request_: Any) -> None:
    error = refusal(request_)
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith("filter.state.state: unknown value 999")


@pytest.mark.parametrize("memory", [-8796093022048, -1, limits.MAX_MEMORY_BYTES + 1, 2**63 - 1])
def test_negative_or_absurd_pod_memory_is_refused(memory: int) -> None:
    error = refusal(pod_resources(memory_limit_in_bytes=memory))
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith("config.linux.resources.memory_limit_in_bytes:")
    assert str(memory) in error.message


@pytest.mark.parametrize("memory", [1, 4096, limits.MIN_MEMORY_BYTES - 1])
def test_a_memory_limit_no_container_can_live_in_is_refused(memory: int) -> None:
    # Found by the fuzz tier: runc update to 1 byte failed below the live usage -> INTERNAL.
    request = pb.UpdateContainerResourcesRequest(
        container_id=new_id(), linux=pb.LinuxContainerResources(memory_limit_in_bytes=memory)
    )
    error = refusal(request)
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith(f"linux.memory_limit_in_bytes: {memory} is out of range")


def test_overhead_is_checked_like_resources() -> None:
    request = pod_request(
        linux=pb.LinuxPodSandboxConfig(overhead=pb.LinuxContainerResources(cpu_shares=-5))
    )
    assert refusal(request).message.startswith("config.linux.overhead.cpu_shares:")


# ---------------------------------------------------------------- resources


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpu_period", 999),
        ("cpu_period", 1_000_001),
        ("cpu_period", -100000),
        ("cpu_quota", 999),
        ("cpu_quota", -2),
        ("cpu_quota", 1 << 44),
        ("cpu_shares", 1),
        ("cpu_shares", 262_145),
        ("oom_score_adj", 1001),
        ("oom_score_adj", -1001),
        ("memory_swap_limit_in_bytes", -2),
    ],
)
def test_cpu_and_memory_values_outside_the_kernels_range_are_refused(
    field: str, value: int
) -> None:
    resources = pb.LinuxContainerResources()
    setattr(resources, field, value)
    error = refusal(container_request(linux=pb.LinuxContainerConfig(resources=resources)))
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith(f"config.linux.resources.{field}: {value} is out of range")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"cpuset_cpus": "0-3;rm -rf"}, "cpuset_cpus"),
        ({"cpuset_cpus": "0-9000"}, "cpuset_cpus"),
        ({"cpuset_mems": "5000"}, "cpuset_mems"),
        ({"unified": {"../../../sys/fs/cgroup/cgroup.procs": "1"}}, "unified key"),
        ({"unified": {"memory.max": "x" * 5000}}, "unified['memory.max']"),
        ({"hugepage_limits": [pb.HugepageLimit(page_size="2MB/../x", limit=1)]}, "page_size"),
        ({"hugepage_limits": [pb.HugepageLimit(page_size="2MB", limit=2**64 - 1)]}, "limit"),
    ],
)
def test_resource_strings_must_be_what_the_cgroup_takes(fields: dict[str, Any], named: str) -> None:
    error = refusal(pod_resources(**fields))
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith("config.linux.resources.")
    assert named in error.message.split(":")[0]


# ---------------------------------------------------------------- strings, lists, maps


def test_nul_in_any_string_is_refused() -> None:
    error = refusal(container_request(args=["ok", "a\x00b"]))
    assert error.message == "config.args[1]: must not contain a NUL character"


def test_oversized_strings_are_refused_with_their_size() -> None:
    error = refusal(pod_request(labels={"app": "x" * (limits.MAX_STRING_BYTES + 1)}))
    assert error.message.startswith("config.labels['app']: 4097 bytes, at most 4096")
    error = refusal(pb.PullImageRequest(image=pb.ImageSpec(image="r/" + "a" * 5000)))
    assert error.message.startswith("image.image: 5002 bytes")


def test_long_argv_words_and_annotations_are_taken_up_to_their_own_limits() -> None:
    check_request(container_request(args=["x" * limits.MAX_ARG_BYTES]))
    check_request(pod_request(annotations={"a": "x" * limits.MAX_ANNOTATION_BYTES}))
    error = refusal(container_request(args=["x" * (limits.MAX_ARG_BYTES + 1)]))
    assert error.message.startswith("config.args[0]:")


def test_too_many_items_or_entries_are_refused() -> None:
    labels = {f"k{i}": "v" for i in range(limits.MAX_ITEMS + 1)}
    assert refusal(pod_request(labels=labels)).message.startswith(
        f"config.labels: {limits.MAX_ITEMS + 1} entries"
    )
    servers = [f"10.0.0.{i % 250}" for i in range(33)]
    assert refusal(pod_request(dns_config=pb.DNSConfig(servers=servers))).message.startswith(
        "config.dns_config.servers: 33 entries, at most 32"
    )
    ports = list(range(1, 66))
    request = pb.PortForwardRequest(pod_sandbox_id=new_id(), port=ports)
    assert refusal(request).message.startswith("port: 65 entries")


# ---------------------------------------------------------------- pod files


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"hostname": "evil\n127.0.0.1 kubernetes.default"}, "config.hostname"),
        ({"hostname": "a" * 65}, "config.hostname"),
        ({"dns_config": pb.DNSConfig(servers=["1.1.1.1\nnameserver 6.6.6.6"])}, "servers[0]"),
        ({"dns_config": pb.DNSConfig(searches=["a b"])}, "searches[0]"),
        ({"dns_config": pb.DNSConfig(options=["ndots:5\nsearch evil"])}, "options[0]"),
        ({"port_mappings": [pb.PortMapping(container_port=70000)]}, "container_port"),
        ({"port_mappings": [pb.PortMapping(container_port=80, host_port=-1)]}, "host_port"),
        ({"port_mappings": [pb.PortMapping(container_port=80, host_ip="::g")]}, "host_ip"),
        (
            {"port_mappings": [pb.PortMapping(protocol=cast(pb.Protocol, 7), container_port=80)]},
            "protocol",
        ),
        ({"log_directory": "var/log/pods/x"}, "config.log_directory"),
        ({"linux": pb.LinuxPodSandboxConfig(cgroup_parent="/kubepods/../../x")}, "cgroup_parent"),
        ({"metadata": pb.PodSandboxMetadata(name="a b")}, "config.metadata.name"),
        ({"metadata": pb.PodSandboxMetadata(name="p", namespace="n" * 254)}, "namespace"),
    ],
)
def test_pod_config_values_that_would_break_its_files_are_refused(
    config: dict[str, Any], named: str
) -> None:
    error = refusal(pod_request(**config))
    assert isinstance(error, InvalidArgument)
    assert named in error.message.split(":")[0]


@pytest.mark.parametrize("value", [-1, 2**32 - 1, 2**40])
def test_uids_and_gids_outside_the_kernels_range_are_refused(value: int) -> None:
    sec = pb.LinuxSandboxSecurityContext(run_as_user=pb.Int64Value(value=value))
    error = refusal(pod_request(linux=pb.LinuxPodSandboxConfig(security_context=sec)))
    assert error.message.startswith("config.linux.security_context.run_as_user.value:")
    sec = pb.LinuxSandboxSecurityContext(supplemental_groups=[5, value])
    error = refusal(pod_request(linux=pb.LinuxPodSandboxConfig(security_context=sec)))
    assert error.message.startswith("config.linux.security_context.supplemental_groups[1]:")


def test_unknown_namespace_mode_is_refused() -> None:
    sec = pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=cast(pb.NamespaceMode, 42))
    )
    error = refusal(pod_request(linux=pb.LinuxPodSandboxConfig(security_context=sec)))
    assert error.message.startswith(
        "config.linux.security_context.namespace_options.network: unknown value 42"
    )


# ---------------------------------------------------------------- containers


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"working_dir": "tmp"}, "config.working_dir"),
        ({"log_path": "/etc/shadow"}, "config.log_path"),
        ({"log_path": "../../etc/cron.d/x"}, "config.log_path"),
        ({"mounts": [pb.Mount(container_path="data", host_path="/d")]}, "container_path"),
        ({"mounts": [pb.Mount(container_path="/d", host_path="etc")]}, "host_path"),
        (
            {
                "mounts": [
                    pb.Mount(
                        container_path="/d",
                        host_path="/d",
                        propagation=cast(pb.MountPropagation, 9),
                    )
                ]
            },
            "propagation",
        ),
        ({"devices": [pb.Device(container_path="/dev/x", host_path="sda")]}, "host_path"),
        (
            {
                "devices": [
                    pb.Device(container_path="/dev/x", host_path="/dev/x", permissions="rwx")
                ]
            },
            "permissions",
        ),
        ({"envs": [pb.KeyValue(key="A=B", value=b"c")]}, "config.envs[0].key"),
        ({"stop_signal": 4000}, "config.stop_signal"),
    ],
)
def test_container_config_values_runc_cannot_take_are_refused(
    config: dict[str, Any], named: str
) -> None:
    error = refusal(container_request(**config))
    assert isinstance(error, InvalidArgument)
    assert named in error.message.split(":")[0]


def test_capability_names_and_masked_paths_are_checked() -> None:
    caps = pb.Capability(add_capabilities=["SYS_ADMIN\nALL"])
    sec = pb.LinuxContainerSecurityContext(capabilities=caps)
    error = refusal(container_request(linux=pb.LinuxContainerConfig(security_context=sec)))
    assert "capabilities.add_capabilities[0]" in error.message
    sec = pb.LinuxContainerSecurityContext(masked_paths=["proc/kcore"])
    error = refusal(container_request(linux=pb.LinuxContainerConfig(security_context=sec)))
    assert "masked_paths[0]" in error.message


# ---------------------------------------------------------------- IDs and times


MALFORMED_IDS = [
    "../../etc/passwd",
    "ABCDEF",
    "x" * 65,
    "a" * 65,
    "nope",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a UUID
    "a/b",
    "..",
    "\u00e9t\u00e9-\U0001f600",
    "z" * limits.MAX_STRING_BYTES,
]


@pytest.mark.parametrize("value", MALFORMED_IDS)
def test_what_cannot_be_an_id_names_nothing(value: str) -> None:
    error = refusal(pb.ContainerStatusRequest(container_id=value))
    assert isinstance(error, NotFound)
    assert error.message.startswith("container_id:")


TEARDOWNS = [
    lambda v: pb.StopPodSandboxRequest(pod_sandbox_id=v),
    lambda v: pb.RemovePodSandboxRequest(pod_sandbox_id=v),
    lambda v: pb.StopContainerRequest(container_id=v, timeout=1),
    lambda v: pb.RemoveContainerRequest(container_id=v),
]


@pytest.mark.parametrize("value", MALFORMED_IDS)
@pytest.mark.parametrize("teardown", TEARDOWNS)
def test_the_idempotent_teardowns_take_an_id_of_any_shape(value: str, teardown: Any) -> None:
    # CRI: Stop and Remove succeed for what names nothing; the runtime decides, the edge
    # lets them through (vmcri.ids.could_name keeps the store and paths out of it).
    check_request(teardown(value))


@pytest.mark.parametrize("teardown", TEARDOWNS)
def test_the_idempotent_teardowns_still_refuse_an_empty_id_or_a_nul(teardown: Any) -> None:
    error = refusal(teardown(""))
    assert isinstance(error, InvalidArgument)
    assert error.message.endswith("_id: must not be empty")
    assert isinstance(refusal(teardown("ab\x00cd")), InvalidArgument)
    assert isinstance(refusal(teardown("a" * (limits.MAX_STRING_BYTES + 1))), InvalidArgument)


def test_an_id_or_its_prefix_passes() -> None:
    check_request(pb.PodSandboxStatusRequest(pod_sandbox_id=new_id()))
    check_request(pb.PodSandboxStatusRequest(pod_sandbox_id="deadbeef"))
    # One letter past the hex digits is not an ID.
    assert isinstance(refusal(pb.PodSandboxStatusRequest(pod_sandbox_id="deadbeeg")), NotFound)


def test_filter_ids_must_be_prefixes_of_ids() -> None:
    error = refusal(pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id="a/b")))
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith("filter.pod_sandbox_id:")


@pytest.mark.parametrize(
    "request_",
    [
        pb.StopContainerRequest(container_id="ab", timeout=-1),
        pb.StopContainerRequest(container_id="ab", timeout=2**62),
        pb.ExecSyncRequest(container_id="ab", cmd=["true"], timeout=MAX_EXEC_TIMEOUT_S + 1),
        pb.ExecSyncRequest(container_id="ab", cmd=["true"], timeout=-5),
    ],
)
def test_timeouts_outside_their_range_are_refused(request_: Any) -> None:
    assert refusal(request_).message.startswith("timeout:")


def test_pod_cidr_must_be_networks() -> None:
    ok = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr="10.88.0.0/16,fd00:10::/64")
        )
    )
    check_request(ok)
    ok.runtime_config.network_config.pod_cidr = "10.88.0.0/16\n; rm -rf /"
    assert refusal(ok).message.startswith("runtime_config.network_config.pod_cidr:")
