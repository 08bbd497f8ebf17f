"""Running pods and containers per handler, counted from the store at scrape time; the
disk the VM pods' writable layers were promised against the free disk, measured then.

Counting at scrape time instead of keeping gauges up to date at every state
change means no transition can be missed: the numbers are the records' states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vmcri.host.layer_space import measure
from vmcri.store.records import ContainerState, SandboxState
from vmcri.store.store import Store


class RunningCollector(Collector):
    def __init__(self, store: Store, handlers: Sequence[str]) -> None:
        self._store = store
        self._handlers = tuple(handlers)  # every configured handler gets a series, even at 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sandboxes = self._store.sandboxes.list()
        handler_of = {s.id: s.handler for s in sandboxes}
        pods = Counter(s.handler for s in sandboxes if s.state is SandboxState.READY)
        containers = Counter(
            handler_of.get(c.sandbox_id, "")
            for c in self._store.containers.list()
            if c.state is ContainerState.RUNNING
        )
        pod_family = GaugeMetricFamily(
            "vmcri_running_pods", "Pod sandboxes in state READY, by handler.", labels=["handler"]
        )
        container_family = GaugeMetricFamily(
            "vmcri_running_containers", "Containers in state RUNNING, by handler.",
            labels=["handler"],
        )  # fmt: skip
        for handler in sorted(set(self._handlers) | set(pods) | set(containers) - {""}):
            pod_family.add_metric([handler], pods[handler])
            container_family.add_metric([handler], containers[handler])
        yield pod_family
        yield container_family


class LayerSpaceCollector(Collector):
    """``<root>/backends``: its VM pods' writable layers (``vmcri.host.layer_space``)."""

    def __init__(self, backends: Path) -> None:
        self._backends = backends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            space = measure(self._backends)
        except OSError:
            return  # no root dir yet: no series rather than made-up zeros
        yield GaugeMetricFamily(
            "vmcri_writable_layers_promised_bytes",
            "Sizes of the VM pods' writable layers together (sparse files: promises).",
            value=space.promised_bytes,
        )
        yield GaugeMetricFamily(
            "vmcri_writable_layers_claimable_bytes",
            "Of the promised bytes, those not written yet: what the pods can still take.",
            value=space.claimable_bytes,
        )
        yield GaugeMetricFamily(
            "vmcri_writable_layers_free_bytes",
            "Free bytes on the file system of the layers (claimable above it: overcommitted).",
            value=space.free_bytes,
        )
