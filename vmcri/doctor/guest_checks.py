"""The guest image a VM boots, and VM templates (snapshots)."""

from __future__ import annotations

from pathlib import Path

from vmcri.doctor.model import Check, Status
from vmcri.errors import FailedPrecondition
from vmcri.handlers.vm.guest_image import load_guest_image


def check_guest_image(directory: Path, handler: str) -> Check:
    try:
        image = load_guest_image(directory)
    except FailedPrecondition as exc:
        return Check(
            "guest image",
            Status.FAIL,
            exc.message,
            "VM pods cannot start",
            "scripts/build-guest-image.sh (scripts/install.sh copies it), or point "
            "guest_dir at a built image",
            handler,
        )
    return Check(
        "guest image",
        Status.OK,
        f"{directory}: version {image.version[:12]}",
        "VMs boot it",
        "",
        handler,
    )


def check_templates(handler: str) -> Check:
    return Check(
        "templates",
        Status.INFO,
        "not built (not supported yet)",
        "every VM pod cold-boots",
        "",
        handler,
    )
