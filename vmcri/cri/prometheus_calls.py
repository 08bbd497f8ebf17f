"""Counts and times every CRI RPC for vmcri's own Prometheus endpoint
(``vmcri/metrics/``), in one place: a gRPC server interceptor. (The CRI's own
pod-metrics RPCs are ``vmcri/runtime/cri_metrics.py``.)

It sits outside :class:`~vmcri.cri.status.ErrorMappingInterceptor`, so it sees
the status code that interceptor chose (``context.code()`` after an abort) and
never an unmapped exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vmcri.cri.handler_wrap import wrap_handler
from vmcri.metrics.families import record_rpc


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if failed else "OK"


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.monotonic()
        failed = True
        try:
            response = behavior(request, context)
            failed = False
            return response
        finally:
            record_rpc(method, _code_of(context, failed), time.monotonic() - started)

    return call


def _wrap_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.monotonic()
        failed = True
        try:
            yield from behavior(request, context)
            failed = False
        finally:
            record_rpc(method, _code_of(context, failed), time.monotonic() - started)

    return call


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,type-arg]
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return wrap_handler(
            continuation(handler_call_details),
            lambda behaviour: _wrap_unary(behaviour, method),
            lambda behaviour: _wrap_stream(behaviour, method),
        )
