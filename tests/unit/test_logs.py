"""The daemon's log: JSON lines, and no chatter from pyroute2 or its asyncio loops at debug."""

from __future__ import annotations

import json
import logging

import pytest

from vmcri.logs import setup_logging


def test_debug_keeps_vmcri_lines_and_drops_pyroute2_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("debug")
        # pyroute2 sets its loggers' levels when imported, after the daemon set its own.
        logging.getLogger("pyroute2.netlink.core").setLevel(logging.DEBUG)
        logging.getLogger("pyroute2.netlink.core").debug("message %s", 1)
        logging.getLogger("pyroute2.netlink.core").warning("kept warning")
        logging.getLogger("asyncio").debug("Using selector: EpollSelector")
        logging.getLogger("vmcri.test").debug("kept debug")
    finally:
        root.handlers[:], root.level = saved
        logging.getLogger("pyroute2.netlink.core").setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["logger"], e["msg"]) for e in lines] == [
        ("pyroute2.netlink.core", "kept warning"),
        ("vmcri.test", "kept debug"),
    ]
