"""Guest messages (pb2) into domain types, validated: the one place the host trusts nothing.

Every function raises :class:`ProtocolError` when a field breaks its bound; the client then
drops the connection. Error responses become the exception class of their gRPC code.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Literal

from vmcri.agent import types
from vmcri.api import agent_pb2
from vmcri.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    HostCommandError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    VmcriError,
)
from vmcri.usage import DeviceIo, FsCapacity, UsageCounters

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_U63 = (1 << 63) - 1
MAX_PID = 1 << 22
MAX_MESSAGE = 4096
MAX_OUTPUT_CHUNK = 256 * 1024

_ERRORS: dict[str, type[VmcriError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "PERMISSION_DENIED": PermissionDenied,
    "UNIMPLEMENTED": Unimplemented,
    "UNAVAILABLE": Unavailable,
}

_STATUS = {
    agent_pb2.CONTAINER_STATUS_CREATED: types.ContainerStatus.CREATED,
    agent_pb2.CONTAINER_STATUS_RUNNING: types.ContainerStatus.RUNNING,
    agent_pb2.CONTAINER_STATUS_EXITED: types.ContainerStatus.EXITED,
}


def error_from(error: agent_pb2.Error) -> VmcriError:
    """The exception for an error response (INTERNAL and unknown codes: HostCommandError)."""
    message = "agent: " + _printable(error.message, MAX_MESSAGE)
    cls = _ERRORS.get(error.code, HostCommandError)
    return cls(message)


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def container_id(value: str, field: str = "container_id") -> str:
    if not ID_RE.match(value):
        raise ProtocolError(f"agent sent a bad {field}: {value[:80]!r}")
    return value


def _uint(value: int, field: str, limit: int = MAX_U63) -> int:
    if not 0 <= value <= limit:
        raise ProtocolError(f"agent sent {field}={value}, out of range")
    return value


_COUNTER_FIELDS = tuple(
    f.name for f in dataclasses.fields(UsageCounters) if f.name != "io"
)  # fmt: skip
MAX_DEVICES = 64
MAX_MAJOR = (1 << 12) - 1  # dev_t: 12 bits of major, 20 of minor (linux/kdev_t.h)
MAX_MINOR = (1 << 20) - 1
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:!-]{0,31}$")


def writable_fs(msg: agent_pb2.WritableFs) -> FsCapacity:
    """The guest's account of a writable layer's file system, each figure bounded; its
    device the guest kernel's name of the disk ("" for guest memory)."""
    if msg.device and not DEVICE_RE.match(msg.device):
        raise ProtocolError(f"agent sent a bad device name {msg.device[:40]!r}")
    total = _uint(msg.inodes_total, "inodes_total")
    free = _uint(msg.inodes_free, "inodes_free")
    if free > total:
        raise ProtocolError(f"agent sent {free} free inodes of {total}")
    return FsCapacity(
        device=msg.device,
        limit_bytes=_uint(msg.size_bytes, "size_bytes"),
        inodes_total=total,
        inodes_free=free,
    )


def usage_counters(msg: agent_pb2.UsageCounters) -> UsageCounters:
    """The agent's counters, each bounded; the device list bounded in length and names."""
    if len(msg.io) > MAX_DEVICES:
        raise ProtocolError(f"agent sent I/O of {len(msg.io)} devices")
    io = []
    for d in msg.io:
        if not DEVICE_RE.match(d.device):
            raise ProtocolError(f"agent sent a bad device name {d.device[:40]!r}")
        io.append(
            DeviceIo(
                d.device,
                read_bytes=_uint(d.read_bytes, "read_bytes"),
                write_bytes=_uint(d.write_bytes, "write_bytes"),
                reads=_uint(d.reads, "reads"),
                writes=_uint(d.writes, "writes"),
                major=_uint(d.major, "major", MAX_MAJOR),
                minor=_uint(d.minor, "minor", MAX_MINOR),
            )
        )
    values = {name: _uint(getattr(msg, name), name) for name in _COUNTER_FIELDS}
    return UsageCounters(**values, io=tuple(io))


