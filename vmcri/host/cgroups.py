"""A pod's cgroup on the host, for both handlers: where it is, and the few things done to it.

Where: kubelet sends ``PodSandboxConfig.linux.cgroup_parent``, the pod's own cgroup, in
the form of the cgroup driver vmcri announces in ``RuntimeConfig``: a path with
``cgroupfs`` (``/kubepods/burstable/pod<uid>``), a slice name with ``systemd``
(``kubepods-burstable-pod<uid>.slice``), which this module expands as runc and kubelet
do (``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice``).
A pod without one (crictl) gets ``<handler's cgroup_parent>/<sandbox id>``, which vmcri
makes and removes itself. Every handler asks :func:`pod_cgroup`; nothing else spells a
pod's cgroup path.

The hierarchies: on a v1 or hybrid host each controller (and systemd's named hierarchy,
and the cgroup2 mount at ``unified``) is a directory of ``/sys/fs/cgroup`` and the pod's
cgroup is ``<root>/<hierarchy>/<path>`` in each; on a pure v2 host it is ``<root>/<path>``.
Nothing here writes outside the cgroup file system, and the paths come from kubelet or
the configuration, never from a pod's guest or image.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vmcri.errors import InvalidArgument

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT_FIELD = "config.linux.cgroup_parent"
# A systemd slice name as runc's ExpandSlice takes it: no '/', ends in ".slice".
_SLICE = re.compile(r"^[A-Za-z0-9_.:\\-]+\.slice$")


@dataclass(frozen=True)
class PodCgroup:
    """A pod's cgroup: its absolute path in every hierarchy, and whether kubelet made it.

    ``vmcri_parent``: no cgroup_parent was sent, so the path is below the handler's own
    parent and vmcri makes and removes it. A cgroup_parent kubelet sent is kubelet's:
    vmcri only makes it when it is missing (and says so in the sandbox's record)."""

    path: str
    vmcri_parent: bool


def expand_slice(name: str) -> str:
    """A systemd slice name as a cgroup path: ``a-b-c.slice`` -> ``/a.slice/a-b.slice/a-b-c.slice``
    (runc's ``ExpandSlice``); ``-.slice`` is the root. Raises InvalidArgument."""
    if name == "-.slice":
        return "/"
    if not _SLICE.match(name) or "--" in name:
        raise InvalidArgument(f"{PARENT_FIELD}: {name!r} is not a systemd slice name")
    stem = name.removesuffix(".slice")
    if stem.startswith("-") or stem.endswith("-"):
        raise InvalidArgument(f"{PARENT_FIELD}: {name!r} is not a systemd slice name")
    path, prefix = "", ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def pod_cgroup(cgroup_parent: str, driver: str, default_parent: str, sandbox_id: str) -> PodCgroup:
    """The pod's cgroup for ``cgroup_parent`` as kubelet sent it under ``driver``
    ("cgroupfs" or "systemd"), else ``<default_parent>/<sandbox_id>``.

    Raises InvalidArgument naming ``config.linux.cgroup_parent`` for a relative path, a
    ``..`` component or (systemd) a name that is not a slice; a path is taken under
    either driver (kubelet's systemd driver sends slice names, an operator may not)."""
    if not cgroup_parent:
        return PodCgroup(f"{default_parent.rstrip('/')}/{sandbox_id}", vmcri_parent=True)
    if driver == "systemd" and not cgroup_parent.startswith("/"):
        return PodCgroup(expand_slice(cgroup_parent), vmcri_parent=False)
    parts = cgroup_parent.split("/")
    if not cgroup_parent.startswith("/") or ".." in parts or "." in parts:
        raise InvalidArgument(f"{PARENT_FIELD}: {cgroup_parent!r} must be an absolute cgroup path")
    return PodCgroup("/" + "/".join(p for p in parts if p), vmcri_parent=False)


# ---- the hierarchies --------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    name: str  # the directory below the root ("memory", "unified"); "" on a pure v2 host
    mount: str  # where it is mounted
    v2: bool  # a cgroup2 hierarchy (cgroup.procs moves whole processes, no tasks file)

    def dir(self, path: str) -> str:
        return os.path.join(self.mount, path.strip("/")) if path.strip("/") else self.mount


def hierarchies(root: str = CGROUP_ROOT) -> list[Hierarchy]:
    """Every cgroup hierarchy under ``root``, each once (Debian links ``cpu`` and
    ``cpuacct`` to ``cpu,cpuacct`` on some hosts)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return [Hierarchy("", root, True)]
    found: list[Hierarchy] = []
    seen: set[str] = set()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    for name in names:
        mount = os.path.join(root, name)
        real = os.path.realpath(mount)
        if real in seen or not os.path.isdir(mount):
            continue
        seen.add(real)
        v2 = os.path.exists(os.path.join(mount, "cgroup.controllers"))
        found.append(Hierarchy(name, mount, v2))
    return found


def dirs(path: str, root: str = CGROUP_ROOT) -> list[str]:
    """The cgroup's directory in every hierarchy (existing or not); [] for a bad path."""
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        return []
    return [h.dir(rel) for h in hierarchies(root)]


def memory_hierarchy(root: str = CGROUP_ROOT) -> Hierarchy | None:
    """The hierarchy that accounts memory: v1's ``memory``, else a v2 one that has it."""
    for h in hierarchies(root):
        if h.name == "memory" and not h.v2:
            return h
    for h in hierarchies(root):
        if h.v2 and "memory" in _read(os.path.join(h.mount, "cgroup.controllers")).split():
            return h
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


# ---- making, filling, removing ----------------------------------------------------


def make(path: str, root: str = CGROUP_ROOT) -> bool:
    """Make the cgroup (and its missing ancestors) in every hierarchy; True when it was
    missing in one (vmcri made it). A new v1 cpuset gets its parent's CPUs and memory
    nodes (else no task may join it); on v2 each new ancestor passes down the memory,
    cpu and pids controllers it has. Raises OSError."""
    made = False
    rel = path.strip("/")
    for h in hierarchies(root):
        current = h.mount
        for part in rel.split("/"):
            parent, current = current, os.path.join(current, part)
            if h.v2:
                _delegate(parent)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                continue
            made = True
            if h.name == "cpuset" and not h.v2:
                for key in ("cpuset.cpus", "cpuset.mems"):
                    if not _read(os.path.join(current, key)).strip():
                        _write(os.path.join(current, key), _read(os.path.join(parent, key)))
    return made


def _delegate(directory: str) -> None:
    """Enable memory, cpu and pids for the children of a v2 cgroup, where they exist
    (best effort: a cgroup with processes of its own cannot)."""
    have = set(_read(os.path.join(directory, "cgroup.controllers")).split())
    enabled = set(_read(os.path.join(directory, "cgroup.subtree_control")).split())
    for controller in ("memory", "cpu", "pids"):
        if controller in have and controller not in enabled:
            with contextlib.suppress(OSError):
                _write(os.path.join(directory, "cgroup.subtree_control"), f"+{controller}")


def set_memory_limit(path: str, limit_bytes: int, root: str = CGROUP_ROOT) -> None:
    """The cgroup's hard memory limit (v1 ``memory.limit_in_bytes``, v2 ``memory.max``);
    raises OSError (no memory controller: ENOENT)."""
    h = memory_hierarchy(root)
    if h is None:
        raise OSError(errno.ENOENT, "no memory controller", root)
    name = "memory.max" if h.v2 else "memory.limit_in_bytes"
    _write(os.path.join(h.dir(path), name), str(limit_bytes))


def set_cpu_weight(path: str, least: bool, root: str = CGROUP_ROOT) -> None:
    """``least``: the cgroup gets the least CPU of its siblings while the CPU is contended
    (v2 ``cpu.weight`` 1, v1 ``cpu.shares`` 2), and what is idle otherwise; else the
    default share (100, 1024). Best effort: a hierarchy without the cpu controller is
    skipped; raises OSError."""
    for h in hierarchies(root):
        if h.v2:
            name, value = "cpu.weight", "1" if least else "100"
        elif "cpu" in h.name.split(","):
            name, value = "cpu.shares", "2" if least else "1024"
        else:
            continue
        target = os.path.join(h.dir(path), name)
        if os.path.exists(target):
            _write(target, value)


def memory_usage(path: str, root: str = CGROUP_ROOT) -> tuple[int, int]:
    """The cgroup's memory usage and limit in bytes (no limit: -1); (0, -1) when absent."""
    h = memory_hierarchy(root)
    if h is None:
        return 0, -1
    d = h.dir(path)
    usage = _read(os.path.join(d, "memory.current" if h.v2 else "memory.usage_in_bytes"))
    limit = _read(os.path.join(d, "memory.max" if h.v2 else "memory.limit_in_bytes")).strip()
    unlimited = not limit.isdigit() or int(limit) >= 1 << 62
    return int(usage) if usage.strip().isdigit() else 0, -1 if unlimited else int(limit)


def join(path: str, pid: int, hierarchies_: Iterable[Hierarchy]) -> None:
    """Move process ``pid`` with all its threads into ``path`` in each hierarchy (both v1
    and v2 move a whole thread group through ``cgroup.procs``). A process that is gone is
    not an error; raises OSError for anything else."""
    for h in hierarchies_:
        try:
            _write(os.path.join(h.dir(path), "cgroup.procs"), str(pid))
        except ProcessLookupError:
            return
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return
            raise


def procs(path: str, root: str = CGROUP_ROOT) -> set[int]:
    """Every process in the cgroup or below it, in any hierarchy."""
    found: set[int] = set()
    for top in dirs(path, root):
        for directory, _subdirs, files in os.walk(top):
            if "cgroup.procs" in files:
                text = _read(os.path.join(directory, "cgroup.procs"))
                found.update(int(line) for line in text.split() if line.isdigit())
    return found


def process_cgroups(pid: int, tid: int | None = None) -> dict[str, str]:
    """A process's (or one of its threads') cgroup per hierarchy, keyed as
    :class:`Hierarchy` names them: the v1 controller list (``cpu``, ``name=systemd`` as
    ``systemd``), ``""`` for the cgroup2 line."""
    where = f"/proc/{pid}/task/{tid}/cgroup" if tid else f"/proc/{pid}/cgroup"
    found: dict[str, str] = {}
    for line in _read(where).splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            found[""] = path
            continue
        for controller in controllers.split(","):
            found[controller.removeprefix("name=")] = path
    return found


def threads(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def remove_tree(path: str, root: str = CGROUP_ROOT) -> None:
    """rmdir an empty cgroup (and empty children) in every hierarchy; best effort."""
    for top in dirs(path, root):
        if not os.path.isdir(top):
            continue
        for dirpath, _subdirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def kill_all_in(path: str, root: str = CGROUP_ROOT) -> int:
    """SIGKILL every process in the cgroup (each hierarchy's ``cgroup.procs``); the count."""
    pids = procs(path, root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def walk_up(path: str) -> Iterator[str]:
    """``/a/b/c``, ``/a/b``, ``/a``."""
    parts = [p for p in path.split("/") if p]
    while parts:
        yield "/" + "/".join(parts)
        parts.pop()
