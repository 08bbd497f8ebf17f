"""A checkpoint directory is data from outside: each way to make it lie is refused.

A checkpoint may have been copied from another node or edited on disk by whoever could
write it. The attacker here writes a valid checkpoint, then changes it: a byte of a
file, a file cut short, a file swapped for a symlink to a host secret or a hard link
to one, a file the manifest does not list, a manifest naming ``../`` or too large, or
a key the reader does not know. Each is refused INVALID_ARGUMENT naming ``path`` and
what is wrong, before a byte of a listed file is handed to a handler.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.checkpoints import write_checkpoint
from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import MAX_MANIFEST_BYTES
from vmcri.checkpoint.paths import MANIFEST, open_directory
from vmcri.checkpoint.reader import verify
from vmcri.errors import InvalidArgument

STATE = b"guest memory " * 1000


def _write_checkpoint(parent: Path) -> Path:
    return write_checkpoint(parent, {"memory": STATE, "disk-vda.extents": b"disk"})


def _verify(parent: Path) -> None:
    fd = open_directory(str(parent), "path")
    try:
        verify(fd, str(parent), Deadline.of(None)).close()
    finally:
        os.close(fd)


def _edit_manifest(directory: Path, change: Callable[[dict[str, object]], None]) -> None:
    data = json.loads((directory / MANIFEST).read_bytes())
    change(data)
    (directory / MANIFEST).write_text(json.dumps(data))


def test_an_untouched_checkpoint_verifies(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path)
    _verify(tmp_path)  # the control: every refusal below is the tampering's


def _flip_a_byte(d: Path) -> None:
    data = bytearray((d / "memory").read_bytes())
    data[100] ^= 1
    (d / "memory").write_bytes(bytes(data))


def _truncate(d: Path) -> None:
    os.truncate(d / "memory", 10)


def _symlink_to_a_secret(d: Path) -> None:
    secret = d.parent / "host-secret"
    secret.write_bytes(STATE)  # same size and bytes: only the link itself can be refused
    (d / "memory").unlink()
    os.symlink(secret, d / "memory")


def _hard_link_to_a_secret(d: Path) -> None:
    secret = d.parent / "host-secret"
    (d / "memory").rename(secret)
    os.link(secret, d / "memory")


def _unlisted_file(d: Path) -> None:
    (d / "payload.sh").write_text("#!/bin/sh\n")


def _traversal(d: Path) -> None:
    def change(m: dict[str, object]) -> None:
        files = m["files"]
        assert isinstance(files, list)
        files[0]["name"] = "../host-secret"

    _edit_manifest(d, change)


def _unknown_key(d: Path) -> None:
    _edit_manifest(d, lambda m: m.update(run_on_restore="sh -c 'id'"))


def _other_format(d: Path) -> None:
    _edit_manifest(d, lambda m: m.update(format="vmcri.checkpoint/v0"))


def _huge_manifest(d: Path) -> None:
    (d / MANIFEST).write_bytes(b" " * (MAX_MANIFEST_BYTES + 1))


def _manifest_a_symlink(d: Path) -> None:
    real = d.parent / "elsewhere.json"
    (d / MANIFEST).rename(real)
    os.symlink(real, d / MANIFEST)


def _directory_a_symlink(d: Path) -> None:
    moved = d.parent / "moved"
    d.rename(moved)
    os.symlink(moved, d)


@pytest.mark.parametrize(
    ("attack", "said"),
    [
        (_flip_a_byte, "does not match its SHA-256"),
        (_truncate, "truncated or altered"),
        (_symlink_to_a_secret, "a symlink is refused"),
        (_hard_link_to_a_secret, "not a plain regular file"),
        (_unlisted_file, "which its manifest does not list"),
        (_traversal, "is not a plain file name"),
        (_unknown_key, "unknown key 'run_on_restore'"),
        (_other_format, "is not 'vmcri.checkpoint/v1'"),
        (_huge_manifest, "larger than"),
        (_manifest_a_symlink, "a symlink is refused"),
        (_directory_a_symlink, "a symlink is refused"),
    ],
)
def test_a_tampered_checkpoint_is_refused_naming_the_fault(
    tmp_path: Path, attack: Callable[[Path], None], said: str
) -> None:
    attack(_write_checkpoint(tmp_path))
    with pytest.raises(InvalidArgument) as info:
        _verify(tmp_path)
    assert info.value.message.startswith("path: ")
    assert said in info.value.message