def _exit_code(value: int) -> int:
    if not -1 <= value <= 255:
        raise ProtocolError(f"agent sent exit code {value}, out of range")
    return value


def agent_info(msg: agent_pb2.PingResponse) -> types.AgentInfo:
    return types.AgentInfo(
        agent_version=_printable(msg.agent_version, 64),
        protocol_version=msg.protocol_version,
        uptime_ns=_uint(msg.uptime_ns, "uptime_ns"),
        containers=msg.containers,
        events_dropped=_uint(msg.events_dropped, "events_dropped"),
    )


def sandbox_files(msg: agent_pb2.SetupSandboxResponse) -> types.SandboxFiles:
    paths = (msg.hostname_path, msg.hosts_path, msg.resolv_conf_path)
    pid_ns = (msg.pid_ns_path,) if msg.pid_ns_path else ()  # "": no shared PID namespace
    for path in (*paths, *pid_ns):
        if not path.startswith("/") or len(path) > 4096 or "\0" in path or ".." in path:
            raise ProtocolError(f"agent sent a bad sandbox file path {path[:80]!r}")
    return types.SandboxFiles(*paths, pid_ns_path=msg.pid_ns_path)


MAX_TERMINATION_MESSAGE = 4096  # kubelet's MaxContainerTerminationMessageLength


def _termination_message(data: bytes) -> bytes:
    if len(data) > MAX_TERMINATION_MESSAGE:
        raise ProtocolError(f"agent sent a termination message of {len(data)} bytes")
    return data


def volume_path(msg: agent_pb2.SyncVolumeResponse) -> str:
    """The guest path of a volume the guest made (it goes into a container's spec)."""
    path = msg.path
    if not path.startswith("/") or len(path) > 4096 or "\0" in path or "/../" in f"{path}/":
        raise ProtocolError(f"agent sent a bad volume path {path[:80]!r}")
    return path


def container_state(msg: agent_pb2.ContainerState) -> types.ContainerState:
    status = _STATUS.get(msg.status)
    if status is None:
        raise ProtocolError(f"agent sent unknown container status {msg.status}")
    return types.ContainerState(
        container_id=container_id(msg.container_id),
        status=status,
        pid=_uint(msg.pid, "pid", MAX_PID),
        exit_code=_exit_code(msg.exit_code),
        oom_killed=msg.oom_killed,
        created_at_ns=_uint(msg.created_at_ns, "created_at_ns"),
        started_at_ns=_uint(msg.started_at_ns, "started_at_ns"),
        finished_at_ns=_uint(msg.finished_at_ns, "finished_at_ns"),
    )


def exec_result(msg: agent_pb2.ExecSyncResponse, max_output: int) -> types.ExecResult:
    if len(msg.stdout) > max_output or len(msg.stderr) > max_output:
        raise ProtocolError("agent sent more exec output than asked for")
    return types.ExecResult(
        exit_code=_exit_code(msg.exit_code),
        stdout=msg.stdout,
        stderr=msg.stderr,
        timed_out=msg.timed_out,
        truncated=msg.truncated,
    )


