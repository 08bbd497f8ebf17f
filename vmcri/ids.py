"""Sandbox and container IDs: 64 lowercase hex digits, like other CRI runtimes."""

from __future__ import annotations

import re
import secrets

ID_RE = re.compile(r"^[0-9a-f]{64}$")


def new_id() -> str:
    return secrets.token_hex(32)


def is_id(value: str) -> bool:
    return bool(ID_RE.match(value))
