"""The HTTP server of the ``[metrics]`` endpoint (prometheus_client's own)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import Collector

from vmcri.errors import ConfigError
from vmcri.metrics.address import check_metrics_address
from vmcri.metrics.families import REGISTRY

log = logging.getLogger(__name__)


class MetricsServer:
    def __init__(
        self, address: str, allow_non_loopback: bool, collectors: Sequence[Collector] = ()
    ) -> None:
        self._address = check_metrics_address(address, allow_non_loopback)
        self._collectors = tuple(collectors)  # registered while the server runs
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; raises ConfigError when the address cannot be bound."""
        host, port = self._address
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as exc:
            raise ConfigError(f"metrics.address: cannot listen on {host}:{port}: {exc}") from exc
        for collector in self._collectors:
            REGISTRY.register(collector)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        for collector in self._collectors:
            with contextlib.suppress(KeyError):  # start() failed before registering it
                REGISTRY.unregister(collector)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
