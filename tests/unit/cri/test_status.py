from __future__ import annotations

from typing import Any

import grpc
import pytest

from vmcri import errors
from vmcri.cri.status import _wrap_unary, grpc_code


class AbortCalled(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise AbortCalled


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ConfigError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnsafeContent("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.InvalidTransition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.RegistryError("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.AgentUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.DigestMismatch("x"), grpc.StatusCode.DATA_LOSS),
        (errors.HypervisorError("x"), grpc.StatusCode.INTERNAL),
        (errors.Unimplemented("x"), grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_every_error_class_has_its_code(error: errors.VmcriError, code: grpc.StatusCode) -> None:
    assert grpc_code(error) is code


def test_every_error_class_names_a_real_status() -> None:
    def walk(cls: type[errors.VmcriError]) -> list[type[errors.VmcriError]]:
        return [cls] + [sub for c in cls.__subclasses__() for sub in walk(c)]

    for cls in walk(errors.VmcriError):
        assert cls.code in grpc.StatusCode.__members__, cls


def _call(exc: BaseException) -> FakeContext:
    def behavior(request: Any, context: Any) -> Any:
        raise exc

    context = FakeContext()
    with pytest.raises(AbortCalled):
        _wrap_unary(behavior, "Thing")(None, context)
    return context


def test_wrapper_maps_vmcri_errors_with_their_message() -> None:
    context = _call(errors.NotFound("sandbox 'x' not found"))
    assert context.code is grpc.StatusCode.NOT_FOUND
    assert context.details == "sandbox 'x' not found"


def test_wrapper_maps_not_implemented_to_unimplemented_with_the_method() -> None:
    context = _call(NotImplementedError())
    assert context.code is grpc.StatusCode.UNIMPLEMENTED
    assert "Thing" in context.details


def test_wrapper_maps_crashes_to_internal() -> None:
    context = _call(KeyError("boom"))
    assert context.code is grpc.StatusCode.INTERNAL
