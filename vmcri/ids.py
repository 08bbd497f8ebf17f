"""Sandbox and container IDs: 64 lowercase hex digits, like other CRI runtimes."""

from __future__ import annotations

import re
import secrets

ID_RE = re.compile(r"^[0-9a-f]{64}$")
ID_PREFIX_RE = re.compile(r"^[0-9a-f]{1,64}$")


def new_id() -> str:
    return secrets.token_hex(32)


def is_id(value: str) -> bool:
    return bool(ID_RE.match(value))


def could_name(value: str) -> bool:
    """Whether ``value`` could name a record: an ID or a prefix of one, as the store takes.

    Anything else names nothing, whatever it holds ('..', '/', a UUID, 65 digits), and
    nothing is looked up or built (no path) from it.
    """
    return bool(ID_PREFIX_RE.match(value))
