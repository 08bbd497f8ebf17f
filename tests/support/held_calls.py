"""Fill a pod's share of slow CRI calls and prove it is full, without racing the probe.

The held calls are sent without waiting for them, so the probe that checks the share
is full can reach the daemon before the last of them and be admitted in its place; that
held call is then refused and must be sent again. ``fill_share`` does this until the
probe itself is refused, at which point every held call is admitted and still running.
"""

from __future__ import annotations

from typing import Any

import grpc

from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

HELD_TIMEOUT_S = 3600


def probe_refused(runtime: Any, container_id: str) -> grpc.RpcError | None:
    """Send one short ExecSync; return its error if the share refused it, else None."""
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=30)
    try:
        runtime.ExecSync(request, timeout=60)
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return exc
        raise
    return None


def fill_share(
    runtime: Any, request: pb.ExecSyncRequest, count: int, timeout: float
) -> tuple[list[Any], grpc.RpcError]:
    """Hold ``count`` copies of ``request`` in flight until the share refuses a probe.

    Returns the held calls' grpc futures (all admitted and running) and the probe's
    refusal.
    """
    held = [runtime.ExecSync.future(request, timeout=HELD_TIMEOUT_S) for _ in range(count)]

    def refused() -> grpc.RpcError | None:
        for index, future in enumerate(held):
            if future.done() and future.exception() is not None:
                if future.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    future.result()  # any other failure is the test's failure
                held[index] = runtime.ExecSync.future(request, timeout=HELD_TIMEOUT_S)
        return probe_refused(runtime, request.container_id)

    try:
        refusal = wait_for(refused, timeout, f"a full share of {request.container_id[:12]}")
    except BaseException:
        for future in held:
            future.cancel()
        raise
    assert refusal is not None
    return held, refusal
