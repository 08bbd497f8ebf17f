"""The runc handler's overlay mount options for a container's rootfs."""

from __future__ import annotations

import pytest

from vmcri.errors import FailedPrecondition
from vmcri.handlers.runc.rootfs import overlay_options


def test_overlay_options_order_and_limits() -> None:
    assert (
        overlay_options(["/l0", "/l1"], "/u", "/w", "/e")
        == "lowerdir=/l1:/l0,upperdir=/u,workdir=/w"
    )
    assert overlay_options([], "/u", "/w", "/e").startswith("lowerdir=/e,")
    with pytest.raises(FailedPrecondition):
        overlay_options(["/a:b"], "/u", "/w", "/e")
    with pytest.raises(FailedPrecondition, match="too many layers"):
        overlay_options([f"/layers/{'x' * 60}/{i}" for i in range(100)], "/u", "/w", "/e")
