"""VM templates: a guest booted once per shape and saved, restored for every later pod.

A template is a VM of one *shape* (guest image version, hypervisor version, machine,
accelerator, memory, vCPUs, share driver) booted with no pod in it: no share mounted,
no NIC, nothing pod-specific. Once its agent answers, it is saved, and every pod of
that shape starts by restoring it instead of booting (see ARCHITECTURE.md, "VM
templates")::

    <templates>/<key>/          key: a hash of the shape; never written once committed
        meta.json               the shape, the state's size and SHA-256
        memory                  guest RAM (the template VM mapped it MAP_SHARED)
        state                   QEMU's device state, migrated with x-ignore-shared

A template is verified before each use (shape, sizes, the state's digest); a broken one
is discarded and rebuilt in the background, and the pod cold-boots meanwhile. Builds go
to a staging directory renamed into place, so a clone never maps a file being written;
a discarded template is renamed away before it is deleted (a clone keeps its mapping).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vmcri.errors import TemplateUnusable, VmcriError
from vmcri.handlers.vm.designer import Hardware
from vmcri.host.lock_file import open_lock_file

log = logging.getLogger(__name__)

FORMAT = 2  # bump when what a template holds changes (devices, cmdline, agent protocol)
MIB = 1024 * 1024
MAX_SHAPES = 4  # templates kept; other shapes cold-boot
MAX_BUILD_FAILURES = 2  # per shape and daemon run; then that shape always cold-boots
META = "meta.json"


@dataclass(frozen=True)
class Shape:
    """Everything a saved VM depends on: a restore needs the same in every field."""

    guest_version: str
    hypervisor: str
    domain_type: str
    machine: str
    memory_mib: int
    vcpus: int
    tcg_cache_mib: int
    share_driver: str
    # What a clone can grow to (vCPU hotplug, virtio-mem): the template has the devices.
    max_vcpus: int = 0
    hotplug_memory_mib: int = 0
    devices: str = ""  # digest of the domain XML with placeholder paths: same devices
    format: int = FORMAT

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def label(self) -> str:
        return f"{self.memory_mib} MiB/{self.vcpus} vCPU"

    def hardware(self) -> Hardware:
        """The machine a template of this shape, and every clone of it, is: a shape holds
        every field of ``Hardware`` (``template_vms.py`` makes it from one)."""
        return Hardware(**{f.name: getattr(self, f.name) for f in fields(Hardware)})


@dataclass(frozen=True)
class Template:
    shape: Shape
    directory: Path

    @property
    def memory(self) -> Path:
        return self.directory / "memory"

    @property
    def state(self) -> Path:
        return self.directory / "state"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _regular(path: Path) -> int:
    """The size of a regular file that is no symlink; raises TemplateUnusable."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise TemplateUnusable(f"{path}: {exc.strerror}") from exc
    if not path.is_file() or path.is_symlink():
        raise TemplateUnusable(f"{path}: not a regular file")
    return st.st_size


class TemplateStore:
    """Templates on disk, below one directory (under the root dir by default)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, shape: Shape) -> Path:
        return self.directory / shape.key()

    def verify(self, shape: Shape) -> Template:
        """The template of ``shape`` if it is complete and intact; raises TemplateUnusable."""
        template = Template(shape, self.path(shape))
        meta_path = template.directory / META
        if not template.directory.is_dir():
            raise TemplateUnusable(f"no template in {template.directory}")
        try:
            meta = json.loads(meta_path.read_text())
            recorded = Shape(**meta["shape"])
            state_bytes, state_sha = int(meta["state_bytes"]), str(meta["state_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TemplateUnusable(f"{meta_path}: unreadable ({exc})") from exc
        if recorded != shape:
            raise TemplateUnusable(f"{meta_path}: made for {recorded}, not {shape}")
        if _regular(template.memory) != shape.memory_mib * MIB:
            raise TemplateUnusable(f"{template.memory}: not {shape.memory_mib} MiB")
        if _regular(template.state) != state_bytes or _sha256(template.state) != state_sha:
            raise TemplateUnusable(f"{template.state}: size or SHA-256 differs from {META}")
        return template

    def staging(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.directory))

    def commit(self, shape: Shape, staging: Path) -> Template:
        """Seal a built template (memory and state in ``staging``) and move it into place."""
        state = staging / "state"
        meta = {
            "shape": asdict(shape),
            "state_bytes": state.stat().st_size,
            "state_sha256": _sha256(state),
        }
        (staging / META).write_text(json.dumps(meta, indent=1))
        for name in ("memory", "state", META):
            os.chmod(staging / name, 0o400)
        target = self.path(shape)
        self.discard(shape, "replaced")
        os.rename(staging, target)
        return Template(shape, target)

    def discard(self, shape: Shape, reason: str) -> None:
        """Remove the template of ``shape``; running clones keep their mapping of it."""
        target = self.path(shape)
        if target.exists():
            self.discard_path(target, f"{shape.label()}: {reason}")

    def sweep(self, current: Callable[[Shape], bool]) -> None:
        """Remove what builds killed half-way left, and templates that can no longer be
        used (``current`` says no: another guest image, hypervisor or device set)."""
        if not self.directory.is_dir():
            return
        with self.lock(blocking=False) as held:
            if not held:
                return  # another daemon is building here
            for entry in self.directory.iterdir():
                if entry.name.startswith((".staging-", ".discarded-")):
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.is_dir() and not entry.is_symlink():
                    try:
                        shape = Shape(**json.loads((entry / META).read_text())["shape"])
                    except (OSError, ValueError, KeyError, TypeError):
                        shape = None
                    if shape is None or entry.name != shape.key() or not current(shape):
                        self.discard_path(entry, "stale")

    def discard_path(self, target: Path, reason: str) -> None:
        graveyard = Path(tempfile.mkdtemp(prefix=".discarded-", dir=self.directory))
        with contextlib.suppress(FileNotFoundError):
            os.rename(target, graveyard / "t")
            log.info("VM template %s discarded: %s", target.name, reason)
        shutil.rmtree(graveyard, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, blocking: bool = True) -> Iterator[bool]:
        """Builds of daemons sharing the directory take turns (an flock on ``.lock``),
        a file only root can open (vmcri.host.lock_file): a user who could open it could
        hold it and stop every build."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_lock_file(self.directory / ".lock", dir_mode=None)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


