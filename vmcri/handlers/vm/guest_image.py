"""The guest image a pod VM boots: kernel, initrd and read-only root, with its version.

``scripts/build-guest-image.sh`` writes them with a ``VERSION`` (a hash of every
build input, the agent's code included); the version is recorded with each
sandbox and compared with what the agent reports when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmcri.errors import FailedPrecondition


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    root_image: Path
    version: str


def load_guest_image(directory: Path, uncompressed_kernel: bool = False) -> GuestImage:
    """Check the files exist; raises FailedPrecondition telling how to build them.

    ``uncompressed_kernel`` picks ``vmlinux`` when the build made one. Without KVM
    that saves seconds per boot (Debian's ``vmlinuz`` is XZ-compressed and the
    guest decompresses it under emulation); with KVM decompression takes
    milliseconds, while QEMU would keep the 60+ MiB ELF file mapped per VM.
    """
    vmlinux = directory / "vmlinux"
    image = GuestImage(
        kernel=vmlinux if uncompressed_kernel and vmlinux.is_file() else directory / "vmlinuz",
        initrd=directory / "initrd.img",
        root_image=directory / "rootfs.img",
        version="",
    )
    missing = [p.name for p in (image.kernel, image.initrd, image.root_image) if not p.is_file()]
    version_file = directory / "VERSION"
    if missing or not version_file.is_file():
        raise FailedPrecondition(
            f"guest image in {directory} is incomplete (missing: "
            f"{', '.join(missing) or 'VERSION'}); build it with scripts/build-guest-image.sh"
        )
    version = version_file.read_text().strip()
    return GuestImage(image.kernel, image.initrd, image.root_image, version)
