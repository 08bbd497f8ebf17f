"""The warm pools of the ``vm`` handlers as Prometheus gauges, read from their VMs'
markers at scrape time (``pool_vms.py``), as the other collectors count from the store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vmcri.handlers.vm.pool_vms import pool_vms_on_disk


class PoolCollector(Collector):
    """The warm pools of the ``vm`` handlers (``<root>/backends/<handler>``): the VMs in
    each, idle or being made, and the guest RAM they hold, counted as pods' is."""

    def __init__(self, backends: Path, handlers: Sequence[str]) -> None:
        self._backends = backends
        self._handlers = tuple(handlers)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        vms = GaugeMetricFamily(
            "vmcri_vm_pool_vms", "VMs in the warm pool, by handler and state (idle, making).",
            labels=["handler", "state"],
        )  # fmt: skip
        memory = GaugeMetricFamily(
            "vmcri_vm_pool_memory_bytes",
            "Guest RAM of the VMs in the warm pool (no pod's yet), by handler.",
            labels=["handler"],
        )
        for handler in self._handlers:
            found = pool_vms_on_disk(self._backends / handler)
            idle = sum(1 for vm in found if vm.idle)
            vms.add_metric([handler, "idle"], idle)
            vms.add_metric([handler, "making"], len(found) - idle)
            memory.add_metric([handler], sum(vm.memory_mib for vm in found) << 20)
        yield vms
        yield memory
