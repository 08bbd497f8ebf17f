"""What an Exec, Attach or PortForward RPC asked for, kept behind a token until the client comes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    ports: tuple[int, ...]  # empty: any port the client names


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest

KIND_OF = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}
