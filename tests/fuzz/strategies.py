"""Hypothesis strategies for CRI requests, built from the proto descriptors alone.

Every field of a message may be set; what a value is drawn from depends only on its
proto type, so a field added to api.proto is fuzzed without new code here. Values
mix the edges a type has (0, -1, the largest and smallest numbers, undeclared enum
numbers) with strings a CRI client might send or an attacker would (paths, traversal,
NUL, IDs of objects that exist, oversized text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
# Nesting of the CRI requests is at most 7 (RunPodSandboxRequest ... IDMapping.length).
MAX_DEPTH = 8

_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Numbers that sit on some limit of the kernel, cgroups, QEMU or the CRI.
_EDGE_INTS = (
    0,
    1,
    -1,
    2,
    999,
    1000,
    1001,
    65535,
    65536,
    100000,
    262144,
    262145,
    1_000_000,
    128 * 2**20,
    2**31 - 1,
    2**32 - 1,
    2**32,
    2**44,
    2**52,
    2**53,
    2**62,
    -(2**43),
)


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    edges = [v for v in _EDGE_INTS if low <= v <= high] + [low, high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _strings(hints: Sequence[str]) -> st.SearchStrategy[str]:
    hostile = [
        "",
        "/",
        "..",
        "../../../../etc/passwd",
        "/etc/shadow",
        "a\x00b",
        "x" * 5000,
        "a\nb",
        "SIGKILL",
        "0-1",
        "memory.max",
        "2MB",
        "127.0.0.1",
        "::1",
        "10.88.0.0/16",
        "ALL",
    ]
    return st.one_of(
        st.sampled_from([*hostile, *hints]),
        st.text(max_size=24),
        st.from_regex(r"\A/[a-z0-9/._-]{0,30}\Z"),
    )


def messages(
    descriptor: Descriptor,
    message_class: type[Message],
    hints: Sequence[str] = (),
    depth: int = 0,
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of its fields set."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = message_class()
        for field in descriptor.fields:
            if depth >= MAX_DEPTH or not draw(st.booleans()):
                continue
            _set(draw, msg, field, hints, depth)
        return msg

    return build()


def mutations(
    seed: Message, hints: Sequence[str] = (), changes: int = 3
) -> st.SearchStrategy[Message]:
    """``seed`` (a request that works) with up to ``changes`` fields, at any depth, redrawn.

    A mutant gets past the checks that whole random requests rarely pass (a pod needs
    its metadata), to the values deep inside that the edge must still refuse.
    """

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = type(seed)()
        msg.CopyFrom(seed)
        for _ in range(draw(st.integers(1, changes))):
            _mutate(draw, msg, hints, 0)
        return msg

    return build()


def _mutate(draw: st.DrawFn, msg: Message, hints: Sequence[str], depth: int) -> None:
    descriptor = msg.DESCRIPTOR
    # upb's descriptors register as google.protobuf.descriptor's, which the stubs do not know.
    assert isinstance(descriptor, Descriptor)
    if not descriptor.fields:
        return
    field = draw(st.sampled_from(list(descriptor.fields)))
    is_sub = field.message_type is not None and not field.is_repeated
    if is_sub and depth < MAX_DEPTH and draw(st.booleans()):
        _mutate(draw, getattr(msg, field.name), hints, depth + 1)
        return
    msg.ClearField(field.name)
    _set(draw, msg, field, hints, depth)


def _set(
    draw: st.DrawFn, msg: Message, field: FieldDescriptor, hints: Sequence[str], depth: int
) -> None:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        target = getattr(msg, field.name)
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_field, hints))
            if value_field.message_type is not None:
                target[key].CopyFrom(draw(_sub(msg, field, value_field, hints, depth)))
            else:
                target[key] = draw(_scalar(value_field, hints))
        return
    if field.is_repeated:
        target = getattr(msg, field.name)
        for _ in range(draw(st.integers(1, 3))):
            if field.message_type is not None:
                target.add().CopyFrom(draw(_sub(msg, field, field, hints, depth)))
            else:
                target.append(draw(_scalar(field, hints)))
        return
    if field.message_type is not None:
        getattr(msg, field.name).CopyFrom(draw(_sub(msg, field, field, hints, depth)))
        return
    setattr(msg, field.name, draw(_scalar(field, hints)))


def _sub(
    msg: Message, field: FieldDescriptor, typed: FieldDescriptor, hints: Sequence[str], depth: int
) -> st.SearchStrategy[Message]:
    sub_type = typed.message_type
    assert sub_type is not None
    if typed is field:
        sample = getattr(msg, field.name)
        cls = type(sample.add()) if field.is_repeated else type(sample)
        if field.is_repeated:
            del sample[-1]
    else:
        cls = type(getattr(msg, field.name).get_or_create(_any_key(field)))
        del getattr(msg, field.name)[_any_key(field)]
    return messages(sub_type, cls, hints, depth + 1)


def _any_key(field: FieldDescriptor) -> Any:
    assert field.message_type is not None  # a map field's entry
    key = field.message_type.fields_by_name["key"]
    return "" if key.type == F.TYPE_STRING else 0


def _scalar(field: FieldDescriptor, hints: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_STRING:
        return _strings(hints)
    if kind == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=16), _strings(hints).map(str.encode))
    if kind == F.TYPE_ENUM:
        assert field.enum_type is not None
        declared = sorted(field.enum_type.values_by_number)
        return st.one_of(st.sampled_from(declared), st.integers(-3, 1000))
    if kind in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(allow_nan=True, width=32 if kind == F.TYPE_FLOAT else 64)
    return _ints(kind)