def stats(msg: agent_pb2.StatsResponse, wanted: list[str]) -> types.Stats:
    containers = []
    seen: set[str] = set()
    for item in msg.containers:
        cid = container_id(item.container_id)
        if (wanted and cid not in wanted) or cid in seen:
            raise ProtocolError(f"agent sent unasked or repeated stats for {cid}")
        seen.add(cid)
        containers.append(
            types.ContainerStats(
                container_id=cid,
                cpu_usage_ns=_uint(item.cpu_usage_ns, "cpu_usage_ns"),
                memory_usage_bytes=_uint(item.memory_usage_bytes, "memory_usage_bytes"),
                memory_working_set_bytes=_uint(
                    item.memory_working_set_bytes, "memory_working_set_bytes"
                ),
                memory_rss_bytes=_uint(item.memory_rss_bytes, "memory_rss_bytes"),
                pids=_uint(item.pids, "pids", MAX_PID),
                oom_kills=_uint(item.oom_kills, "oom_kills"),
                timestamp_ns=_uint(item.timestamp_ns, "timestamp_ns"),
                counters=usage_counters(item.counters),
                writable_layer=(
                    _uint(item.writable_layer_bytes, "writable_layer_bytes"),
                    _uint(item.writable_layer_inodes, "writable_layer_inodes"),
                )
                if item.HasField("writable_layer_bytes")
                else None,
                writable_fs=writable_fs(item.writable_fs) if item.HasField("writable_fs") else None,
            )
        )
    mem = msg.vm_memory
    return types.Stats(
        containers=tuple(containers),
        vm_memory=types.VmMemory(
            total_bytes=_uint(mem.total_bytes, "total_bytes"),
            free_bytes=_uint(mem.free_bytes, "free_bytes"),
            available_bytes=_uint(mem.available_bytes, "available_bytes"),
        ),
    )


MAX_GUEST_CPUS = 1024
MAX_GUEST_MEMORY = 1 << 52  # x86-64's physical address limit


def guest_resources(msg: agent_pb2.OnlineResourcesResponse) -> types.GuestResources:
    return types.GuestResources(
        online_cpus=_uint(msg.online_cpus, "online_cpus", MAX_GUEST_CPUS),
        memory_total_bytes=_uint(msg.memory_total_bytes, "memory_total_bytes", MAX_GUEST_MEMORY),
    )


def event(msg: agent_pb2.Event) -> types.AgentEvent:
    """Raises ProtocolError for an event without a known kind or with a bad field."""
    seq = _uint(msg.seq, "seq")
    kind = msg.WhichOneof("kind")
    if kind == "output":
        out = msg.output
        if out.stream == agent_pb2.OUTPUT_STREAM_STDOUT:
            stream: Literal["stdout", "stderr"] = "stdout"
        elif out.stream == agent_pb2.OUTPUT_STREAM_STDERR:
            stream = "stderr"
        else:
            raise ProtocolError(f"agent sent output of unknown stream {out.stream}")
        if len(out.data) > MAX_OUTPUT_CHUNK or (out.eof and out.data):
            raise ProtocolError("agent sent an oversized or malformed output chunk")
        return types.OutputChunk(
            seq=seq,
            container_id=container_id(out.container_id),
            exec_id=container_id(out.exec_id, "exec_id") if out.exec_id else "",
            stream=stream,
            data=out.data,
            eof=out.eof,
            guest_time_ns=_uint(msg.timestamp_ns, "timestamp_ns"),
            received_at_ns=time.time_ns(),
        )
    if kind == "container_exited":
        ex = msg.container_exited
        return types.ContainerExit(
            seq=seq,
            container_id=container_id(ex.container_id),
            exit_code=_exit_code(ex.exit_code),
            oom_killed=ex.oom_killed,
            finished_at_ns=_uint(ex.finished_at_ns, "finished_at_ns"),
            termination_message=_termination_message(ex.termination_message),
        )
    if kind == "exec_exited":
        ee = msg.exec_exited
        return types.ExecExit(
            seq=seq,
            container_id=container_id(ee.container_id),
            exec_id=container_id(ee.exec_id, "exec_id"),
            exit_code=_exit_code(ee.exit_code),
        )
    if kind == "port_forward_data":
        pf = msg.port_forward_data
        if len(pf.data) > MAX_OUTPUT_CHUNK or (pf.eof and pf.data):
            raise ProtocolError("agent sent an oversized or malformed port-forward chunk")
        return types.PortForwardData(
            seq=seq,
            stream_id=container_id(pf.stream_id, "stream_id"),
            data=pf.data,
            eof=pf.eof,
            error=_printable(pf.error, 500),
        )
    raise ProtocolError(f"agent sent an event of unknown kind {kind!r}")
