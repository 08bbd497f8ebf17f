"""Validation of every CRI request at the edge, once, before any work.

:func:`check_request` walks a decoded request along its proto descriptor: every set
field gets the generic limits of :mod:`vmcri.cri.limits` (enum values the proto
declares, string and bytes lengths, no NUL in strings, item counts of repeated fields
and maps) and the rule :data:`~vmcri.cri.limits.RULES` holds for it (IDs, paths,
ranges). It raises :class:`~vmcri.errors.InvalidArgument` naming the field by its path
in the request (``config.linux.resources.memory_limit_in_bytes``).

:class:`ValidatingInterceptor` runs it for every RPC of both services, so a request
reaches a servicer (and conversion, the store, runc, libvirt, CNI or the image store
behind it) only when each of its values passed. What needs more than one field or the
host (a cgroup parent the backend cannot use, a VM bigger than the host) is checked
after conversion, still before the backend does anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vmcri.cri.handler_wrap import wrap_handler
from vmcri.cri.limits import MAX_ITEMS, MAX_STRING_BYTES, RULES, Rule
from vmcri.errors import InvalidArgument

_GENERIC = Rule()
# Nesting is fixed by the CRI proto (no recursive messages); this only guards a bug.
_MAX_DEPTH = 16


def check_request(request: Message) -> None:
    """Raises InvalidArgument naming the first field whose value vmcri refuses."""
    _message(request, "", 0)


def rule_for(field: FieldDescriptor) -> Rule:
    return RULES.get(_short_name(field), _GENERIC)


def _short_name(field: FieldDescriptor) -> str:
    owner = field.containing_type
    package = owner.file.package if owner is not None else ""
    return field.full_name.removeprefix(f"{package}.") if package else field.full_name


def _required(owner: Any) -> tuple[str, ...]:
    """The fields of ``owner`` whose rule says they must be set."""
    return tuple(f.name for f in owner.fields if rule_for(f).required)


_REQUIRED: dict[str, tuple[str, ...]] = {}


def _message(msg: Message, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"{path}: nested too deep")
    owner = msg.DESCRIPTOR
    required = _REQUIRED.get(owner.full_name)
    if required is None:
        required = _REQUIRED[owner.full_name] = _required(owner)
    for name in required:
        if not getattr(msg, name):
            where = f"{path}.{name}" if path else name
            raise InvalidArgument(f"{where}: must not be empty")
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        rule = rule_for(field)
        if _is_map(field):
            _map(field, value, where, rule, depth)
        elif field.is_repeated:
            _count(len(value), where, rule)
            for i, item in enumerate(value):
                _value(field, item, f"{where}[{i}]", rule, depth)
        else:
            _value(field, value, where, rule, depth)


def _is_map(field: FieldDescriptor) -> bool:
    entry: Descriptor | None = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _count(n: int, where: str, rule: Rule) -> None:
    limit = rule.max_items if rule.max_items is not None else MAX_ITEMS
    if n > limit:
        raise InvalidArgument(f"{where}: {n} entries, at most {limit} are taken")


def _map(field: FieldDescriptor, value: Any, where: str, rule: Rule, depth: int) -> None:
    _count(len(value), where, rule)
    entry = field.message_type
    assert entry is not None, "a map field has an entry type"
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    key_rule, value_rule = rule_for(key_field), rule_for(value_field)
    for key, item in value.items():
        _value(key_field, key, f"{where} key {_shown_key(key)}", key_rule, depth)
        _value(value_field, item, f"{where}[{_shown_key(key)}]", value_rule, depth)


def _shown_key(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 64 else text[:64] + "...'"


def _value(field: FieldDescriptor, value: Any, where: str, rule: Rule, depth: int) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        _message(value, where, depth + 1)
        return
    if kind == FieldDescriptor.TYPE_ENUM:
        _enum(field, value, where)
    elif kind == FieldDescriptor.TYPE_STRING:
        _length(len(value.encode()), where, rule)
        if "\x00" in value:
            raise InvalidArgument(f"{where}: must not contain a NUL character")
    elif kind == FieldDescriptor.TYPE_BYTES:
        _length(len(value), where, rule)
    if rule.check is not None:
        rule.check(value, where)


def _enum(field: FieldDescriptor, value: int, where: str) -> None:
    # proto3 enums are open: the decoder keeps numbers the proto does not declare.
    enum = field.enum_type
    assert enum is not None, "an enum field has an enum type"
    values = enum.values_by_number
    if value not in values:
        names = ", ".join(f"{v.name}={n}" for n, v in sorted(values.items()))
        raise InvalidArgument(f"{where}: unknown value {value}; one of {names}")


def _length(n: int, where: str, rule: Rule) -> None:
    limit = rule.max_bytes if rule.max_bytes is not None else MAX_STRING_BYTES
    if n > limit:
        raise InvalidArgument(f"{where}: {n} bytes, at most {limit} are taken")


class ValidatingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Runs :func:`check_request` before every unary-request RPC of both services.

    It sits inside :class:`~vmcri.cri.status.ErrorMappingInterceptor`, which turns the
    InvalidArgument it raises into INVALID_ARGUMENT like any other refusal. Methods in
    ``unimplemented`` (full gRPC names) are not checked: they answer UNIMPLEMENTED,
    whatever the request holds.
    """

    def __init__(self, unimplemented: frozenset[str] = frozenset()) -> None:
        self._unimplemented = unimplemented

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler_call_details.method in self._unimplemented:
            return handler
        return wrap_handler(handler, _checked, _checked)


def _checked(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        check_request(request)
        return behavior(request, context)

    return call
