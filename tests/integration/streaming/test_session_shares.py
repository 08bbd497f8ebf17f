"""One pod's streaming sessions cannot crowd out another's: a pod that holds its share of
port-forward sessions gets 503 naming the limit for its next one, while another pod's exec
still gets a session (real daemon, runc pods)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.harness import NO_POD_NETWORK, daemon_with_busybox
from tests.integration.streaming.clients import SpdyClient, spdy_exec
from tests.integration.streaming.conftest import StreamEnv
from tests.support.wait import wait_for

SHARE = 3
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
FORWARD = ("portforward.k8s.io",)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("shares")
    config = f"{NO_POD_NETWORK}[streaming]\nmax_sessions_per_pod = {SHARE}\n"
    with daemon_with_busybox(tmp, StreamEnv, config) as stream_env:
        yield stream_env


@pytest.mark.integration
def test_a_pods_port_forwards_cannot_turn_another_pods_exec_away(env: StreamEnv) -> None:
    busy, busy_pod = env.run_pod("busy", "runc")
    env.run_container(busy, busy_pod, "main", SLEEPER)
    quiet, quiet_pod = env.run_pod("quiet", "runc")
    quiet_container = env.run_container(quiet, quiet_pod, "main", SLEEPER)
    held: list[SpdyClient] = []
    try:
        for _ in range(SHARE):
            held.append(SpdyClient(env.port_forward_url(busy, [8080]), protocols=FORWARD))
        assert [c.answer.status for c in held] == [101] * SHARE

        over = SpdyClient(env.port_forward_url(busy, [8080]), protocols=FORWARD)
        assert over.answer.status == 503
        body = over.answer.body.decode()
        assert f"pod sandbox {busy} (limit {SHARE} per pod" in body
        assert "streaming.max_sessions_per_pod" in body
        over.close()

        result = spdy_exec(env.exec_url(quiet_container, ["echo", "served"], stdout=True))
        assert result.stdout == b"served\n"
        assert result.status["status"] == "Success"

        # A session of the busy pod that ends gives its slot back to that pod.
        held.pop().close()
        url = env.port_forward_url(busy, [8080])

        def admitted() -> bool:
            client = SpdyClient(url, protocols=FORWARD)
            if client.answer.status == 101:
                held.append(client)
                return True
            assert client.answer.status == 503  # the token is kept for the next try
            client.close()
            return False

        wait_for(admitted, 30, "the freed slot")
    finally:
        for client in held:
            client.close()
