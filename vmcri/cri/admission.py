"""The admission interceptor: slow calls take a share of their pod before they run.

Thin: :func:`~vmcri.cri.call_classes.classify` says what a call is and whose pod it is
counted against, :class:`~vmcri.cri.call_shares.CallShares` admits or refuses it with
ResourceExhausted (which the error interceptor outside maps); this module only wires
them around each handler, so the servicers stay unchanged. It runs on the server's
thread that got the call, after validation (the IDs it looks up are well-formed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from vmcri.cri.call_classes import Targets, classify
from vmcri.cri.call_shares import CallShares
from vmcri.cri.handler_wrap import wrap_handler
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.pods import PodService
from vmcri.store.records import ContainerRecord, SandboxRecord


class ServiceTargets(Targets):
    """:class:`Targets` through the runtime's services (store reads only)."""

    def __init__(self, pods: PodService, containers: ContainerService) -> None:
        self._pods = pods
        self._containers = containers

    def container(self, container_id: str) -> ContainerRecord | None:
        return self._containers.find(container_id)

    def sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return self._pods.find(sandbox_id)

    def containers_of(self, sandbox_id: str) -> Sequence[ContainerRecord]:
        return self._containers.of_sandbox(sandbox_id)


class AdmissionInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,type-arg]
    def __init__(self, shares: CallShares, targets: Targets) -> None:
        self.shares = shares
        self._targets = targets

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        return wrap_handler(
            continuation(handler_call_details),
            lambda behaviour: self._wrap_unary(behaviour, method),
            lambda behaviour: self._wrap_stream(behaviour, method),
        )

    def _wrap_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            admit = classify(method, request, self._targets)
            self.shares.enter(method, admit)
            try:
                return behavior(request, context)
            finally:
                self.shares.leave(admit)

        return call

    def _wrap_stream(
        self, behavior: Callable[..., Iterator[Any]], method: str
    ) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            admit = classify(method, request, self._targets)
            self.shares.enter(method, admit)
            try:
                yield from behavior(request, context)
            finally:
                self.shares.leave(admit)

        return call
