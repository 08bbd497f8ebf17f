"""One pull's write budget, and the pax record check that guards tarfile's parser."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vmcri.errors import ResourceExhausted, UnsafeContent
from vmcri.images.tar_stream import check_pax_records
from vmcri.images.write_budget import RECHECK_BYTES, WriteBudget


def test_budget_is_the_smaller_of_cap_and_free_space(tmp_path: Path) -> None:
    assert WriteBudget(tmp_path, 100, lambda _: 1 << 40).limit == 100
    budget = WriteBudget(tmp_path, 1 << 40, lambda _: 100)
    budget.charge(100, "sha256:l1")
    with pytest.raises(ResourceExhausted, match=r"sha256:l2.*100 bytes free"):
        budget.charge(1, "sha256:l2")


def test_free_space_is_read_again_while_writing(tmp_path: Path) -> None:
    free = [10 * RECHECK_BYTES]
    budget = WriteBudget(tmp_path, 1 << 40, lambda _: free[0])
    budget.charge(RECHECK_BYTES - 1, "sha256:l1")
    free[0] = 1 << 20  # another pull filled the disk meanwhile
    with pytest.raises(ResourceExhausted, match="only 1048576 bytes left free"):
        budget.charge(1, "sha256:l1")


@pytest.mark.parametrize(
    ("data", "one_byte_off"),
    [
        (b"", b"x"),
        (b"12 path=abc\n", b"13 path=abc\n"),
        (b"12 path=abc\n18 uid=1700000000\n", b"12 path=abc\n19 uid=1700000000\n"),
        (b"12 path=abc\n\0\0", b"12 path=abc\nx\0"),  # NUL padding ends the records
    ],
)
def test_good_pax_records_pass(data: bytes, one_byte_off: bytes) -> None:
    check_pax_records(data, "l")
    # The check reads these records: the same with one byte wrong is refused.
    with pytest.raises(UnsafeContent, match="malformed pax extended header record"):
        check_pax_records(one_byte_off, "l")


@pytest.mark.parametrize(
    "data",
    [
        b"11 path=abc\n",
        b"x path=abc\n",
        b"10 pathabc\n",
        b"0 a=b\n",
        b"12 path=abc\njunk",
        b"99999999999999999999999 a=b\n",
    ],
)
def test_bad_pax_records_fail(data: bytes) -> None:
    with pytest.raises(UnsafeContent, match="pax"):
        check_pax_records(data, "l")


@pytest.mark.timeout(10)
def test_pax_record_check_always_ends() -> None:
    """Every input either passes or is refused: the checker runs before any limit on time."""
    rng = random.Random(6232)
    seeds = [b"12 path=abc\n", b"18 uid=1700000000\n", b"5 a=\n", b" \n=0123456789"]
    outcomes = {"passed": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(seeds) * rng.randint(1, 3))
        for _ in range(rng.randint(0, 4)):
            data[rng.randrange(len(data))] = rng.choice(b" =\n\x000123456789ax")
        try:
            check_pax_records(bytes(data), "l")
            outcomes["passed"] += 1
        except UnsafeContent:
            outcomes["refused"] += 1
    assert outcomes["passed"] and outcomes["refused"]
