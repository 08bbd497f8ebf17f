"""KVM: the CPU flag, /dev/kvm, nesting, and which accelerator vmcri picks."""

from __future__ import annotations

from pathlib import Path

from vmcri.doctor.devices import device_state
from vmcri.doctor.model import Check, Status
from vmcri.handlers.vm.accel import choose_accel, kvm_usable

CPUINFO = Path("/proc/cpuinfo")
DEV_KVM = Path("/dev/kvm")
NESTED_PARAMS = (
    Path("/sys/module/kvm_intel/parameters/nested"),
    Path("/sys/module/kvm_amd/parameters/nested"),
)
TCG_COST = "VM pods run under QEMU software emulation (TCG): a pod takes ~12 s to start"


def cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {
        word
        for line in text.splitlines()
        if line.startswith("flags")
        for word in line.split(":", 1)[1].split()
    }


def nested_state(params: tuple[Path, ...]) -> str:
    for param in params:
        try:
            value = param.read_text().strip()
        except OSError:
            continue
        return "allowed" if value in ("1", "Y", "y") else "off"
    return "unknown (no kvm_intel/kvm_amd module loaded)"


def kvm_reason(flags: set[str], device: str) -> str:
    """Why KVM is not usable, in the terms an operator can act on."""
    reasons = []
    if not flags & {"vmx", "svm"}:
        if "hypervisor" in flags:
            reasons.append(
                "the CPU advertises neither vmx nor svm: this machine is itself a VM whose "
                "hypervisor does not pass virtualisation through (no nested virtualisation)"
            )
        else:
            reasons.append("the CPU advertises neither vmx nor svm (disabled in the firmware?)")
    if device != "opens":
        reasons.append(f"/dev/kvm {device}")
    return "; ".join(reasons)


def check_kvm(
    accel: str,
    handler: str,
    cpuinfo: Path = CPUINFO,
    dev: Path = DEV_KVM,
    nested_params: tuple[Path, ...] = NESTED_PARAMS,
) -> Check:
    usable = kvm_usable(cpuinfo, dev)
    choice = choose_accel(accel, usable)
    flags = cpu_flags(cpuinfo)
    device = device_state(dev)
    if usable:
        found = f"usable (CPU {'vmx' if 'vmx' in flags else 'svm'}, /dev/kvm opens, "
        found += f"nested guests {nested_state(nested_params)})"
        if choice.degraded:
            return Check(
                "kvm",
                Status.INFO,
                found,
                f"{TCG_COST}: accel = 'tcg' forces it",
                "set accel = 'auto' in the handler's options",
                handler,
            )
        return Check("kvm", Status.OK, found, "VM pods run with KVM", "", handler)
    found = f"not usable: {kvm_reason(flags, device)}"
    fix = (
        "enable nested virtualisation on the hypervisor running this machine (for example "
        "libvirt's cpu mode='host-passthrough' and kvm_intel nested=1 there), or use bare "
        "metal with VT-x/AMD-V enabled in the firmware; then load kvm_intel or kvm_amd"
    )
    if accel == "kvm":
        return Check(
            "kvm",
            Status.FAIL,
            found,
            "VM pods cannot start: accel = 'kvm' is forced in the handler's options",
            f"set accel = 'auto', or {fix}",
            handler,
        )
    if accel == "tcg":
        return Check("kvm", Status.INFO, found, f"{TCG_COST}: accel = 'tcg' forces it", "", handler)
    return Check("kvm", Status.DEGRADED, found, TCG_COST, fix, handler)
