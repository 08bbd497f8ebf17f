"""A checkpoint's VM facts are data: each is checked before the restore uses it."""

from __future__ import annotations

import dataclasses

import pytest

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.saved_vm import TEMPLATE, WRITABLE, SavedVm, parse
from vmcri.handlers.vm.sizing import VmSize

CHAIN = "ab" * 32
GOOD = SavedVm(
    TEMPLATE, {"memory_mib": 416, "vcpus": 1}, {0: WRITABLE, 1: CHAIN}, "0a:58:0a:fa:00:05"
)


def test_the_facts_a_save_records_parse_back_the_same() -> None:
    assert parse(GOOD.facts()) == GOOD
    assert parse(GOOD.facts()).layers() == {1: CHAIN}


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("disks", '{"1": "/etc/shadow"}', "LUN 1"),  # a host path for QEMU to open
        ("disks", '{"1": "../../layers/x"}', "LUN 1"),
        ("disks", '{"0": "' + CHAIN + '"}', "LUN 0"),  # a layer where the writable disk is
        ("disks", '{"5": "writable"}', "LUN 5"),
        ("disks", '{"99999": "' + CHAIN + '"}', "99999"),
        ("disks", '{"-1": "' + CHAIN + '"}', "-1"),
        ("disks", '["' + CHAIN + '"]', "not objects"),
        ("shape", "not json", "not JSON"),
        ("machine", "restored", "unknown"),
        ("mac", "0a:58:0a:fa:00:05; rm -rf /", "MAC"),
        ("shape", "x" * (70 << 10), "too long"),
        ("size", "760/two", "size is not valid"),
        ("size", "-1/1", "size is not valid"),
    ],
)
def test_a_tampered_fact_is_refused_naming_it(key: str, value: str, said: str) -> None:
    facts = {**GOOD.facts(), key: value}
    with pytest.raises(InvalidArgument, match=said):
        parse(facts)


def test_a_missing_fact_is_refused() -> None:
    facts = GOOD.facts()
    del facts["disks"]
    with pytest.raises(InvalidArgument, match="'disks' is missing"):
        parse(facts)


def test_a_grown_vm_comes_back_at_its_size_and_a_claimed_bigger_one_is_refused() -> None:
    booted = VmSize(memory_mib=416, vcpus=1, boot_memory_mib=416, max_memory_mib=4512,
                    max_vcpus=3)  # fmt: skip
    grown = dataclasses.replace(GOOD, memory_mib=760, vcpus=2)
    assert parse(grown.facts()) == grown
    assert grown.grown(booted) == dataclasses.replace(booted, memory_mib=760, vcpus=2)
    for memory, vcpus in ((8192, 2), (760, 9), (100, 1), (760, 0)):
        with pytest.raises(InvalidArgument, match="does not fit"):
            dataclasses.replace(GOOD, memory_mib=memory, vcpus=vcpus).grown(booted)
