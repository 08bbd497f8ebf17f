"""User lookup in a rootfs, including a hostile /etc/passwd symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmcri.errors import InvalidArgument
from vmcri.host.rootpath import join_in_root
from vmcri.oci.process import UserRequest
from vmcri.oci.users import resolve_user


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nextra:x:3000:app,other\n")
    return tmp_path


def test_name_number_and_group(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), UserRequest("app", None, "f")).__dict__ == {
        "uid": 1000,
        "gid": 1001,
        "additional_gids": (3000,),
    }
    assert resolve_user(str(rootfs), UserRequest("1000", "7", "f")).gid == 7
    assert resolve_user(str(rootfs), UserRequest("4242", None, "f")).gid == 0
    assert resolve_user(str(rootfs), UserRequest("app", "extra", "f")).gid == 3000
    assert resolve_user(str(rootfs), UserRequest("", None, "f")).uid == 0


def test_unknown_names_name_the_field(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="run_as_username"):
        resolve_user(str(rootfs), UserRequest("bob", None, "security_context.run_as_username"))
    with pytest.raises(InvalidArgument, match="group"):
        resolve_user(str(rootfs), UserRequest("app", "nogroup", "f"))


def test_symlinks_stay_in_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    os.symlink("../../../outside", root / "etc" / "passwd")
    assert join_in_root(str(root), "/etc/passwd") == str(root / "outside")
    with pytest.raises(InvalidArgument):
        resolve_user(str(root), UserRequest("evil", None, "f"))
