"""Every vmcri metric family, and the calls the rest of the daemon records through.

The families live on one registry of their own (not prometheus_client's global
one), so the endpoint serves exactly these and nothing a library registers by
import. Modules record with one call (``vm_died(reason)``, ...) and never touch
the prometheus_client objects themselves.

Names follow Prometheus conventions: the ``vmcri_`` prefix, base units
(``_seconds``, ``_bytes``) and ``_total`` on counters. Label values come from a
small fixed set (RPC method names, status codes, handler names from the config,
fixed reason words), never from pod-controlled strings, so a pod cannot grow
the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

# The `_created` series (a timestamp per labelled child) double the output for no
# dashboard's benefit; the daemon serves no other registry this would affect.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# RPCs range from microseconds (Version) to minutes (PullImage, a VM boot under TCG).
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
POD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
PULL_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

CRI_REQUESTS = Counter(
    "vmcri_cri_requests",
    "CRI RPCs answered, by method and gRPC status code.",
    ("method", "code"),
    registry=REGISTRY,
)
CRI_REQUEST_DURATION = Histogram(
    "vmcri_cri_request_duration_seconds",
    "Time to answer a CRI RPC (a streaming RPC: until its stream ends), by method and code.",
    ("method", "code"),
    buckets=RPC_BUCKETS,
    registry=REGISTRY,
)
POD_START_DURATION = Histogram(
    "vmcri_pod_start_duration_seconds",
    "Time for RunPodSandbox's backend to make a pod ready, by handler and how it started "
    "(cold: booted or created from nothing; restored: from a template snapshot; "
    "checkpoint: a RestorePod from a pod checkpoint).",
    ("handler", "start"),
    buckets=POD_START_BUCKETS,
    registry=REGISTRY,
)
IMAGE_PULL_BYTES = Counter(
    "vmcri_image_pull_bytes",
    "Layer bytes received from registries.",
    registry=REGISTRY,
)
IMAGE_PULL_DURATION = Histogram(
    "vmcri_image_pull_duration_seconds",
    "Time of successful image pulls, from resolving the reference to the unpacked layers.",
    buckets=PULL_BUCKETS,
    registry=REGISTRY,
)
AGENT_RECONNECTS = Counter(
    "vmcri_agent_reconnects",
    "Times the host reconnected to a guest agent after losing its connection (vm pods).",
    registry=REGISTRY,
)
VM_DEATHS = Counter(
    "vmcri_vm_deaths",
    "Pod VMs that stopped, by libvirt's reason (shut down, destroyed, crashed, failed).",
    ("reason",),
    registry=REGISTRY,
)

START_COLD = "cold"
START_RESTORED = "restored"
START_CHECKPOINT = "checkpoint"
VM_DEATH_REASONS = frozenset({"shut down", "destroyed", "crashed", "failed"})


def record_rpc(method: str, code: str, seconds: float) -> None:
    CRI_REQUESTS.labels(method, code).inc()
    CRI_REQUEST_DURATION.labels(method, code).observe(seconds)


def pod_started(handler: str, runtime: Mapping[str, str], seconds: float) -> None:
    """A backend made a pod ready; ``runtime["start"]`` says from what (anything else or
    nothing: cold)."""
    start = runtime.get("start", START_COLD)
    if start not in (START_RESTORED, START_CHECKPOINT):
        start = START_COLD
    POD_START_DURATION.labels(handler, start).observe(seconds)


def image_bytes_received(count: int) -> None:
    IMAGE_PULL_BYTES.inc(count)


@contextmanager
def timed_image_pull() -> Iterator[None]:
    """Observe the block's duration when it completes (failed pulls are not timed)."""
    started = time.monotonic()
    yield
    IMAGE_PULL_DURATION.observe(time.monotonic() - started)


def agent_reconnected() -> None:
    AGENT_RECONNECTS.inc()


def vm_died(reason: str) -> None:
    # libvirt's unknown details arrive as "stopped (N)": fold them into one series.
    VM_DEATHS.labels(reason if reason in VM_DEATH_REASONS else "other").inc()
