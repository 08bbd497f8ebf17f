"""Choosing hardware acceleration: KVM only where it really works, TCG otherwise."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccelChoice:
    domain_type: Literal["kvm", "qemu"]  # libvirt's <domain type=...>
    reason: str

    @property
    def degraded(self) -> bool:
        return self.domain_type != "kvm"


def kvm_usable(cpuinfo: Path = Path("/proc/cpuinfo"), dev: Path = Path("/dev/kvm")) -> bool:
    """True when /dev/kvm opens and the CPU advertises vmx or svm.

    /dev/kvm alone is not enough: nested set-ups without the CPU flag expose the
    device, yet ordinary guests hang under it.
    """
    try:
        flags = {
            word
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("flags")
            for word in line.split(":", 1)[1].split()
        }
    except OSError:
        return False
    if not flags & {"vmx", "svm"}:
        return False
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def choose_accel(setting: str, usable: bool) -> AccelChoice:
    """Apply the ``accel`` option ("auto", "kvm", "tcg") to what the host offers."""
    if setting == "kvm":
        return AccelChoice("kvm", "forced by the accel option")
    if setting == "tcg":
        return AccelChoice("qemu", "software emulation forced by the accel option")
    if usable:
        return AccelChoice("kvm", "KVM is usable")
    return AccelChoice(
        "qemu",
        "KVM is not usable here (no vmx/svm CPU flag or no /dev/kvm): VMs run under "
        "software emulation (TCG), which is much slower",
    )
