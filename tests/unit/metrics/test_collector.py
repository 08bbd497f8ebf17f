"""Running pods and containers are the records' states at scrape time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.support.records import container, sandbox
from vmcri.metrics.collector import RunningCollector
from vmcri.store.records import ContainerState, SandboxState
from vmcri.store.store import Store


def test_counts_follow_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    registry = CollectorRegistry()
    registry.register(RunningCollector(store, ["vm", "runc"]))
    ready = store.sandboxes.add(sandbox("ready"))
    store.sandboxes.set_fields(ready.id, state=SandboxState.READY)
    store.sandboxes.add(sandbox("creating"))  # not READY: not counted
    runc_pod = store.sandboxes.add(dataclasses.replace(sandbox("host"), handler="runc"))
    store.sandboxes.set_fields(runc_pod.id, state=SandboxState.READY)
    running = store.containers.add(container(runc_pod.id))
    store.containers.set_fields(running.id, state=ContainerState.RUNNING)
    store.containers.add(container(runc_pod.id, "created"))  # CREATED: not counted

    def value(name: str, handler: str) -> float | None:
        return registry.get_sample_value(name, {"handler": handler})

    assert value("vmcri_running_pods", "vm") == 1
    assert value("vmcri_running_pods", "runc") == 1
    assert value("vmcri_running_containers", "runc") == 1
    assert value("vmcri_running_containers", "vm") == 0

    store.sandboxes.set_fields(ready.id, state=SandboxState.NOTREADY)
    assert value("vmcri_running_pods", "vm") == 0


def test_writable_layers_promised_and_free_are_measured_at_scrape_time(tmp_path: Path) -> None:
    from vmcri.metrics.collector import LayerSpaceCollector

    backends = tmp_path / "backends"
    registry = CollectorRegistry()
    registry.register(LayerSpaceCollector(backends))
    assert registry.get_sample_value("vmcri_writable_layers_promised_bytes") is None  # no dir
    (backends / "vm" / "pod").mkdir(parents=True)
    with open(backends / "vm" / "pod" / "writable.img", "wb") as image:
        image.truncate(64 << 20)
    assert registry.get_sample_value("vmcri_writable_layers_promised_bytes") == 64 << 20
    assert registry.get_sample_value("vmcri_writable_layers_claimable_bytes") == 64 << 20
    free = registry.get_sample_value("vmcri_writable_layers_free_bytes")
    assert free is not None and free > 0
