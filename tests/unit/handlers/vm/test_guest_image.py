from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.errors import FailedPrecondition
from vmcri.handlers.vm.boot import check_guest_version
from vmcri.handlers.vm.guest_image import GuestImage, load_guest_image

GUEST = GuestImage(Path("k"), Path("i"), Path("r"), "5422dd2d1bb5" + "0" * 52)


def test_matching_image_version_passes() -> None:
    check_guest_version("0.1.0+5422dd2d1bb5", GUEST)
    with pytest.raises(FailedPrecondition, match="'5422dd2d1bb6' but '5422dd2d1bb5'"):
        check_guest_version("0.1.0+5422dd2d1bb6", GUEST)  # one digit off


@pytest.mark.parametrize("reported", ["0.1.0", "0.1.0+aaaaaaaaaaaa", "0.1.0+"])
def test_other_or_unknown_image_is_refused(reported: str) -> None:
    with pytest.raises(FailedPrecondition, match="rebuild the guest image"):
        check_guest_version(reported, GUEST)


def test_incomplete_guest_dir_says_how_to_build(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"k")
    with pytest.raises(FailedPrecondition, match=r"initrd\.img.*build-guest-image"):
        load_guest_image(tmp_path)
    for name in ("initrd.img", "rootfs.img"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "VERSION").write_text("abc\n")
    assert load_guest_image(tmp_path).version == "abc"
    assert load_guest_image(tmp_path, uncompressed_kernel=True).kernel.name == "vmlinuz"
    (tmp_path / "vmlinux").write_bytes(b"elf")
    assert load_guest_image(tmp_path, uncompressed_kernel=True).kernel.name == "vmlinux"
    assert load_guest_image(tmp_path).kernel.name == "vmlinuz"
