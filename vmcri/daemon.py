"""The vmcri daemon: wires store, images, handlers and the gRPC server, and runs them.

Start-up order matters: take the state-dir lock (one daemon per state dir), load
the records, build the backends, reconcile records with what really runs, and
only then open the socket. Shutdown stops accepting RPCs, lets in-flight ones
finish, and leaves every sandbox and container running.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vmcri.config import Config
from vmcri.control import lock_path
from vmcri.errors import ConfigError, VmcriError
from vmcri.handlers.registry import BackendContext, HandlerRegistry
from vmcri.handlers.state_dirs import BACKENDS_DIR, check_no_kind_dir_pods, handler_dirs
from vmcri.host import sdnotify
from vmcri.host.lock_file import open_lock_file
from vmcri.host.meminfo import host_memory_bytes
from vmcri.model import Resources
from vmcri.network.service import PodNetworking
from vmcri.nri.hooks import NoNri, NriHooks
from vmcri.runtime.backend_records import BackendRecords
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import RuntimeNetwork, Services
from vmcri.runtime.events import EventBus
from vmcri.runtime.exits import ContainerExits
from vmcri.runtime.info import RuntimeInfo
from vmcri.runtime.pods import PodService
from vmcri.store.store import Store

if TYPE_CHECKING:
    from vmcri.images.service import ImageService
    from vmcri.metrics.server import MetricsServer
    from vmcri.streaming.service import StreamingService

log = logging.getLogger(__name__)

REAPER_INTERVAL_S = 1.0
RECONCILE_WAIT_S = 30.0
"""At start-up, how long to wait for every pod's first check before serving (one hung
guest cannot keep the daemon from starting; its pod is checked again by the reaper)."""


class StateLock:
    """An exclusive flock on ``<state>/lock/vmcri.lock``, held for the daemon's life.

    The file and its directory are private (vmcri.host.lock_file): a lock another user
    could open, they could hold, and no daemon could start on this state dir.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = lock_path(state_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises ConfigError when another daemon holds the lock, or it cannot be opened."""
        try:
            fd = open_lock_file(self.path)
        except OSError as exc:
            raise ConfigError(f"state dir lock {self.path}: cannot open it: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"state dir {self.path.parent.parent} is in use by another vmcri daemon "
                f"(pid {holder})"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for a new listening socket.

    A socket file nobody listens on is stale and removed; a live one means another
    server owns it, and we refuse rather than steal it. Raises ConfigError.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"socket: cannot create {path.parent}: {exc.strerror}") from exc
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise ConfigError(f"socket: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ConfigError(f"socket: cannot check {path}: {exc.strerror}") from exc
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ConfigError(f"socket: {path} is in use by a running server; refusing to take it over")


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = StateLock(config.state_dir)
        self._stop = threading.Event()
        self._server: object | None = None
        self._reaper: threading.Thread | None = None
        self.image_service: ImageService | None = None
        # Made first, as the backends need them: the records, the exit folding, and the
        # backends' view of both. Services, complete, follows the handlers (start).
        self._store = Store(config.root_dir)
        self._events = EventBus()
        # NRI plugins hear of every stop; the hooks are made with the handlers (start).
        self._nri: NriHooks = NoNri()
        self._exits = ContainerExits(
            self._store,
            self._events,
            time.time_ns,
            stopped=lambda container: self._nri.container_stopped(container),
        )
        self._records = BackendRecords(self._store, self._exits)
        network = RuntimeNetwork()
        self._network = network
        self._networking = PodNetworking(config.network, config.state_dir, lambda: network.pod_cidr)
        self.streaming: StreamingService | None = None
        self.metrics: MetricsServer | None = None
        # Taken before any backend starts a child process, so none inherits the socket.
        self._notifier = sdnotify.Notifier.from_environment()

    def start(self) -> None:
        """Bring everything up and listen. Raises ConfigError or VmcriError on failure."""
        self._lock.acquire()
        try:
            self._start_locked()
        except BaseException:
            if self.metrics is not None:
                self.metrics.stop()
            self._lock.release()
            raise

    def _start_locked(self) -> None:
        from vmcri.cri.rpc_common import RuntimeServices
        from vmcri.cri.server import build_server  # grpc is only needed by the daemon
        from vmcri.images.service import ImageService
        from vmcri.runtime.checkpoints.service import CheckpointService

        config = self.config
        for directory in (config.root_dir, config.state_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        store = self._store
        store.load()
        from vmcri.images.trust.verifier import ImageTrust, TrustSettings

        trust = ImageTrust.load(TrustSettings.of(config.image_trust))
        log.info("image signature policy: %s", trust.policy.summary())
        self.image_service = ImageService(
            config.root_dir,
            Path(config.registries_conf),
            in_use=self._images_in_use,
            trust=trust,
        )
        check_no_kind_dir_pods(config, store.sandboxes.list(), store.containers_of)
        handlers = HandlerRegistry.from_config(config, self._backend_context)
        # NRI plugins may ask for other containers' updates and evictions, which the
        # container service (made below, with the hooks in its Services) carries out.
        self._nri = self._nri_hooks(
            handlers,
            lambda container_id, resources: containers.update_resources(container_id, resources),
            lambda container_id, deadline: containers.stop(container_id, 0, deadline),
        )
        services = Services(
            config=config,
            store=store,
            events=self._events,
            exits=self._exits,
            images=self.image_service,
            handlers=handlers,
            network=self._network,
            networking=self._networking,
            memory_bound=host_memory_bytes(),
            nri=self._nri,
        )
        containers = ContainerService(services)
        pods = PodService(services, containers)
        self._reconcile(services, pods, containers)
        self._start_nri()
        from vmcri.streaming.service import StreamingService

        self.streaming = StreamingService(services, containers, config.streaming)
        self.streaming.start()
        self._start_metrics()
        socket_path = Path(config.socket)
        claim_socket_path(socket_path)
        runtime = RuntimeServices(
            pods=pods,
            containers=containers,
            info=RuntimeInfo(services),
            events=self._events,
            streaming=self.streaming,
            checkpoints=CheckpointService(services, pods, containers),
        )
        server = build_server(runtime, self.image_service, socket_path, config.cri)
        server.start()
        os.chmod(socket_path, 0o660)
        self._server = server
        self._reaper = threading.Thread(
            target=self._reap, args=(containers,), name="reaper", daemon=True
        )
        self._reaper.start()
        log.info("vmcri serving on %s", socket_path)
        self._notifier.ready(f"serving on {socket_path}")

    def _nri_hooks(
        self,
        handlers: HandlerRegistry,
        update: Callable[[str, Resources], None],
        evict: Callable[[str, float], None],
    ) -> NriHooks:
        """The NRI adaptation when enabled ([nri] enable), else hooks that do nothing."""
        if not self.config.nri.enable:
            return NoNri()
        from vmcri.nri.adaptation import Adaptation

        return Adaptation(
            self.config.nri,
            self._store,
            update,
            evict,
            lambda sandbox: handlers.backend_for(sandbox).features().in_guest,
        )

    def _start_nri(self) -> None:
        """NRI plugins, started and synchronized before kubelet can call, so that no pod
        is created that a plugin has not seen."""
        try:
            self._nri.start()
        except OSError as exc:
            self._nri.stop()
            raise ConfigError(f"nri.socket_path: cannot listen on it: {exc}") from exc

    def _start_metrics(self) -> None:
        if not self.config.metrics.address:
            return
        from vmcri.handlers.vm.pool_metrics import PoolCollector
        from vmcri.metrics.collector import LayerSpaceCollector, RunningCollector
        from vmcri.metrics.server import MetricsLimits, MetricsServer

        running = RunningCollector(self._store, list(self.config.runtimes))
        layers = LayerSpaceCollector(self.config.root_dir / BACKENDS_DIR)
        vm_handlers = [n for n, h in self.config.runtimes.items() if h.backend == "vm"]
        pools = PoolCollector(self.config.root_dir / BACKENDS_DIR, vm_handlers)
        metrics = self.config.metrics
        self.metrics = MetricsServer(
            metrics.address,
            metrics.allow_non_loopback,
            [running, layers, pools],
            MetricsLimits(metrics.max_connections, metrics.request_timeout_s),
        )
        self.metrics.start()

    def _backend_context(self, handler: str, backend: str) -> BackendContext:
        dirs = handler_dirs(self.config, handler)
        return BackendContext(
            config=self.config, root=dirs.root, state=dirs.state, services=self._records
        )

    def _images_in_use(self) -> set[str]:
        """Image IDs RemoveImage must refuse: containers' own images and their image volumes."""
        used: set[str] = set()
        for container in self._store.containers.list():
            used.add(container.image_id)
            used.update(v.image_id for v in container.image_volumes)
        return used

    def _reconcile(
        self, services: Services, pods: PodService, containers: ContainerService
    ) -> None:
        """After a restart: compare records with what runs; kill nothing. The exits kept
        on disk that the daemon before did not fold come first, then each pod is checked
        (which reconnects its agent: the events it kept flow again)."""
        containers.recover_exits()
        for sandbox in services.store.sandboxes.list():
            try:
                pods.refresh(sandbox)
                pods.check_network(sandbox.id)
            except VmcriError as exc:
                log.error("sandbox %s: cannot check after restart: %s", sandbox.id, exc.message)
        containers.refresh_all(wait_s=RECONCILE_WAIT_S)
        if services.networking is not None:
            services.networking.gc(services.store.sandboxes.list())

    def _reap(self, containers: ContainerService) -> None:
        while not self._stop.wait(REAPER_INTERVAL_S):
            containers.refresh_all()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop serving; in-flight RPCs get ``grace_s`` to finish. Sandboxes keep running."""
        self._stop.set()
        self._notifier.stopping()
        self._events.close()
        if self._server is not None:
            self._server.stop(grace_s).wait()  # type: ignore[attr-defined]
            Path(self.config.socket).unlink(missing_ok=True)
        if self.streaming is not None:
            self.streaming.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self._nri.stop()
        self._lock.release()
        log.info("vmcri stopped")
