"""Where a runc pod's start and teardown go inside ``vmcri serve``: timing spans.

Not part of vmcri. ``bench/containerd_baseline.py --spans FILE`` runs the daemon with this
directory first on PYTHONPATH and ``VMCRI_SPANS=FILE``: Python imports this module at start
(``site``; the daemon's own helpers start with ``-S`` and do not), and it wraps the
functions below so that each call appends ``<name> <milliseconds>`` to FILE. No py-spy on
these machines, and a profiler's overhead would change what it measures.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SPANS = (
    "vmcri.runtime.pods:PodService.run",
    "vmcri.runtime.pods:PodService.stop",
    "vmcri.runtime.pods:PodService.remove",
    "vmcri.runtime.containers:ContainerService.create",
    "vmcri.runtime.containers:ContainerService.start",
    "vmcri.runtime.containers:ContainerService.kill_all",
    "vmcri.runtime.containers:ContainerService.remove",
    "vmcri.network.service:PodNetworking.create_netns",
    "vmcri.network.service:PodNetworking.add",
    "vmcri.network.service:PodNetworking.guard_pod",
    "vmcri.network.service:PodNetworking.release",
    "vmcri.handlers.runc.backend:RuncBackend.run_sandbox",
    "vmcri.handlers.runc.backend:RuncBackend.stop_sandbox",
    "vmcri.handlers.runc.backend:RuncBackend.remove_sandbox",
    "vmcri.handlers.runc.backend:RuncBackend.create_container",
    "vmcri.handlers.runc.backend:RuncBackend.start_container",
    "vmcri.handlers.runc.backend:RuncBackend.remove_container",
    "vmcri.handlers.runc.host:RealHost.spawn_detached",  # the agent exec'd (before the zygote)
    "vmcri.handlers.runc.host:RealHost.start_helper",  # podinit exec'd (before the zygote)
    "vmcri.handlers.runc.launcher:Launcher.spawn_agent",
    "vmcri.handlers.runc.launcher:Launcher.start_podinit",
    "vmcri.handlers.runc.host_agent:HostAgents.stop",
    "vmcri.handlers.runc.sandbox:PodSandboxes.setup",
    "vmcri.handlers.runc.sandbox:PodSandboxes._wait_for_pause",
    "vmcri.handlers.runc.sandbox:PodSandboxes.stop",
    "vmcri.handlers.runc.sandbox:PodSandboxes.teardown",
    "vmcri.supervisor.containers:SupervisedContainers.create",
    "vmcri.supervisor.containers:SupervisedContainers.remove",
    "vmcri.store.store:write_atomic",  # each record change: a file and its dir fsync'd
)


def _timed(name: str, fn: Callable[..., Any], out: Any) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            out.write(f"{name} {(time.perf_counter() - start) * 1e3:.2f}\n")

    return timed


def _install(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - the daemon's whole life
    lock = threading.Lock()

    class Locked:
        def write(self, text: str) -> None:
            with lock:
                out.write(text)

    for target in SPANS:
        module, _, attr = target.partition(":")
        owner_name, _, name = attr.rpartition(".")
        try:
            owner = importlib.import_module(module)
            owner = getattr(owner, owner_name) if owner_name else owner
            setattr(owner, name, _timed(attr, getattr(owner, name), Locked()))
        except (ImportError, AttributeError) as exc:  # renamed since: say so, go on
            print(f"spans: {target}: {exc}", file=sys.stderr)


if os.environ.get("VMCRI_SPANS"):
    _install(os.environ["VMCRI_SPANS"])
