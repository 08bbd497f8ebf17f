"""The agent's typed calls: :class:`AgentClient`, one method per request of agent.proto.

The channel under them (connection, handshake, events, deadlines, what the guest may not
do) is :class:`vmcri.agent.connection.AgentConnection`; each method here builds one request,
checks that the answer is the expected one and converts it (vmcri.agent.convert).

Every method raises like :meth:`AgentConnection.call`: AgentUnavailable, DeadlineExceeded,
ProtocolError (the answer was of the wrong kind or broke a bound; connection dropped), or
the agent's own error for the call.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmcri.agent import RUNTIME_CALL_TIMEOUT_S, convert, types
from vmcri.agent.connection import AgentConnection, Connector, EventCallback
from vmcri.api import agent_pb2
from vmcri.errors import InvalidArgument

__all__ = ["AgentClient", "Connector", "EventCallback"]

EXEC_SYNC_GRACE_S = 10.0
"""Extra wait over an ExecSync's own timeout: runc exec and the channel need a moment too."""


class AgentClient(AgentConnection):
    def ping(self, timeout: float | None = None) -> types.AgentInfo:
        """Health check; raises like :meth:`call`."""
        r = self._result(
            self.call(agent_pb2.Request(ping=agent_pb2.PingRequest()), timeout), "ping"
        )
        return self._checked(lambda: convert.agent_info(r.ping))

    def setup_sandbox(
        self,
        *,
        hostname: str = "",
        hosts: bytes = b"",
        resolv_conf: bytes = b"",
        sysctls: dict[str, str] | None = None,
        interfaces: Sequence[types.GuestInterface] = (),
        wall_clock_ns: int = 0,
        nic_wait_s: int = 0,
        share_pid: bool = False,
        writable_lun: int | None = None,
        entropy: bytes = b"",
    ) -> types.SandboxFiles:
        """Raises like :meth:`call` (InvalidArgument names the bad field). ``writable_lun``:
        the SCSI LUN of the pod's writable disk (None: the pod has none)."""
        req = agent_pb2.SetupSandboxRequest(
            hostname=hostname,
            hosts=hosts,
            resolv_conf=resolv_conf,
            sysctls=sysctls or {},
            interfaces=[
                agent_pb2.NetInterface(
                    mac=i.mac,
                    name=i.name,
                    mtu=i.mtu,
                    addresses=i.addresses,
                    routes=[agent_pb2.NetRoute(dst=r.dst, gateway=r.gateway) for r in i.routes],
                    saved_mac=i.saved_mac,
                )
                for i in interfaces
            ],
            wall_clock_ns=wall_clock_ns,
            nic_wait_s=nic_wait_s,
            share_pid=share_pid,
            writable_lun=writable_lun,
            entropy=entropy,
        )
        r = self._result(self.call(agent_pb2.Request(setup_sandbox=req)), "setup_sandbox")
        return self._checked(lambda: convert.sandbox_files(r.setup_sandbox))

    def mount_shares(self, mounts: Sequence[types.Mount9p]) -> None:
        """Mount the pod's host shares in the guest (idempotent); raises like :meth:`call`."""
        wire = [agent_pb2.Mount9p(tag=m.tag, target=m.target, options=m.options) for m in mounts]
        req = agent_pb2.MountSharesRequest(mounts=wire)
        self._result(self.call(agent_pb2.Request(mount_shares=req)), "empty")

    def sync_volume(
        self,
        name: str,
        kind: types.VolumeKind,
        files: Sequence[types.VolumeFile] = (),
        *,
        size_bytes: int = 0,
        timeout: float | None = None,
    ) -> str:
        """Make or update one of the pod's guest-local volumes; returns its guest path.
        Raises like :meth:`call`."""
        req = agent_pb2.SyncVolumeRequest(
            name=name,
            kind=agent_pb2.VolumeKind.Name(kind.value),
            files=[
                agent_pb2.VolumeFile(path=f.path, data=f.data, mode=f.mode, uid=f.uid, gid=f.gid)
                for f in files
            ],
            size_bytes=size_bytes,
        )
        r = self._result(self.call(agent_pb2.Request(sync_volume=req), timeout), "sync_volume")
        return self._checked(lambda: convert.volume_path(r.sync_volume))

    def create_container(
        self,
        container_id: str,
        oci_spec: bytes,
        *,
        lowerdirs: Sequence[str] = (),
        rootfs_path: str = "",
        layer_luns: Sequence[int] = (),
        stdin: bool = False,
        stdin_once: bool = False,
        tty: bool = False,
        timeout: float | None = None,
    ) -> types.ContainerState:
        """Raises like :meth:`call`; AlreadyExists if the id is taken in the guest.
        The rootfs is one of ``lowerdirs``, ``rootfs_path`` and ``layer_luns`` (the LUNs
        of its layer disks, uppermost first).
        ``timeout`` None: RUNTIME_CALL_TIMEOUT_S (the guest runs ``runc create``)."""
        req = agent_pb2.CreateContainerRequest(
            container_id=container_id,
            oci_spec=oci_spec,
            lowerdirs=list(lowerdirs),
            rootfs_path=rootfs_path,
            layer_luns=list(layer_luns),
            stdin=stdin,
            stdin_once=stdin_once,
            tty=tty,
        )
        wait = RUNTIME_CALL_TIMEOUT_S if timeout is None else timeout
        return self._state(agent_pb2.Request(create_container=req), wait)

    def start_container(self, container_id: str) -> types.ContainerState:
        req = agent_pb2.StartContainerRequest(container_id=container_id)
        return self._state(agent_pb2.Request(start_container=req), RUNTIME_CALL_TIMEOUT_S)

    def signal_container(self, container_id: str, signal: int) -> None:
        req = agent_pb2.SignalContainerRequest(container_id=container_id, signal=signal)
        self._result(self.call(agent_pb2.Request(signal_container=req)), "empty")

    def wait_container(self, container_id: str, timeout: float) -> types.ContainerState:
        """Block until the container exits; DeadlineExceeded after ``timeout`` seconds."""
        req = agent_pb2.WaitContainerRequest(container_id=container_id)
        return self._state(agent_pb2.Request(wait_container=req), timeout)

    def container_status(self, container_id: str) -> types.ContainerState:
        req = agent_pb2.ContainerStatusRequest(container_id=container_id)
        return self._state(agent_pb2.Request(container_status=req))

    def list_containers(self) -> list[types.ContainerState]:
        req = agent_pb2.Request(list_containers=agent_pb2.ListContainersRequest())
        r = self._result(self.call(req), "list_containers")
        return self._checked(
            lambda: [convert.container_state(c) for c in r.list_containers.containers]
        )

    def remove_container(self, container_id: str, timeout: float | None = None) -> None:
        """Idempotent: removing an unknown container succeeds."""
        req = agent_pb2.RemoveContainerRequest(container_id=container_id)
        self._result(self.call(agent_pb2.Request(remove_container=req), timeout), "empty")

    def exec_sync(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        timeout: float = 0.0,
        max_output_bytes: int = 480 * 1024,
    ) -> types.ExecResult:
        """Run a command to completion. ``timeout`` 0: none in the guest (the call still ends)."""
        if timeout < 0 or max_output_bytes <= 0:
            raise InvalidArgument("exec_sync: timeout must be >= 0 and max_output_bytes > 0")
        req = agent_pb2.ExecSyncRequest(
            container_id=container_id,
            argv=list(argv),
            timeout_ms=int(timeout * 1000),
            max_output_bytes=max_output_bytes,
        )
        wait = (timeout + EXEC_SYNC_GRACE_S) if timeout else None
        r = self._result(self.call(agent_pb2.Request(exec_sync=req), wait), "exec_sync")
        return self._checked(lambda: convert.exec_result(r.exec_sync, max_output_bytes))

    def exec_start(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        rows: int = 0,
        cols: int = 0,
    ) -> str:
        """Start an interactive exec; output and exit arrive as events. Returns its exec id."""
        req = agent_pb2.ExecStartRequest(
            container_id=container_id, argv=list(argv), tty=tty, stdin=stdin, rows=rows, cols=cols
        )
        r = self._result(self.call(agent_pb2.Request(exec_start=req)), "exec_start")
        return self._checked(lambda: convert.container_id(r.exec_start.exec_id, "exec_id"))

    def write_stdin(
        self, container_id: str, data: bytes, *, exec_id: str = "", close: bool = False
    ) -> None:
        """Feed stdin of an exec session, or of the container itself (attach) if no exec_id."""
        req = agent_pb2.WriteStdinRequest(
            container_id=container_id, exec_id=exec_id, data=data, close=close
        )
        self._result(self.call(agent_pb2.Request(write_stdin=req)), "empty")

    def resize(self, container_id: str, rows: int, cols: int, *, exec_id: str = "") -> None:
        req = agent_pb2.ResizeRequest(
            container_id=container_id, exec_id=exec_id, rows=rows, cols=cols
        )
        self._result(self.call(agent_pb2.Request(resize=req)), "empty")

    def stats(self, container_ids: Sequence[str] = (), timeout: float | None = None) -> types.Stats:
        wanted = list(container_ids)
        req = agent_pb2.Request(stats=agent_pb2.StatsRequest(container_ids=wanted))
        r = self._result(self.call(req, timeout), "stats")
        return self._checked(lambda: convert.stats(r.stats, wanted))

    def update_resources(self, container_id: str, resources_json: bytes) -> None:
        req = agent_pb2.UpdateResourcesRequest(
            container_id=container_id, resources_json=resources_json
        )
        self._result(self.call(agent_pb2.Request(update_resources=req)), "empty")

    def online_resources(self, cpus: int, wait_s: float) -> types.GuestResources:
        """Have the guest online what was hotplugged, waiting up to ``wait_s`` for ``cpus``
        CPUs; returns what is online (the caller judges it). Raises like :meth:`call`."""
        req = agent_pb2.OnlineResourcesRequest(cpus=cpus, wait_ms=int(wait_s * 1000))
        r = self._result(
            self.call(agent_pb2.Request(online_resources=req), wait_s + 10), "online_resources"
        )
        return self._checked(lambda: convert.guest_resources(r.online_resources))

    def kill_exec(self, container_id: str, exec_id: str) -> None:
        """SIGKILL an interactive exec session's process; an ended session is success."""
        req = agent_pb2.KillExecRequest(container_id=container_id, exec_id=exec_id)
        self._result(self.call(agent_pb2.Request(kill_exec=req)), "empty")

    def port_forward_open(self, port: int) -> tuple[str, int]:
        """Connect to 127.0.0.1:``port`` in the guest; returns (stream id, window).

        Raises Unavailable when nothing listens there, like :meth:`call` otherwise.
        """
        req = agent_pb2.Request(port_forward_open=agent_pb2.PortForwardOpenRequest(port=port))
        r = self._result(self.call(req), "port_forward_open")
        stream_id = self._checked(
            lambda: convert.container_id(r.port_forward_open.stream_id, "stream_id")
        )
        return stream_id, min(r.port_forward_open.window, 16 << 20)

    def port_forward_write(
        self,
        stream_id: str,
        data: bytes = b"",
        *,
        close_write: bool = False,
        close: bool = False,
        consumed: int = 0,
    ) -> None:
        """Send bytes to a forwarded port, acknowledge received ones, or close; see agent.proto."""
        req = agent_pb2.PortForwardWriteRequest(
            stream_id=stream_id,
            data=data,
            close_write=close_write,
            close=close,
            consumed=consumed,
        )
        self._result(self.call(agent_pb2.Request(port_forward_write=req)), "empty")

    def shutdown(self) -> None:
        """Ask the guest to sync and power off (the answer comes before it does)."""
        req = agent_pb2.Request(shutdown=agent_pb2.ShutdownRequest())
        self._result(self.call(req), "empty")

    def warm_up(self, timeout: float | None = None) -> None:
        """A VM template's agent loads what restored pods need first; raises like :meth:`call`."""
        req = agent_pb2.Request(warm_up=agent_pb2.WarmUpRequest())
        self._result(self.call(req, timeout), "empty")

    def _state(
        self, request: agent_pb2.Request, timeout: float | None = None
    ) -> types.ContainerState:
        r = self._result(self.call(request, timeout), "container")
        return self._checked(lambda: convert.container_state(r.container))
