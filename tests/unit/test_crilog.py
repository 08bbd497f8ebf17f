"""The CRI log writer: format, partial lines, reopen."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from vmcri.crilog import CriLogWriter, rfc3339nano


def _clock() -> object:
    counter = itertools.count(1_700_000_000_123_456_789, 1000)
    return lambda: next(counter)


def test_rfc3339nano_trims_like_go() -> None:
    assert rfc3339nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert rfc3339nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"


def test_lines_partial_records_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.log"
    w = CriLogWriter(str(path), clock=_clock(), max_record=8)  # type: ignore[arg-type]
    w.write("stdout", b"ab")
    w.write("stderr", b"err\n")
    w.write("stdout", b"c\n\n0123456789abc")
    w.write("stdout", b"\nx")
    w.close()
    records = [line.split(" ", 1)[1] for line in path.read_text().splitlines()]
    assert records == [
        "stderr F err",
        "stdout F abc",
        "stdout F ",
        "stdout P 01234567",
        "stdout F 89abc",
        "stdout F x",
    ]
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"


def test_line_of_exactly_max_size(tmp_path: Path) -> None:
    w = CriLogWriter(str(tmp_path / "l"), max_record=4)
    w.write("stdout", b"abcd\n")
    w.close()
    assert (tmp_path / "l").read_text().split(" ", 1)[1] == "stdout F abcd\n"


def test_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = CriLogWriter(str(path))
    w.write("stdout", b"one\n")
    os.rename(path, tmp_path / "c.log.1")
    w.write("stdout", b"two\n")  # still the old file until reopened
    w.reopen()
    w.write("stdout", b"three\n")
    w.close()
    assert path.read_text().endswith("stdout F three\n")
    assert "two" in (tmp_path / "c.log.1").read_text()


def test_a_writer_closed_mid_line_leaves_it_open_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    first = CriLogWriter(str(path), clock=_clock())  # type: ignore[arg-type]
    first.write("stdout", b"whole\nhal")
    first.write("stderr", b"e")
    first.close(ended=False)  # the container goes on; a new agent link takes over
    second = CriLogWriter(str(path), clock=_clock())  # type: ignore[arg-type]
    second.write("stdout", b"f\n")
    second.close()
    records = [line.split(" ", 1)[1] for line in path.read_text().splitlines()]
    assert records == ["stdout F whole", "stdout P hal", "stderr P e", "stdout F f"]
