"""Running pods and containers per handler, counted from the store at scrape time.

Counting at scrape time instead of keeping gauges up to date at every state
change means no transition can be missed: the numbers are the records' states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
