"""Everything one exec started, so that a timed-out or abandoned exec can be killed whole.

Killing an exec's own process is not enough: ``sh -c 'sleep 1000 & sleep 1000'`` leaves
the background sleep, and a process that forks, calls ``setsid`` and lets its parent exit
is re-parented to the container's init, outside the exec's process tree. A cgroup holds
on to all of them, whatever they do (only a process that may write cgroup files can leave
it), so each exec runs in a sub-cgroup of its container's (``runc exec --cgroup``):

* cgroup v2 (the guest): ``<container cgroup>/<name>``. No controller is enabled below the
  container's cgroup, so the container's limits and accounting still cover the exec.
  ``cgroup.kill`` kills every process in it atomically with respect to forks (Linux
  5.14+); without it the group is frozen, each process killed, then thawed.
* cgroup v1 (hybrid hosts): the ``freezer`` controller's sub-cgroup alone; every other
  controller keeps the exec in the container's own cgroup. Killing freezes, kills, thaws.

Where the container's cgroup cannot be found (another cgroup driver, no freezer), the exec
runs as before and is killed by its process tree: stopped with SIGSTOP from the top down
(a stopped process cannot fork any more) until no new descendant shows, then SIGKILLed.

When an exec ends on its own, what it left running in the background stays (as with
containerd), moved back into the container's cgroup so that the sub-cgroup can go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("vmcri.agent.exec_group")

FREEZE_WAIT_S = 2.0
EMPTY_WAIT_S = 2.0
TREE_ROUNDS = 64
MOVE_ROUNDS = 16
_POLL_S = 0.01


class ExecGroup:
    """The sub-cgroup of one exec; ``runc_arg`` is runc exec's ``--cgroup`` value."""

    def __init__(self, path: Path, runc_arg: str, unified: bool) -> None:
        self.path = path
        self.runc_arg = runc_arg
        self.unified = unified

    @classmethod
    def create(cls, cgroup_root: Path, unified: bool, container_cgroup: str) -> ExecGroup | None:
        """A new, empty sub-cgroup of ``container_cgroup``; None where there is none to make."""
        rel = container_cgroup.strip("/")
        if not rel:
            return None
        base = cgroup_root / rel if unified else cgroup_root / "freezer" / rel
        name = f"vmcri-exec-{os.urandom(6).hex()}"
        try:
            (base / name).mkdir()
        except OSError as exc:  # no such cgroup (yet), no freezer, a read-only cgroupfs
            log.debug("no exec cgroup below %s: %s", base, exc)
            return None
        return cls(base / name, name if unified else f"freezer:{name}", unified)

    def pids(self) -> list[int]:
        return _read_pids(self.path / "cgroup.procs")

    def kill(self) -> None:
        """SIGKILL every process in the group, including those it forks meanwhile."""
        if self.unified and _write(self.path / "cgroup.kill", "1"):
            return
        frozen = self._freeze(True)
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if frozen:
            self._freeze(False)  # the kills land as the processes thaw

    def release(self) -> None:
        """Remove the group once it is empty, moving what the exec left running back into
        the container's cgroup. Never raises: a group that stays is removed with the
        container's cgroup by ``runc delete``."""
        parent = self.path.parent / "cgroup.procs"
        for _ in range(MOVE_ROUNDS):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                pass
            for pid in self.pids():  # left in the background, or a fork racing the move
                _write(parent, str(pid))
            self.wait_empty(EMPTY_WAIT_S / MOVE_ROUNDS)
        log.warning("exec cgroup %s is still busy; runc delete will remove it", self.path)

    def wait_empty(self, timeout: float = EMPTY_WAIT_S) -> bool:
        return _wait(lambda: not self.pids(), timeout)

    def _freeze(self, on: bool) -> bool:
        if self.unified:
            if not _write(self.path / "cgroup.freeze", "1" if on else "0"):
                return False
            return not on or _wait(lambda: _frozen_v2(self.path), FREEZE_WAIT_S)
        state = "FROZEN" if on else "THAWED"
        if not _write(self.path / "freezer.state", state):
            return False
        return not on or _wait(lambda: _read(self.path / "freezer.state") == state, FREEZE_WAIT_S)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants, for an exec without a group of its own.

    Each round stops (SIGSTOP) whatever new descendant the process table shows, so the
    tree cannot grow behind the walk; once a round finds none, all of them are killed.
    A process already re-parented away from the tree is out of reach here.
    """
    stopped: set[int] = set()
    for _ in range(TREE_ROUNDS):
        new = [p for p in _descendants(pid) if p not in stopped]
        if not new:
            break
        for p in new:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGSTOP)
            stopped.add(p)
    for p in stopped:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read(Path(entry.path) / "stat")
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _frozen_v2(path: Path) -> bool:
    return "frozen 1" in _read(path / "cgroup.events").splitlines()


def _read_pids(path: Path) -> list[int]:
    return [int(line) for line in _read(path).split() if line.isdigit()]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    # The kernel takes a moment to freeze a group or let killed processes go; both are
    # short, bounded waits on kernel state.
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
