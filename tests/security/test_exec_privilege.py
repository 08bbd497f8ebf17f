"""A program a container planted gains nothing when an exec runs it.

kubelet runs exec probes and ``kubectl exec`` commands by path inside the container, and
the container decides what is at that path. A container that runs as a user without
capabilities writes a program where a probe will run it; the exec must run it as that
same user with the same (no) capabilities, on both handlers. The guest's crun ran it as
root with the container's whole bounding set before (issue 21): the planted program
could then write anywhere in the container's filesystem and use those capabilities.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.conformance.conftest import HANDLERS, ConformanceEnv, Pods
from tests.integration.harness import daemon_with_busybox
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

UID = 1001
# Each step needs root or a capability; the last line reports who ran it.
PLANT = (
    "printf '#!/bin/sh\\n"
    "touch /etc/planted-owned; chown 0:0 /tmp/probe; mknod /tmp/planted-mem c 1 1; id -u\\n'"
    " > /tmp/probe && chmod 755 /tmp/probe && exec sleep 3600"
)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("needs root and runc")
    with daemon_with_busybox(tmp_path_factory.mktemp("exec-privilege"), ConformanceEnv) as env:
        yield Pods(env)


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_planted_program_runs_as_the_container_user_without_capabilities(
    pods: Pods, handler: str
) -> None:
    pod = pods.get(handler)
    security = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=UID))
    container_id = pod.run("planter", ["sh", "-c", PLANT], security)
    wait_for(
        lambda: pod.exec(container_id, ["test", "-x", "/tmp/probe"]).exit_code == 0,
        60,
        "the container to plant its program",
    )
    probe = pod.exec(container_id, ["/tmp/probe"])
    assert probe.stdout.split() == [str(UID).encode()], probe
    assert b"Permission denied" in probe.stderr or b"not permitted" in probe.stderr, probe
    left = pod.exec(container_id, ["ls", "-ln", "/etc/planted-owned", "/tmp/planted-mem",
                                   "/tmp/probe"])  # fmt: skip
    listing = left.stdout.decode()
    assert "planted-owned" not in listing and "planted-mem" not in listing, listing
    assert f" {UID} " in listing, listing  # /tmp/probe is still the container user's
    pod.remove(container_id)
