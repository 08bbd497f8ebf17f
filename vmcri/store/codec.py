"""JSON encoding of the frozen dataclasses in ``vmcri.model`` and the records.

Enums are stored by name, tuples as lists, nested dataclasses as objects. Decoding
is driven by the type hints, so a record read back has exactly the types it was
written with, and a file that does not fit raises ``StateCorrupt``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from typing import Any, TypeVar, get_args, get_origin

from vmcri.errors import StateCorrupt

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(to_jsonable(value), sort_keys=True, indent=1).encode()


def from_jsonable(cls: type[T], data: Any) -> T:
    try:
        result: T = _decode(cls, data)
    except (TypeError, ValueError, KeyError) as exc:
        raise StateCorrupt(f"cannot decode {cls.__name__}: {exc}") from exc
    return result


def loads(cls: type[T], raw: bytes) -> T:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StateCorrupt(f"not valid JSON: {exc}") from exc
    return from_jsonable(cls, data)


_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _hints_cache:
        _hints_cache[cls] = typing.get_type_hints(cls)
    return _hints_cache[cls]


def _decode(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if data is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _decode(non_none[0], data)
    if origin is tuple:
        if not isinstance(data, list):
            raise TypeError(f"expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        if len(args) != len(data):
            raise ValueError("tuple of the wrong length")
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin is dict:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return {_decode(args[0], k): _decode(args[1], v) for k, v in data.items()}
    if origin is list:
        return [_decode(args[0], v) for v in data]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {hint.__name__}")
        hints = _hints(hint)
        kwargs = {}
        for f in dataclasses.fields(hint):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name])
        return hint(**kwargs)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint[data]
    if hint is Any:
        return data
    if hint is float and isinstance(data, int):
        return float(data)
    if isinstance(hint, type) and not isinstance(data, hint):
        raise TypeError(f"expected {hint.__name__}, got {type(data).__name__}")
    return data
