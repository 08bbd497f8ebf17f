"""The process an exec runs: the container's own, with only its command and terminal changed.

As containerd and CRI-O build it: the container's ``process`` (from its config.json) keeps
its user, group, additional gids, capabilities (all five sets), ``noNewPrivileges``,
rlimits, AppArmor profile, SELinux label, OOM score adjustment, umask, cwd and
environment; the exec sets ``args``, ``terminal`` and ``consoleSize``, and a tty exec gets
``TERM=xterm`` on top of the container's environment (containerd's ``WithEnv``: an entry
replaces the container's of the same name, a new one is appended).

The agent hands the result to the runtime with ``exec --process FILE``, which both runc
and crun take as the whole process (nothing of the container's is merged in). Without
one, runc 1.1 copies the container's process itself, but crun (the guest's default)
starts the exec as root with its own defaults: no supplemental groups, every capability
of the bounding set. The container's ``linux.seccomp`` is not part of the process; both
runtimes apply the container's filter to every exec.

crun 1.8 also ignores a file's ``oomScoreAdj`` in an exec (it sets it only at create):
the exec inherits the runtime's own score, so the runtime is started with the
container's (``oom_score_adj``, runc.py).

Pure: dicts in, dicts out; the guest's agent imports it, so standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

TTY_ENV = ("TERM=xterm",)
"""What a tty exec adds to the container's environment (containerd, CRI-O)."""

OOM_SCORE_ADJ_RANGE = range(-1000, 1001)
TTY_SIDE_RANGE = range(1, 1 << 16)
"""A terminal's rows and columns: unsigned shorts in the kernel's winsize."""


def exec_process(
    container: Mapping[str, object],
    argv: Sequence[str],
    *,
    tty: bool,
    rows: int = 0,
    cols: int = 0,
) -> dict[str, object]:
    """The OCI process of an exec of ``argv`` in the container whose process is ``container``.

    A shallow copy: nested objects (user, capabilities, rlimits) are the container's own and
    must not be changed through the result. ``rows`` and ``cols`` set the tty's first size
    when both are given (and fit a winsize).
    """
    process = dict(container)
    process["args"] = list(argv)
    process["terminal"] = tty
    process.pop("consoleSize", None)
    if tty and rows in TTY_SIDE_RANGE and cols in TTY_SIDE_RANGE:
        process["consoleSize"] = {"height": rows, "width": cols}
    base = container.get("env")
    env = [e for e in base if isinstance(e, str)] if isinstance(base, list) else []
    process["env"] = merge_env(env, TTY_ENV if tty else ())
    return process


def merge_env(base: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """``base`` with each ``NAME=value`` of ``overrides`` replacing the entry of that name
    in place, or appended when there is none."""
    merged = list(base)
    index = {entry.partition("=")[0]: i for i, entry in enumerate(merged)}
    for entry in overrides:
        name = entry.partition("=")[0]
        if name in index:
            merged[index[name]] = entry
        else:
            index[name] = len(merged)
            merged.append(entry)
    return merged


def oom_score_adj(process: Mapping[str, object]) -> int | None:
    """The process's ``oomScoreAdj``; None when it sets none (or none a kernel takes)."""
    value = process.get("oomScoreAdj")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value in OOM_SCORE_ADJ_RANGE else None
