"""Recording calls, the RPC interceptor, and bounded label values."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import grpc
import pytest

from vmcri.cri.prometheus_calls import MetricsInterceptor
from vmcri.metrics import families
from vmcri.metrics.families import REGISTRY


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class _Handler(NamedTuple):
    unary_unary: Any = None
    unary_stream: Any = None


class _Details(NamedTuple):
    method: str


class _Context:
    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        raise Exception()  # what grpc's abort raises

    def code(self) -> grpc.StatusCode | None:
        return self._code


def _intercepted(behaviour: Any, method: str) -> Any:
    handler = MetricsInterceptor().intercept_service(
        lambda _details: _Handler(unary_unary=behaviour),
        cast(grpc.HandlerCallDetails, _Details(method)),
    )
    return handler.unary_unary


def test_rpc_is_counted_with_its_code() -> None:
    ok_labels = {"method": "UnitOk", "code": "OK"}
    before = _sample("vmcri_cri_requests_total", ok_labels)
    _intercepted(lambda request, context: "pong", "/runtime.v1.RuntimeService/UnitOk")(
        None, _Context()
    )
    assert _sample("vmcri_cri_requests_total", ok_labels) == before + 1
    assert _sample("vmcri_cri_request_duration_seconds_count", ok_labels) >= 1


def test_aborted_rpc_is_counted_with_the_abort_code() -> None:
    def refuse(request: Any, context: _Context) -> None:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such pod")

    with pytest.raises(Exception):  # noqa: B017 - grpc's abort exception is bare
        _intercepted(refuse, "/runtime.v1.RuntimeService/UnitAbort")(None, _Context())
    labels = {"method": "UnitAbort", "code": "NOT_FOUND"}
    assert _sample("vmcri_cri_requests_total", labels) == 1


def test_unknown_method_creates_no_series() -> None:
    # grpc answers UNIMPLEMENTED itself; a client cannot mint label values with made-up names.
    result = MetricsInterceptor().intercept_service(
        lambda _details: None, cast(grpc.HandlerCallDetails, _Details("/evil/" + "x" * 100))
    )
    assert result is None
    assert _sample("vmcri_cri_requests_total", {"method": "x" * 100, "code": "UNIMPLEMENTED"}) == 0


def test_unknown_vm_death_reasons_share_one_series() -> None:
    before = _sample("vmcri_vm_deaths_total", {"reason": "other"})
    families.vm_died("stopped (7)")
    families.vm_died("stopped (8)")
    assert _sample("vmcri_vm_deaths_total", {"reason": "other"}) == before + 2
    assert _sample("vmcri_vm_deaths_total", {"reason": "stopped (7)"}) == 0


def test_pod_start_is_labelled_cold_unless_restored() -> None:
    families.pod_started("unit", {}, 1.5)
    families.pod_started("unit", {"start": "restored"}, 0.2)
    families.pod_started("unit", {"start": "anything-else"}, 0.3)
    families.pod_started("unit", {"start": "checkpoint"}, 0.9)
    labels = {"handler": "unit", "start": "cold"}
    assert _sample("vmcri_pod_start_duration_seconds_count", labels) == 2
    restored = {"handler": "unit", "start": "restored"}
    assert _sample("vmcri_pod_start_duration_seconds_count", restored) == 1
    checkpoint = {"handler": "unit", "start": "checkpoint"}
    assert _sample("vmcri_pod_start_duration_seconds_count", checkpoint) == 1


def test_failed_pull_is_not_timed() -> None:
    before = _sample("vmcri_image_pull_duration_seconds_count")
    with pytest.raises(RuntimeError), families.timed_image_pull():
        raise RuntimeError("registry down")
    assert _sample("vmcri_image_pull_duration_seconds_count") == before
    with families.timed_image_pull():
        pass
    assert _sample("vmcri_image_pull_duration_seconds_count") == before + 1
