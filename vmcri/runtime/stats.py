"""Usage samples of many pods for the list RPCs: pods asked in parallel, each wait bounded.

A pod's numbers come from its agent, which for a VM pod is the guest's and may stop
answering. Asked one after another, each of a frozen pod's containers cost a whole call
timeout (60 s) and ListContainerStats ran into kubelet's deadline while the same call for
any other pod answered at once. So:

* each stats call to an agent waits at most ``STATS_CALL_TIMEOUT_S``
  (``vmcri.supervisor.containers``);
* a pod whose agent did not answer in time (DeadlineExceeded) or cannot be reached
  (AgentUnavailable) is not asked again for its other containers in the same list: all of
  them are reported without numbers, so one pod costs one bounded wait;
* pods are sampled in parallel, at most ``STATS_WORKERS`` at a time, so one pod's wait
  delays no other pod's numbers (more frozen pods than workers than delay one another,
  each by its own bounded wait);
* a pod whose sampling fails in any other way is reported without numbers too, and a
  failure is never the list's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vmcri.errors import AgentUnavailable, DeadlineExceeded, VmcriError
from vmcri.network.netstats import InterfaceCounters
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.pods import PodService
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerUsage

log = logging.getLogger(__name__)

STATS_WORKERS = 8
"""Pods sampled at once by one list RPC."""

Sample = tuple[ContainerRecord, ContainerUsage | None]


@dataclass(frozen=True)
class PodUsage:
    sandbox: SandboxRecord
    containers: tuple[Sample, ...]  # None: no numbers (not running, or no answer in time)
    network: tuple[InterfaceCounters, ...] = ()


class UsageSampler:
    def __init__(
        self, pods: PodService, containers: ContainerService, workers: int = STATS_WORKERS
    ) -> None:
        self._pods = pods
        self._containers = containers
        self._workers = workers

    def sample(
        self,
        sandboxes: Sequence[SandboxRecord],
        containers_of: Callable[[SandboxRecord], Sequence[ContainerRecord]] | None = None,
        *,
        network: bool = False,
    ) -> list[PodUsage]:
        """Each sandbox's containers (``containers_of``, all of them by default) with their
        samples, and with ``network`` its interfaces' counters; in the order given."""
        pick = containers_of or (lambda s: self._containers.of_sandbox(s.id))
        if not sandboxes:
            return []
        workers = min(self._workers, len(sandboxes))
        with ThreadPoolExecutor(workers, thread_name_prefix="stats") as pool:
            return list(pool.map(lambda s: self._pod(s, pick, network), sandboxes))

    def _pod(
        self,
        sandbox: SandboxRecord,
        pick: Callable[[SandboxRecord], Sequence[ContainerRecord]],
        network: bool,
    ) -> PodUsage:
        containers = list(pick(sandbox))
        samples: list[Sample] = []
        silent = False
        for container in containers:
            usage = None
            if not silent:
                try:
                    container, usage = self._containers.usage(container.id)
                except (DeadlineExceeded, AgentUnavailable) as exc:
                    log.warning(
                        "sandbox %s: no usage samples, its agent did not answer: %s",
                        sandbox.id,
                        exc.message,
                    )
                    silent = True
                except VmcriError as exc:
                    log.warning("container %s: no usage sample: %s", container.id, exc.message)
                except Exception:
                    log.exception("container %s: sampling its usage failed", container.id)
            samples.append((container, usage))
        counters: tuple[InterfaceCounters, ...] = ()
        if network:
            try:
                counters = tuple(self._pods.network_usage(sandbox))
            except Exception:
                log.exception("sandbox %s: reading its interfaces' counters failed", sandbox.id)
        return PodUsage(sandbox, tuple(samples), counters)
