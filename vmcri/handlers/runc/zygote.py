"""The zygote: one Python that has imported the host agent and podinit, and forks them.

A runc pod needs two Python processes of its own: its agent (its container supervisor,
:mod:`vmcri.handlers.runc.host_agent`) and the podinit helper that makes its namespaces
(:mod:`vmcri.handlers.runc.podinit`). Exec'ing an interpreter for each and importing the
agent's modules cost 80 ms (podinit: 35 ms) of every RunPodSandbox, most of the gap to
containerd's. So the daemon starts this process once (``launcher.py``), exec'd like those
helpers were (a fresh interpreter, ``-S``, no descriptor of the daemon's but its end of the
control socket), and it imports everything they need, then waits for requests; each request
is answered by a fork that runs the agent's ``main`` or podinit's, as the exec'd helper
would have, from the first line on.

A fork carries the zygote's state into a pod's process, so the zygote keeps none that
matters: it is single-threaded (a fork of a threaded process may inherit a held lock), holds
no pod's data (a request's descriptors are closed once it is answered), and the child
drops what it holds before it runs anything: its stdio become the three descriptors of the
request, every other descriptor is closed (the control socket first), the signal mask
and dispositions are a fresh interpreter's, and its command line is rewritten to name what
it runs (``vmcri.agent --listen unix://...``): :class:`HostAgents` finds a pod's agent by
it, as ``ps`` users do. It keeps the zygote's cgroup, user, capabilities, session and
environment, which are the daemon's at the zygote's start, as an exec'd helper had them.
The agent then detaches itself as before (``--daemonize``: it listens, forks, the first
process exits), so a pod's agent is nobody's child: neither the zygote nor the daemon, and
a ``kill -9`` of either leaves it running.

The protocol, on a ``SOCK_SEQPACKET`` socket pair (our stdin): a request is one JSON
message, ``{"run": "agent" | "podinit", "args": [...]}``, with three descriptors (the
child's stdin, stdout, stderr); the answer is ``{"pid": N}`` or ``{"error": "..."}``. An
empty read (the daemon is gone) ends the zygote; the pods' processes stay. Children are
reaped by the kernel (SIGCHLD ignored here, and put back to its default in each child).
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import os
import shutil  # noqa: F401 - the agent imports it at a container's removal
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

# The agent's and podinit's modules, imported before any fork (the agent's main imports
# most of them only when it runs).
import vmcri.agent.guest.cgroups
import vmcri.agent.guest.containers
import vmcri.agent.guest.events
import vmcri.agent.guest.execs
import vmcri.agent.guest.hotplug
import vmcri.agent.guest.mounts
import vmcri.agent.guest.pod_pid
import vmcri.agent.guest.processes
import vmcri.agent.guest.runc
import vmcri.agent.guest.sandbox
import vmcri.agent.guest.server
import vmcri.agent.transport  # noqa: F401
from vmcri.agent.main import main as agent_main
from vmcri.handlers.runc.podinit import main as podinit_main

CONTROL_FD = 0
MAX_REQUEST = 64 * 1024
PR_SET_NAME = 15
ARG_START_FIELD = 48  # of /proc/PID/stat; arg_end follows
TITLES = {"agent": "vmcri.agent", "podinit": "vmcri.handlers.runc.podinit"}
_LIBC = ctypes.CDLL(None, use_errno=True)


def _podinit(args: list[str]) -> int:
    """podinit's main, then ``exit N`` on stdout: this process is not the daemon's child,
    so its exit status reaches the daemon as a last line rather than through wait."""
    code = podinit_main(args)
    sys.stdout.write(f"exit {code}\n")
    sys.stdout.flush()
    return code


RUNS: dict[str, Callable[[list[str]], int]] = {"agent": agent_main, "podinit": _podinit}


def set_title(words: Sequence[str]) -> bool:
    """Our command line as ``words`` (NUL-separated, as the kernel keeps argv), written over
    the initial stack's argument area (/proc/self/stat's arg_start..arg_end), as setproctitle
    does; False (nothing written) if it does not fit. The launcher gives the zygote a long
    last argument so that it fits."""
    title = b"\0".join(w.encode() for w in words) + b"\0"
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # from field 3 (state) on
    start, end = int(fields[ARG_START_FIELD - 3]), int(fields[ARG_START_FIELD - 2])
    size = end - start
    if not 0 < len(title) <= size <= 1 << 20:
        return False
    ctypes.memmove(start, title.ljust(size, b"\0"), size)
    return True


def _child(run: str, args: list[str], fds: Sequence[int]) -> NoReturn:
    """In the fork: stdio from the request, nothing else inherited; run; never return."""
    code = 127
    try:
        # Above 2 first: a request's descriptor may be one of 0-2 (the control socket is 0).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # dup2 clears close-on-exec on the copy
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.setsid()  # as the exec'd helpers were started (the agent detaches again)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        name = TITLES[run]
        set_title([name, *args])
        _LIBC.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        code = RUNS[run](args)
    except SystemExit as exc:  # argparse's --help or a bad argument
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _fork(request: object, fds: Sequence[int]) -> int:
    """Fork the child a request names; its pid. Raises ValueError (bad request), OSError."""
    if not isinstance(request, dict):
        raise ValueError(f"bad request {str(request)[:200]}")
    run, args = request.get("run"), request.get("args")
    if run not in RUNS or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"bad request {str(request)[:200]}")
    if len(fds) != 3:
        raise ValueError(f"a request carries 3 descriptors, not {len(fds)}")
    pid = os.fork()
    if pid == 0:
        _child(str(run), list(args), fds)
    return pid


def serve(control: socket.socket) -> None:
    """Answer requests until the daemon closes its end."""
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(control, MAX_REQUEST, 3)
        if not msg:
            return
        try:
            answer: dict[str, object] = {"pid": _fork(json.loads(msg), fds)}
        except (ValueError, OSError) as exc:
            answer = {"error": str(exc)[:500]}
        finally:
            for fd in fds:
                os.close(fd)
        control.send(json.dumps(answer).encode())


def main() -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    set_title(["vmcri-zygote"])
    # What is imported stays out of the collector's walks, in here and in every fork: a
    # walk writes to each object it visits, which would copy the page under every
    # object of the imports into each pod's process on its first collection.
    gc.freeze()
    control = socket.socket(fileno=CONTROL_FD)
    try:
        serve(control)
    except OSError as exc:
        print(f"vmcri-zygote: {exc}", file=sys.stderr)
        return 1
    return 0