BuildFn = Callable[[Shape, Path], None]  # boot a template VM of the shape, save it there


class Templates:
    """Which templates exist, and one background thread that builds missing ones."""

    def __init__(self, store: TemplateStore, build: BuildFn) -> None:
        self.store = store
        self._build = build
        self._lock = threading.Lock()
        self._wanted: list[Shape] = []
        self._failures: dict[Shape, int] = {}
        self._known: set[Shape] = set()
        self._building: Shape | None = None
        self._worker: threading.Thread | None = None
        self.restored = 0
        self.cold = 0

    def count(self, restored: bool) -> None:
        with self._lock:
            if restored:
                self.restored += 1
            else:
                self.cold += 1

    def get(self, shape: Shape) -> Template | None:
        """The verified template of ``shape``, or None (a build is then queued)."""
        try:
            template = self.store.verify(shape)
        except TemplateUnusable as exc:
            if self.store.path(shape).exists():
                log.warning("VM template %s is unusable, rebuilding it: %s", shape.label(), exc)
                self.store.discard(shape, exc.message)
            self.want(shape)
            return None
        except OSError as exc:
            log.warning("VM template %s cannot be read: %s", shape.label(), exc)
            return None
        with self._lock:
            self._known.add(shape)
        return template

    def broken(self, shape: Shape, reason: str) -> None:
        """A restore from the template failed: discard it, rebuild it (a bounded number
        of times)."""
        with self._lock:
            self._failures[shape] = self._failures.get(shape, 0) + 1
            self._known.discard(shape)
        self.store.discard(shape, reason)
        self.want(shape)

    def want(self, shape: Shape) -> None:
        """Queue a background build of ``shape`` unless it is queued, failed too often, or
        there are templates of enough shapes already."""
        with self._lock:
            if (
                shape in self._wanted
                or shape == self._building
                or self._failures.get(shape, 0) >= MAX_BUILD_FAILURES
                or len(self._known | set(self._wanted)) >= MAX_SHAPES
            ):
                return
            self._wanted.append(shape)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="vm-templates", daemon=True)
                self._worker.start()

    def wait(self, timeout_s: float) -> bool:
        """Wait until no build is queued or running; True if so within ``timeout_s``."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
            return not worker.is_alive()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._building = None
                    return
                shape = self._building = self._wanted.pop(0)
            self.ensure(shape)

    def ensure(self, shape: Shape) -> Template | None:
        """Build the template of ``shape`` now unless a verified one exists (another
        daemon sharing the directory may have just made it)."""
        with self.store.lock():
            try:
                template = self.store.verify(shape)
            except TemplateUnusable:
                template = None
            if template is None:
                staging = self.store.staging()
                try:
                    log.info("VM template %s: building", shape.label())
                    self._build(shape, staging)
                    template = self.store.commit(shape, staging)
                    log.info("VM template %s: ready in %s", shape.label(), template.directory)
                except Exception as exc:
                    with self._lock:
                        self._failures[shape] = self._failures.get(shape, 0) + 1
                    message = exc.message if isinstance(exc, VmcriError) else repr(exc)
                    log.warning("VM template %s: build failed: %s", shape.label(), message)
                    return None
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            self._known.add(shape)
        return template

    def summary(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the runtime's Status conditions."""
        with self._lock:
            known = sorted(s.label() for s in self._known)
            building = self._building.label() if self._building else ""
            restored, cold = self.restored, self.cold
        counts = f"{restored} pods restored, {cold} cold-booted"
        if known:
            return True, "TemplatesReady", f"templates: {', '.join(known)}; {counts}"
        if building or self._wanted:
            return False, "TemplateBuilding", f"building {building or 'a template'}; {counts}"
        return False, "NoTemplate", f"no usable template; {counts}"
