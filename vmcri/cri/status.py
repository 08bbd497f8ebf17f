"""The one place where vmcri errors become gRPC status codes.

A server interceptor wraps every RPC: a :class:`~vmcri.errors.VmcriError` aborts
with its ``code``; a method vmcri does not implement answers UNIMPLEMENTED with
its full name; anything else is logged with its traceback and answers INTERNAL.
INTERNAL (and DATA_LOSS, UNAVAILABLE) are vmcri's own faults or its host's, never a
client's: a request's values were checked before it got here (``validate.py``), so
each of these is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vmcri.cri.handler_wrap import wrap_handler
from vmcri.errors import VmcriError

log = logging.getLogger(__name__)


def grpc_code(error: VmcriError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def _abort_for(exc: BaseException, method: str, context: grpc.ServicerContext) -> None:
    if isinstance(exc, VmcriError):
        if error_is_internal(exc):
            log.error("%s failed: %s", method, exc.message, exc_info=exc)
        else:
            log.info("%s refused: %s", method, exc.message, extra={"code": exc.code})
        context.abort(grpc_code(exc), exc.message)
    if isinstance(exc, NotImplementedError):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by vmcri")
    log.exception("%s crashed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc}")


def error_is_internal(exc: VmcriError) -> bool:
    return exc.code in ("INTERNAL", "DATA_LOSS", "UNAVAILABLE")


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort_for(exc, method, context)

    return call


def _wrap_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort_for(exc, method, context)

    return call


def _is_abort(exc: Exception) -> bool:
    # context.abort() signals by raising a bare, argument-less Exception: let it through.
    return type(exc) is Exception and not exc.args


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,type-arg]
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method.rsplit(".", 1)[-1]
        return wrap_handler(
            continuation(handler_call_details),
            lambda behaviour: _wrap_unary(behaviour, method),
            lambda behaviour: _wrap_stream(behaviour, method),
        )
