"""A KVM checkpoint moves only between hosts with the same CPU."""

from __future__ import annotations

from pathlib import Path

from vmcri.handlers.vm.host_cpu import host_cpu
from vmcri.handlers.vm.saved_vm import TEMPLATE, SavedVm

BLOCK = """processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
stepping\t: 4
microcode\t: {microcode}
cpu MHz\t\t: {mhz}
flags\t\t: {flags}

"""


def _cpuinfo(tmp_path: Path, name: str, flags: str, microcode: str = "0x2006b06") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join(BLOCK.format(n=n, flags=flags, microcode=microcode, mhz=2400 + n) for n in (0, 1))
    )
    return path


def test_the_identity_ignores_microcode_and_frequency_but_not_flags(tmp_path: Path) -> None:
    one = host_cpu(_cpuinfo(tmp_path, "a", "fpu vme avx512f"))
    assert "GenuineIntel | 6 | 85 | 4 | Intel(R) Xeon(R) Gold 6148" in one
    assert host_cpu(_cpuinfo(tmp_path, "b", "avx512f fpu vme", microcode="0x1")) == one
    assert host_cpu(_cpuinfo(tmp_path, "c", "fpu vme")) != one
    assert host_cpu(tmp_path / "missing") == ""


def _saved(domain_type: str, cpu: str) -> SavedVm:
    return SavedVm(TEMPLATE, {"domain_type": domain_type}, {}, "", cpu)


def test_a_kvm_checkpoint_of_another_cpu_is_refused_naming_both() -> None:
    said = _saved("kvm", "Intel A | flags 1").cpu_mismatch("AMD B | flags 2")
    assert said is not None and "Intel A" in said and "AMD B" in said
    assert _saved("kvm", "Intel A | flags 1").cpu_mismatch("Intel A | flags 1") is None
    # Under emulation the guest's CPU is QEMU's, the same on every host.
    assert _saved("qemu", "").cpu_mismatch("AMD B | flags 2") is None
