"""Containers run by a pod's vmcri agent, wherever that agent runs.

Both backends hand their containers to one agent per pod: the ``vm`` backend's agent is
PID 1's child in the pod VM, the ``runc`` backend's is a process on the host (as
containerd has one shim per pod). The agent speaks one protocol over one framing whatever
the channel, so every container feature (create, start, signal, exec, attach, stats,
resources, output into CRI log files, exits) is written here once; a backend says only
where its agent is (:class:`Placement`) and builds the container's OCI spec and rootfs.

The runtime's container service calls this module directly (``api.ContainerSupervisor``);
a backend places it (its agent's home) and hands it a container it prepared. Exits are
events: the agent's ContainerExited event, or the placement's death (the VM died, the host
agent is gone), becomes a write-once exit record (``exits.py``, read back only by a
restarted daemon), and the exit itself travels up once, with its code, reason and time
(``ContainerRecords.container_exited``); nothing polls a container.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vmcri.agent import types as agent_types
from vmcri.errors import DeadlineExceeded, FailedPrecondition, NotFound, VmcriError
from vmcri.host.disk import capacity_of, tree_usage
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor import streams, termination
from vmcri.supervisor.api import (
    ContainerExit,
    ContainerLiveness,
    ContainerRecords,
    ContainerUsage,
    ExecResult,
    ProcessSession,
)
from vmcri.supervisor.exits import ExitRecords
from vmcri.supervisor.link import AgentLink, ContainerRef

log = logging.getLogger(__name__)

STATS_CALL_TIMEOUT_S = 2.0
"""Longest wait for an agent's stats answer: a healthy agent reads a few cgroup files in
milliseconds, even under TCG; a frozen one must not hold kubelet's stats calls (it asks
every pod in one call, with a 2 minute deadline) for the call timeout of 60 s."""
EXEC_OUTPUT_LIMIT = 480 * 1024
"""Per stream, for ExecSync: both streams must fit one agent frame (1 MiB)."""


class Placement(Protocol):
    """Where a pod's agent runs: what differs between the backends."""

    def agent_url(self, sandbox: SandboxRecord) -> str: ...

    def agent_running(self, sandbox_id: str) -> bool:
        """Whether the agent's home (the VM, the host agent process) is up."""
        ...

    def down_message(self) -> str:
        """Why a container of a pod whose agent is gone ended, e.g. "the pod VM died"."""
        ...

    def stall_hint(self, sandbox_id: str) -> str:
        """What may tell why the pod's agent left a call unanswered ("" for nothing): added
        to the DeadlineExceeded message, e.g. the end of a VM's console."""
        ...

    def exits_dir(self, sandbox_id: str) -> Path: ...

    def writable_layer(self, sandbox_id: str, container_id: str) -> Path:
        """The container's overlay upper directory on the host (for its disk usage)."""
        ...


