"""Structured logging: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pyroute2 logs every netlink message at debug (kilobytes per pod start, see
    # network/netlink.py), and each of its sockets makes an asyncio loop that says so at
    # debug: vmcri's own debug lines would drown in them. A filter on the handler, as
    # pyroute2 sets its own loggers' levels when it is imported, later.
    handler.addFilter(_quiet_libraries)


QUIET_AT_DEBUG = ("pyroute2", "asyncio")


def _quiet_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO or not record.name.startswith(QUIET_AT_DEBUG)
