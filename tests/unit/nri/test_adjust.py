"""A merged adjustment applied to a ContainerConfig: once, the same for both handlers, and
what a VM guest cannot hold refused rather than dropped."""

from __future__ import annotations

import pytest

from vmcri.api import nri_pb2
from vmcri.errors import PluginError
from vmcri.model import ContainerConfig, KeyValue, Metadata, Mount, Resources, Rlimit
from vmcri.nri.adjust import apply, resources_from

BASE = ContainerConfig(
    metadata=Metadata(name="app"),
    image="busybox",
    envs=(KeyValue("KEEP", "1"), KeyValue("DROP", "2")),
    mounts=(Mount(container_path="/old", host_path="/srv/old"),),
    annotations={"a": "1", "gone": "x"},
)


def test_env_mounts_annotations_rlimits_and_removals() -> None:
    adjust = nri_pb2.ContainerAdjustment(
        env=[nri_pb2.KeyValue(key="NEW", value="3"), nri_pb2.KeyValue(key="-DROP")],
        mounts=[
            nri_pb2.Mount(destination="/data", source="/srv/data", type="bind", options=["ro"]),
            nri_pb2.Mount(destination="-/old"),
        ],
        annotations={"b": "2", "-gone": ""},
        rlimits=[nri_pb2.POSIXRlimit(type="RLIMIT_NOFILE", soft=321, hard=654)],
    )
    out = apply(BASE, adjust, in_guest=False)
    assert out.envs == (KeyValue("KEEP", "1"), KeyValue("NEW", "3"))
    assert out.mounts == (Mount(container_path="/data", host_path="/srv/data", readonly=True),)
    assert out.annotations == {"a": "1", "b": "2"}
    assert out.rlimits == (Rlimit("RLIMIT_NOFILE", 321, 654),)
    assert apply(BASE, adjust, in_guest=True) == out  # the same for a VM pod


def test_resources_and_oom_score() -> None:
    adjust = nri_pb2.ContainerAdjustment()
    adjust.linux.resources.memory.limit.value = 64 << 20
    adjust.linux.resources.cpu.cpus = "0"
    adjust.linux.resources.pids.limit = 50
    adjust.linux.oom_score_adj.value = 500
    out = apply(BASE, adjust, in_guest=True)
    assert out.resources.memory_limit_in_bytes == 64 << 20
    assert out.resources.cpuset_cpus == "0"
    assert dict(out.resources.unified) == {"pids.max": "50"}
    assert out.resources.oom_score_adj == 500


@pytest.mark.parametrize(
    "what",
    ["hook", "device"],
)
def test_what_a_guest_cannot_hold_is_refused_for_vm_pods(what: str) -> None:
    adjust = nri_pb2.ContainerAdjustment()
    if what == "hook":
        adjust.hooks.prestart.add(path="/usr/bin/true")
    else:
        adjust.linux.devices.add(path="/dev/null", type="c", major=1, minor=3)
    with pytest.raises(PluginError, match="guest" if what == "hook" else "VM pod"):
        apply(BASE, adjust, in_guest=True)
    out = apply(BASE, adjust, in_guest=False)
    assert out.hooks or out.devices


@pytest.mark.parametrize(
    ("field", "match"),
    [("cgroups", "cgroups path"), ("cdi", "CDI"), ("tmpfs", "bind mounts"), ("blkio", "block")],
)
def test_what_vmcri_does_not_apply_is_refused_everywhere(field: str, match: str) -> None:
    adjust = nri_pb2.ContainerAdjustment()
    if field == "cgroups":
        adjust.linux.cgroups_path = "/elsewhere"
    elif field == "cdi":
        adjust.CDI_devices.add(name="vendor.com/gpu=0")
    elif field == "tmpfs":
        adjust.mounts.add(destination="/t", type="tmpfs", source="tmpfs")
    else:
        adjust.linux.resources.blockio_class.value = "slow"
    with pytest.raises(PluginError, match=match):
        apply(BASE, adjust, in_guest=False)


def test_an_unknown_linux_field_is_refused_not_dropped() -> None:
    adjust = nri_pb2.ContainerAdjustment()
    # Field 8 of LinuxContainerAdjustment (sysctl, a map) as a newer plugin would send it.
    adjust.linux.MergeFromString(b"\x42\x06\x0a\x01a\x12\x01b")
    with pytest.raises(PluginError, match="does not know"):
        apply(BASE, adjust, in_guest=False)


def test_resources_from_keeps_what_is_not_set() -> None:
    r = nri_pb2.LinuxResources()
    r.cpu.shares.value = 256
    out = resources_from(r, Resources(memory_limit_in_bytes=1 << 30, cpu_shares=2))
    assert (out.memory_limit_in_bytes, out.cpu_shares) == (1 << 30, 256)
