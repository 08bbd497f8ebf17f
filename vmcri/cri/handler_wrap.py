"""Wrapping an RPC handler's behaviour: what every server interceptor of the edge does.

gRPC hands an interceptor a method handler whose behaviour is one of four
kinds; the edge's interceptors (metrics, error mapping, validation) only wrap
the unary-request ones, each with its own wrapper for a unary and for a
streaming answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Behaviour = Callable[..., Any]
Wrapper = Callable[[Behaviour], Behaviour]


def wrap_handler(handler: Any, unary: Wrapper, stream: Wrapper) -> Any:
    """``handler`` with its unary-unary or unary-stream behaviour wrapped; None stays None."""
    if handler is None:
        return None
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=stream(handler.unary_stream))
    return handler
