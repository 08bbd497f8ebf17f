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
    sandbox_id: str = ""  # the container's pod, filled in when the URL is issued


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    sandbox_id: str = ""  # the container's pod, filled in when the URL is issued


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    ports: tuple[int, ...]  # empty: any port the client names


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest

KIND_OF = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}


def pod_of(request: StreamRequest) -> str:
    """The pod sandbox a request's session is counted against."""
    return request.sandbox_id