class SupervisedContainers:
    """The containers of one backend's pods, over each pod's agent link: the runtime's
    :class:`~vmcri.supervisor.api.ContainerSupervisor`, and the link the backend boots,
    grows and shuts its pods through."""

    def __init__(
        self,
        placement: Placement,
        records: ContainerRecords,
        exec_output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> None:
        self._place = placement
        self._records = records
        self._exec_output_limit = min(exec_output_limit, EXEC_OUTPUT_LIMIT)
        self._links: dict[str, AgentLink] = {}
        self._exits: dict[str, ExitRecords] = {}
        self._lock = threading.Lock()

    # ---- links and exit records ---------------------------------------------------------

    def link(self, sandbox: SandboxRecord) -> AgentLink:
        """The pod's agent link, made on first use (a restarted daemon reconnects here)."""
        with self._lock:
            found = self._links.get(sandbox.id)
            if found is None:
                found = AgentLink(
                    sandbox.id,
                    self._place.agent_url(sandbox),
                    self._on_exit,
                    self._lookup,
                    stall_hint=functools.partial(self._place.stall_hint, sandbox.id),
                )
                self._links[sandbox.id] = found
            return found

    def reconnect(self, sandbox: SandboxRecord) -> None:
        """Connect the pod's link now (a restarted daemon): the agent replays what it kept."""
        try:
            _ = self.link(sandbox).client
        except VmcriError as exc:
            log.warning("sandbox %s: cannot reach its agent yet: %s", sandbox.id, exc.message)

    def drop_link(self, sandbox_id: str) -> None:
        with self._lock:
            found = self._links.pop(sandbox_id, None)
        if found is not None:
            found.close()

    def exits(self, sandbox_id: str) -> ExitRecords:
        with self._lock:
            found = self._exits.get(sandbox_id)
            if found is None:
                found = ExitRecords(self._place.exits_dir(sandbox_id))
                self._exits[sandbox_id] = found
            return found

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is removed: drop its link and exit records (files go with its dir)."""
        self.drop_link(sandbox_id)
        with self._lock:
            self._exits.pop(sandbox_id, None)

    def _lookup(self, container_id: str) -> ContainerRef | None:
        found = self._records.find_container(container_id)
        if found is None:
            return None
        return ContainerRef(found.id, found.sandbox_id, found.log_path)

    def record_exit(self, sandbox_id: str, container_id: str, exit: ContainerExit) -> None:
        """Keep the first account of how the container ended (for a restarted daemon) and
        send it up, once."""
        if self.exits(sandbox_id).record(container_id, exit):
            self._records.container_exited(container_id, exit)

    def _on_exit(self, sandbox_id: str, event: agent_types.ContainerExit) -> None:
        # The link has checked that the container is one of this pod's.
        if event.termination_message:
            record = self._records.find_container(event.container_id)
            if record is not None:
                termination.write_message(record.config, event.termination_message)
        code = event.exit_code
        if event.oom_killed and code == 0:
            code = 137
        finished = event.finished_at_ns or time.time_ns()
        reason = "OOMKilled" if event.oom_killed else ("Completed" if code == 0 else "Error")
        self.record_exit(sandbox_id, event.container_id, ContainerExit(code, finished, reason))

    def agent_lost(self, sandbox_id: str, message: str) -> None:
        """The pod's agent is gone with its containers: each one still running has ended."""
        for container in self._records.containers_of(sandbox_id):
            self.record_exit(
                sandbox_id, container.id, ContainerExit(137, time.time_ns(), "Error", message)
            )
        self.drop_link(sandbox_id)

    # ---- life cycle -------------------------------------------------------------------

    def create(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        spec: dict[str, object],
        rootfs_path: str = "",
        layer_luns: Sequence[int] = (),
    ) -> None:
        """Hand the container to the agent (runc create there); raises the agent's errors.
        Its rootfs: ``rootfs_path`` assembled already, or the layer disks at ``layer_luns``
        (uppermost first) that the agent stacks itself."""
        self.exits(sandbox.id).discard(container.id)
        cfg = container.config
        self.link(sandbox).client.create_container(
            container.id,
            json.dumps(spec).encode(),
            rootfs_path=rootfs_path,
            layer_luns=layer_luns,
            stdin=cfg.stdin,
            stdin_once=cfg.stdin_once,
            tty=cfg.tty,
        )
        self.link(sandbox).open_log(container.id)

    def adopt(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """A container the agent runs already (a pod restored from a checkpoint, the
        container under its saved ID): its output goes to its log from now on; returns
        its pid as the agent sees it. Raises NotFound (the agent does not know it)."""
        self.exits(sandbox.id).discard(container.id)
        state = self.link(sandbox).client.container_status(container.id)
        self.link(sandbox).open_log(container.id)
        return state.pid

    def start(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        return self.link(sandbox).client.start_container(container.id).pid

    def signal(self, sandbox: SandboxRecord, container: ContainerRecord, signum: int) -> None:
        """Signal the container's init; one that has ended (or is unknown) is left alone:
        the agent ignores a signal to a container that exited, and one it does not know
        answers NotFound. No exit record is read: those are for a restarted daemon."""
        if not self._place.agent_running(sandbox.id):
            self.agent_lost(sandbox.id, self._place.down_message())
            return
        try:
            self.link(sandbox).client.signal_container(container.id, signum)
        except NotFound:
            return

    def remove(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """Delete it in the agent (idempotent there) and forget its log writer and exit."""
        if self._place.agent_running(sandbox.id):
            self.link(sandbox).client.remove_container(container.id)
        with self._lock:
            found = self._links.get(sandbox.id)
        if found is not None:
            found.close_log(container.id)
        self.exits(sandbox.id).discard(container.id)

    def liveness(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerLiveness:
        """Whether the agent is there, no call into it; a gone agent's containers have
        ended, and their exits are sent up before this returns."""
        if not self._place.agent_running(sandbox.id):
            self.agent_lost(sandbox.id, self._place.down_message())
            return ContainerLiveness(running=False)
        return ContainerLiveness(running=True, pid=container.pid)

    def recorded_exit(self, sandbox: SandboxRecord, container_id: str) -> ContainerExit | None:
        """The exit record on disk: what a restarted daemon reads back once."""
        return self.exits(sandbox.id).read(container_id)

    def pid(self, sandbox: SandboxRecord, container_id: str) -> int:
        """The running container's init PID as the agent sees it (0 when not running)."""
        try:
            state = self.link(sandbox).client.container_status(container_id)
        except VmcriError:  # NotFound among them
            return 0
        return state.pid if state.status is agent_types.ContainerStatus.RUNNING else 0

    # ---- processes and resources ------------------------------------------------------

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        """Raises DeadlineExceeded when the command outlived ``timeout_s`` (0: no limit)."""
        result = self.link(sandbox).client.exec_sync(
            container.id,
            cmd,
            timeout=float(timeout_s),
            max_output_bytes=self._exec_output_limit,
        )
        if result.timed_out:
            raise DeadlineExceeded(f"ExecSync in {container.id} timed out after {timeout_s}s")
        return ExecResult(result.stdout, result.stderr, result.exit_code)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, body: dict[str, object]
    ) -> None:
        """``body`` is the OCI ``linux.resources`` object the backend built."""
        self.link(sandbox).client.update_resources(container.id, json.dumps(body).encode())

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        self.link(sandbox).reopen_log(container.id)

    def usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        """Raises DeadlineExceeded after STATS_CALL_TIMEOUT_S, AgentUnavailable, ..."""
        client = self.link(sandbox).client
        found = client.stats([container.id], timeout=STATS_CALL_TIMEOUT_S).containers
        stats = found[0] if found else None
        if stats is not None and stats.writable_layer is not None:
            used, inodes = stats.writable_layer  # on a disk only the guest mounts
            layer_fs = stats.writable_fs
        else:
            upper = self._place.writable_layer(sandbox.id, container.id)
            used, inodes = tree_usage(upper)
            layer_fs = capacity_of(upper)
        if stats is None:
            return ContainerUsage(
                timestamp=time.time_ns(),
                writable_layer_bytes=used,
                writable_layer_inodes=inodes,
                layer_fs=layer_fs,
            )
        return ContainerUsage(
            timestamp=stats.timestamp_ns or time.time_ns(),
            cpu_usage_core_nano_seconds=stats.cpu_usage_ns,
            memory_working_set_bytes=stats.memory_working_set_bytes,
            memory_usage_bytes=stats.memory_usage_bytes,
            memory_rss_bytes=stats.memory_rss_bytes,
            writable_layer_bytes=used,
            writable_layer_inodes=inodes,
            process_count=stats.pids,
            counters=stats.counters,
            layer_fs=layer_fs,
        )

    # ---- streaming ----------------------------------------------------------------------

    def _running_link(self, sandbox: SandboxRecord) -> AgentLink:
        if not self._place.agent_running(sandbox.id):
            raise FailedPrecondition(f"sandbox {sandbox.id}: {self._place.down_message()}")
        return self.link(sandbox)

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        """Raises FailedPrecondition (agent gone), AgentUnavailable, the agent's errors."""
        link = self._running_link(sandbox)
        return streams.AgentExecSession(
            link.client, streams.router_for(link), container.id, cmd, tty=tty, stdin=stdin
        )

    def attach_supported(self) -> bool:
        return True

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        """Raises FailedPrecondition (agent gone), AgentUnavailable. The agent knows the
        container's own tty and stdin; ``tty`` and ``stdin`` are kubelet's echo of them."""
        link = self._running_link(sandbox)
        return streams.AgentAttachSession(link.client, streams.router_for(link), container.id)

    def port_connection(self, sandbox: SandboxRecord, port: int) -> streams.AgentPortConnection:
        """A TCP connection the agent opens to 127.0.0.1:``port`` in its network namespace."""
        link = self._running_link(sandbox)
        return streams.AgentPortConnection(link.client, streams.router_for(link), port)
