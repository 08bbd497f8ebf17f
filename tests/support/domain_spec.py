"""A DomainSpec as the designer makes one for a small TCG pod, changed as a test needs."""

from __future__ import annotations

import dataclasses
from typing import Any

from vmcri.handlers.vm.domain import DomainSpec, Share, domain_uuid, kernel_cmdline


def spec(**changes: Any) -> DomainSpec:
    base = DomainSpec(
        name="vmcri-" + "ab" * 32,
        uuid=domain_uuid("ab" * 32),
        domain_type="qemu",
        machine="q35",
        memory_mib=416,
        vcpus=1,
        kernel="/guest/vmlinuz",
        initrd="/guest/initrd.img",
        cmdline=kernel_cmdline(False, "/run/vmcri/shared"),
        root_image="/guest/rootfs.img",
        agent_socket="/run/vmcri/backends/vm/ab/agent.sock",
        agent_port_name="vmcri.agent",
        agent_vsock_cid=0,
        console_log="/run/vmcri/backends/vm/ab/console.log",
        shares=(Share("vmcri-pod", "/run/vmcri/backends/vm/ab/share", False, "9p"),),
        run_as_root=True,
        tcg_cache_mib=32,
        scsi=True,
    )
    return dataclasses.replace(base, **changes)
