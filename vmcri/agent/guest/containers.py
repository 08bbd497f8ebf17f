"""Containers inside the guest: rootfs assembly, runc lifecycle, exits, stats.

Per container ``<id>``::

    <state>/containers/<id>/            bundle: config.json, rootfs/ (overlay mount point), runc.log
    <state>/containers/<id>/execs/      pid and process files of execs
    <scratch>/<id>/upper, work          overlay upper and work dirs on guest-local storage
                                        (the pod's writable disk when it has one)
    /run/vmcri/layers/<lun>             a read-only layer disk, mounted once (``disks.py``)

Life cycle (``status``), changed only by this module::

    CREATED --start--> RUNNING --init exits--> EXITED --remove--> (gone)
       |                                          ^
       +------------- init killed ----------------+

The container's init becomes the agent's child when ``runc create`` exits (PID 1 or subreaper),
so a monitor thread per container waits for it, drains its output and then publishes one
ContainerExited event (exit code, OOM flag from the cgroup's oom_kill counter, finish time).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from vmcri.agent.guest.cgroups import CgroupReader, counters_message
from vmcri.agent.guest.disks import GuestDisks
from vmcri.agent.guest.events import EventLog
from vmcri.agent.guest.idmap import IdMapper, IdMaps, mapped_owner, spec_id_maps
from vmcri.agent.guest.mounts import Mounter
from vmcri.agent.guest.processes import Reaper, Waiter
from vmcri.agent.guest.runc import Runc
from vmcri.agent.guest.stdio import ConsoleSocket, Emit, Stdio, pump_pipes, pump_pty
from vmcri.agent.guest.userns_net import open_to_the_pods_users
from vmcri.agent.guest.volumes import read_termination_message, termination_log_of
from vmcri.api import agent_pb2
from vmcri.errors import (
    AlreadyExists,
    FailedPrecondition,
    HostCommandError,
    InvalidArgument,
    NotFound,
)

CLONES = "idmapped"  # below the bundle: ID-mapped clones staged for runc (``idmap.py``)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_LOWERDIRS = 128
OUTPUT_DRAIN_S = 2.0
"""How long an exit waits for the last output: a grandchild may hold the pipes open."""


class GuestPaths(NamedTuple):
    state: Path
    scratch: Path
    sockets: Path | None = None
    """Where runc's console sockets go (default ``<state>/sockets``): a unix socket path
    ends at 107 bytes, and an agent on a host may have a deep state directory."""

    def console_socket(self, name: str) -> Path:
        directory = self.sockets or self.state / "sockets"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return directory / name

    def bundle(self, container_id: str) -> Path:
        return self.state / "containers" / container_id

    def scratch_of(self, container_id: str) -> Path:
        return self.scratch / container_id


class Container:
    """One container's record. A plain class, like the other records the agent loads at
    start-up: ``dataclasses`` (and the ``inspect`` it imports) cost ~0.1 s under emulation."""

    def __init__(self, container_id: str, bundle: Path, scratch: Path, cgroup_path: str) -> None:
        self.container_id = container_id
        self.bundle = bundle
        self.scratch = scratch
        self.cgroup_path = cgroup_path
        self.root_path = str(bundle / "rootfs")
        """What runc gets as root.path: the overlay below the bundle, or the host's rootfs."""
        self.status: int = agent_pb2.CONTAINER_STATUS_UNKNOWN
        self.pid = 0
        self.exit_code = 0
        self.oom_killed = False
        self.created_at_ns = 0
        self.started_at_ns = 0
        self.finished_at_ns = 0
        self.stdio = Stdio()
        self.stdin_once = False
        self.exited = threading.Event()
        self.execs: dict[str, object] = {}
        self.process: dict[str, object] = {}
        self.termination_log = ""
        """The guest file kubelet's termination-log is, when it lives in the guest."""
        """The OCI process of its config.json, which every exec copies (exec_process.py);
        kept from the spec the agent wrote, never read back from the bundle."""

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    def to_proto(self) -> agent_pb2.ContainerState:
        return agent_pb2.ContainerState(
            container_id=self.container_id,
            status=self.status,  # type: ignore[arg-type]
            pid=self.pid,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            created_at_ns=self.created_at_ns,
            started_at_ns=self.started_at_ns,
            finished_at_ns=self.finished_at_ns,
        )


def check_id(value: str, what: str = "container_id") -> str:
    """Raises InvalidArgument unless ``value`` is a safe id (also a path component)."""
    if not ID_RE.match(value):
        raise InvalidArgument(f"{what} {value[:80]!r} must match {ID_RE.pattern}")
    return value


class ContainerManager:
    def __init__(
        self,
        *,
        runc: Runc,
        reaper: Reaper,
        events: EventLog,
        mounter: Mounter,
        cgroups: CgroupReader,
        paths: GuestPaths,
        clock: Callable[[], int] = time.time_ns,
        disks: GuestDisks | None = None,
        idmapper: IdMapper | None = None,
        proc_sys: Path | None = None,
    ) -> None:
        """``idmapper``: makes the ID-mapped mounts a user-namespaced container needs
        (``idmap.py``); without it, such a container is refused. ``proc_sys``: the guest's
        sysctls, opened to such a container's users (``userns_net.py``)."""
        self.runc = runc
        self.disks = disks
        self.idmapper = idmapper
        self.proc_sys = proc_sys
        self.reaper = reaper
        self.events = events
        self.mounter = mounter
        self.cgroups = cgroups
        self.paths = paths
        self.clock = clock
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}

    # ---- lookup -------------------------------------------------------------------------------

    def get(self, container_id: str) -> Container:
        """Raises NotFound."""
        with self._lock:
            container = self._containers.get(container_id)
        if container is None or container.status == agent_pb2.CONTAINER_STATUS_UNKNOWN:
            raise NotFound(f"container {container_id[:80]!r} not found")
        return container

    def all(self) -> list[Container]:
        with self._lock:
            return [
                c
                for c in self._containers.values()
                if c.status != agent_pb2.CONTAINER_STATUS_UNKNOWN
            ]

    # ---- create -------------------------------------------------------------------------------

    def create(self, req: agent_pb2.CreateContainerRequest) -> Container:
        """Assemble the rootfs, write the bundle and ``runc create`` the container.

        Raises:
            InvalidArgument: bad id, spec, lowerdirs.
            AlreadyExists: the id is taken.
            HostCommandError: mount or runc failed (everything made so far is undone).
        """
        cid = check_id(req.container_id)
        spec = _parse_spec(req.oci_spec)
        lowerdirs = _check_lowerdirs(req.lowerdirs, req.rootfs_path, req.layer_luns)
        cgroup_path = _cgroup_path(spec, cid)
        container = Container(
            cid, self.paths.bundle(cid), self.paths.scratch_of(cid), cgroup_path=cgroup_path
        )
        container.stdin_once = bool(req.stdin and req.stdin_once)
        with self._lock:
            if cid in self._containers:
                raise AlreadyExists(f"container {cid} already exists")
            self._containers[cid] = container
        try:
            self._create(container, req, spec, lowerdirs)
        except BaseException:
            self._teardown(container)
            with self._lock:
                self._containers.pop(cid, None)
            raise
        return container

    def _create(
        self,
        container: Container,
        req: agent_pb2.CreateContainerRequest,
        spec: dict[str, object],
        lowerdirs: list[str],
    ) -> None:
        cid = container.container_id
        if container.bundle.exists() or container.scratch.exists():
            # Leftovers of an earlier agent: not ours to reuse.
            self._teardown(container)
        container.bundle.mkdir(parents=True, mode=0o700)
        container.rootfs.mkdir()
        (container.bundle / "execs").mkdir()
        maps = spec_id_maps(spec)
        if maps is not None and (self.idmapper is None or req.rootfs_path):
            raise FailedPrecondition(
                "oci_spec.linux.uidMappings: this agent cannot ID-map the container's files"
            )
        if req.layer_luns:
            if self.disks is None:
                raise FailedPrecondition("layer_luns: this agent mounts no disk")
            lowerdirs = self.disks.mount_layers(req.layer_luns)
        if maps is None:
            self._mount_rootfs(container, lowerdirs, req.rootfs_path)
        else:
            self._mount_mapped(container, lowerdirs, spec, maps)
            open_to_the_pods_users(spec, self.proc_sys)
        process = spec["process"]
        assert isinstance(process, dict)
        process["terminal"] = bool(req.tty)
        container.process = process
        container.termination_log = termination_log_of(spec, self.paths.state / "volumes")
        root = spec.get("root")
        readonly = bool(root.get("readonly", False)) if isinstance(root, dict) else False
        spec["root"] = {"path": container.root_path, "readonly": readonly}
        linux = spec.setdefault("linux", {})
        assert isinstance(linux, dict)
        linux["cgroupsPath"] = container.cgroup_path
        (container.bundle / "config.json").write_text(json.dumps(spec))

        emit = self._output_emitter(cid, "")
        pid_file = container.bundle / "init.pid"
        opened: list[int] = []
        try:
            if req.tty:
                console = ConsoleSocket(self.paths.console_socket(f"{cid[:16]}.tty"))
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                opened.append(null)
                try:
                    self.runc.create(
                        cid, container.bundle, pid_file=pid_file,
                        log=container.bundle / "runc.log",
                        stdin=null, stdout=null, stderr=null, console_socket=console.path,
                    )  # fmt: skip
                    master = console.master()
                finally:
                    console.close()
                pump_pty(container.stdio, master, emit, name=f"tty-{cid}")
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                opened += [out_w, err_w]
                if req.stdin:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    opened.append(in_r)
                    container.stdio.stdin_fd = in_w
                else:
                    in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    opened.append(in_r)
                try:
                    self.runc.create(
                        cid, container.bundle, pid_file=pid_file,
                        log=container.bundle / "runc.log",
                        stdin=in_r, stdout=out_w, stderr=err_w,
                    )  # fmt: skip
                except BaseException:
                    opened += [out_r, err_r]
                    raise
                # Close our copies of the container's ends, so EOF comes when it exits.
                for fd in opened:
                    os.close(fd)
                opened.clear()
                pump_pipes(container.stdio, out_r, err_r, emit, name=f"out-{cid}")
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # runc bound the staged volume clones into the container's mount namespace.
        self._detach_clones(container)
        try:
            container.pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise HostCommandError(f"runc create {cid} wrote no pid file: {exc}") from exc
        container.created_at_ns = self.clock()
        container.status = agent_pb2.CONTAINER_STATUS_CREATED
        waiter = self.reaper.watch(container.pid)
        threading.Thread(
            target=self._monitor, args=(container, waiter), name=f"exit-{cid}", daemon=True
        ).start()

    def _mount_rootfs(
        self,
        container: Container,
        lowerdirs: list[str],
        assembled: str,
        root: tuple[int, int] | None = None,
    ) -> None:
        """``root``: the guest IDs that own the writable layer's top (before the mount:
        overlayfs takes its root's owner from there)."""
        if assembled:
            # The host assembled it (and owns its mounts): runc takes it as it is, and makes
            # it a mount point of its own in the container's mount namespace.
            container.root_path = assembled
            return
        upper = container.scratch / "upper"
        work = container.scratch / "work"
        upper.mkdir(parents=True, mode=0o755)
        work.mkdir(mode=0o700)
        if root is not None:
            os.chown(upper, *root)
        data = f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work}"
        if len(data) >= 4000:
            raise InvalidArgument(f"lowerdirs: {len(lowerdirs)} paths overflow the mount options")
        self.mounter.mount("overlay", str(container.rootfs), "overlay", 0, data)

    def _mount_mapped(
        self, container: Container, lowerdirs: list[str], spec: dict[str, object], maps: IdMaps
    ) -> None:
        """The rootfs over ID-mapped clones of the layers, and the guest-made volumes
        ID-mapped (or given to the pod's root where their file system cannot be), for a
        container that makes its own user namespace (``idmap.py``)."""
        assert self.idmapper is not None
        root = maps.root()
        if root is None:
            raise InvalidArgument("oci_spec.linux.uidMappings: the container's root is unmapped")
        # runc sets the container up as its root, which is not the guest's: it must pass
        # every directory down to the rootfs (it sees nothing through them but that path).
        for directory in (self.paths.state, container.bundle.parent, container.bundle):
            os.chmod(directory, stat.S_IMODE(os.stat(directory).st_mode) | stat.S_IXOTH)
        clones = container.bundle / CLONES
        clones.mkdir(mode=0o700)
        with self.idmapper.userns(maps) as userns:
            mapped = []
            for i, layer in enumerate(lowerdirs):
                point = clones / f"layer{i}"
                point.mkdir()
                self.idmapper.map_tree(layer, str(point), userns, False)
                mapped.append(str(point))
            self._mount_rootfs(container, mapped, "", root)
            self._detach_clones(container)  # overlayfs keeps clones of its own
            self._map_volumes(container, spec, maps, userns)

    def _map_volumes(
        self, container: Container, spec: dict[str, object], maps: IdMaps, userns: str
    ) -> None:
        """Each bind of a volume the guest made (an emptyDir) becomes a bind of an
        ID-mapped clone staged in the bundle; on a file system that cannot be ID-mapped
        (tmpfs before Linux 6.3) the volume's top gets its mapped owner instead."""
        assert self.idmapper is not None
        mounts = spec.get("mounts")
        tops = (str(self.paths.scratch / "volumes"), str(self.paths.state / "empty-dirs"))
        for i, mount in enumerate(mounts if isinstance(mounts, list) else ()):
            source = mount.get("source") if isinstance(mount, dict) else None
            if mount.get("type") != "bind" or not isinstance(source, str):
                continue
            if os.path.dirname(os.path.normpath(source)) not in tops:
                continue
            point = container.bundle / CLONES / f"mount{i}"
            point.mkdir()
            try:
                self.idmapper.map_tree(source, str(point), userns, True)
            except FailedPrecondition:
                point.rmdir()
                st = os.lstat(source)
                os.chown(source, *mapped_owner(st.st_uid, st.st_gid, maps), follow_symlinks=False)
                continue
            mount["source"] = str(point)

    def _detach_clones(self, container: Container) -> None:
        """Unmount every staged clone (its mounts elsewhere stay). Raises HostCommandError."""
        clones = container.bundle / CLONES
        for point in sorted(clones.iterdir()) if clones.is_dir() else ():
            if self.mounter.is_mounted(str(point)):
                self.mounter.umount(str(point), detach=True)

    def _output_emitter(self, container_id: str, exec_id: str) -> Emit:
        def emit(stream: int, data: bytes, eof: bool) -> None:
            def fill(event: agent_pb2.Event) -> None:
                event.output.container_id = container_id
                event.output.exec_id = exec_id
                event.output.stream = stream  # type: ignore[assignment]
                event.output.data = data
                event.output.eof = eof

            self.events.append(fill)

        return emit

    def _monitor(self, container: Container, waiter: Waiter) -> None:
        waiter.wait()
        code = waiter.exit_code
        container.stdio.join_output(OUTPUT_DRAIN_S)
        oom = self.cgroups.oom_kills(container.cgroup_path) > 0
        container.exit_code = code
        container.oom_killed = oom
        container.finished_at_ns = self.clock()
        container.status = agent_pb2.CONTAINER_STATUS_EXITED
        container.stdio.close()
        message = read_termination_message(container.termination_log)

        def fill(event: agent_pb2.Event) -> None:
            event.container_exited.container_id = container.container_id
            event.container_exited.exit_code = code
            event.container_exited.oom_killed = oom
            event.container_exited.finished_at_ns = container.finished_at_ns
            event.container_exited.termination_message = message

        self.events.append(fill)
        container.exited.set()

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, container_id: str) -> Container:
        """Raises NotFound, FailedPrecondition (not CREATED), HostCommandError."""
        container = self.get(container_id)
        if container.status != agent_pb2.CONTAINER_STATUS_CREATED:
            raise FailedPrecondition(f"container {container_id} is not in the created state")
        self.runc.start(container_id)
        container.started_at_ns = self.clock()
        if container.status == agent_pb2.CONTAINER_STATUS_CREATED:
            container.status = agent_pb2.CONTAINER_STATUS_RUNNING
        return container

    def signal(self, container_id: str, signal: int) -> None:
        """Raises NotFound, InvalidArgument (bad signal), HostCommandError.

        Signalling an exited container is a no-op: the caller cannot tell a race from a bug.
        """
        container = self.get(container_id)
        if not 1 <= signal <= 64:
            raise InvalidArgument(f"signal {signal} is not between 1 and 64")
        if container.exited.is_set():
            return
        try:
            self.runc.kill(container_id, signal)
        except (NotFound, HostCommandError):
            if not container.exited.wait(1.0):
                raise

    def wait(self, container_id: str) -> Container:
        """Block until the container exited. Raises NotFound."""
        container = self.get(container_id)
        container.exited.wait()
        return container

    def remove(self, container_id: str) -> None:
        """Kill, delete, unmount, remove dirs. Unknown ids are already removed (no error).

        Raises:
            InvalidArgument: bad id.
            HostCommandError: runc delete or an unmount failed (retry may succeed).
        """
        check_id(container_id)
        with self._lock:
            container = self._containers.get(container_id)
        if container is None:
            container = Container(
                container_id,
                self.paths.bundle(container_id),
                self.paths.scratch_of(container_id),
                cgroup_path="",
            )
        self.runc.delete(container_id)
        if container.pid and not container.exited.wait(5.0):
            raise HostCommandError(f"container {container_id} did not exit after runc delete")
        for session in list(container.execs.values()):
            with contextlib.suppress(Exception):
                session.kill()  # type: ignore[attr-defined]
        container.stdio.close()
        self._teardown(container)
        with self._lock:
            self._containers.pop(container_id, None)

    def _teardown(self, container: Container) -> None:
        """Undo the mount and the dirs; each step tolerates "already gone"."""
        # Imported here, not with this module: shutil pulls in bz2 and lzma, ~70 ms of the
        # agent's start-up under emulation, and only a removal needs it.
        import shutil

        rootfs = str(container.rootfs)
        if os.path.ismount(rootfs):
            try:
                self.mounter.umount(rootfs)
            except HostCommandError:
                self.mounter.umount(rootfs, detach=True)
        if os.path.ismount(rootfs):
            # Never delete through a mount: what is below belongs to the image or the host.
            raise HostCommandError(f"container {container.container_id}: rootfs still mounted")
        self._detach_clones(container)
        clones = container.bundle / CLONES
        if any(os.path.ismount(p) for p in clones.iterdir()) if clones.is_dir() else False:
            raise HostCommandError(f"container {container.container_id}: a clone is mounted")
        shutil.rmtree(container.bundle, ignore_errors=True)
        shutil.rmtree(container.scratch, ignore_errors=True)
        if container.bundle.exists() or container.scratch.exists():
            raise HostCommandError(f"cannot remove the dirs of container {container.container_id}")

    # ---- resources ----------------------------------------------------------------------------

    def stats(self, container_ids: Iterable[str]) -> list[agent_pb2.ContainerStats]:
        """Raises NotFound for an unknown id (all containers if ``container_ids`` is empty)."""
        ids = list(container_ids)
        containers = [self.get(cid) for cid in ids] if ids else self.all()
        result = []
        for container in containers:
            stats = self.cgroups.stats(container.cgroup_path)
            message = agent_pb2.ContainerStats(
                container_id=container.container_id,
                cpu_usage_ns=stats.cpu_usage_ns,
                memory_usage_bytes=stats.memory_usage_bytes,
                memory_working_set_bytes=stats.memory_working_set_bytes,
                memory_rss_bytes=stats.memory_rss_bytes,
                pids=stats.pids,
                oom_kills=stats.oom_kills,
                timestamp_ns=stats.timestamp_ns,
                counters=counters_message(stats),
            )
            if container.root_path == str(container.rootfs):  # the agent's own overlay
                upper = container.scratch / "upper"
                used, inodes = tree_usage(upper)
                message.writable_layer_bytes = used
                message.writable_layer_inodes = inodes
                found = writable_fs(upper)
                if found is not None:
                    message.writable_fs.CopyFrom(found)
            result.append(message)
        return result

    def update(self, container_id: str, resources_json: bytes) -> None:
        """Raises NotFound, InvalidArgument (not a JSON object), HostCommandError."""
        self.get(container_id)
        try:
            value = json.loads(resources_json)
        except ValueError as exc:
            raise InvalidArgument(f"resources_json is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InvalidArgument("resources_json must be a JSON object")
        self.runc.update(container_id, json.dumps(value).encode())


MAX_USAGE_ENTRIES = 100_000  # a writable layer with more is reported as far as counted


def writable_fs(
    upper: Path, sys_dev_block: Path = Path("/sys/dev/block")
) -> agent_pb2.WritableFs | None:
    """The file system ``upper`` is on (statvfs), and the name of the disk it is on ("" when
    it is on no block device, as a tmpfs); None when it cannot be read."""
    try:
        vfs = os.statvfs(upper)
        dev = os.stat(upper).st_dev
    except OSError:
        return None
    try:
        link = os.readlink(sys_dev_block / f"{os.major(dev)}:{os.minor(dev)}")
        device = os.path.basename(link)
    except OSError:
        device = ""
    return agent_pb2.WritableFs(
        device=device,
        size_bytes=vfs.f_blocks * vfs.f_frsize,
        inodes_total=vfs.f_files,
        inodes_free=vfs.f_favail,
    )


def tree_usage(top: Path) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes below ``top``, hard links once, symlinks never
    followed; at most MAX_USAGE_ENTRIES entries are counted (a stats call stays bounded)."""
    seen: set[int] = set()
    used = 0
    pending = [str(top)]
    while pending and len(seen) < MAX_USAGE_ENTRIES:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    used += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return used, len(seen)


def _parse_spec(raw: bytes) -> dict[str, object]:
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"oci_spec is not JSON: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("process"), dict):
        raise InvalidArgument("oci_spec must be a JSON object with a process object")
    linux = spec.get("linux", {})
    if not isinstance(linux, dict):
        raise InvalidArgument("oci_spec.linux must be an object")
    return spec


def _check_lowerdirs(
    lowerdirs: Iterable[str], rootfs_path: str, layer_luns: Iterable[int] = ()
) -> list[str]:
    dirs = list(lowerdirs)
    luns = list(layer_luns)
    if sum((bool(dirs), bool(rootfs_path), bool(luns))) != 1:
        raise InvalidArgument("give exactly one of lowerdirs, rootfs_path and layer_luns")
    if len(dirs) > MAX_LOWERDIRS or len(luns) > MAX_LOWERDIRS:
        raise InvalidArgument(f"lowerdirs/layer_luns: more than {MAX_LOWERDIRS} layers")
    for path in [*dirs, rootfs_path] if rootfs_path else dirs:
        if not path.startswith("/") or any(c in path for c in ":,\n\0") or "/../" in path + "/":
            raise InvalidArgument(f"lowerdirs/rootfs_path: {path[:200]!r} is not a clean path")
        if not os.path.isdir(path):
            raise InvalidArgument(f"lowerdirs/rootfs_path: {path[:200]!r} is not a directory")
    return dirs


def _cgroup_path(spec: dict[str, object], container_id: str) -> str:
    """The spec's absolute cgroupsPath, or ``/vmcri/<id>`` (systemd-style paths do not apply)."""
    linux = spec.get("linux", {})
    path = linux.get("cgroupsPath", "") if isinstance(linux, dict) else ""
    if isinstance(path, str) and path.startswith("/") and ":" not in path and ".." not in path:
        return path
    return f"/vmcri/{container_id}"
