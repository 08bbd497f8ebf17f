"""A real daemon with NRI enabled (its socket below the test's tmp), serving both handlers,
and scripted plugins (tests/support/nri_plugin.py) that connect to it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.nri_plugin import Behaviour, ScriptedPlugin, install_launched
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

REQUEST_TIMEOUT_S = 3


def nri_config(tmp: Path) -> str:
    return (
        f'[nri]\nenable = true\nsocket_path = "{tmp / "nri" / "nri.sock"}"\n'
        f'plugin_path = "{tmp / "plugins"}"\nrequest_timeout_s = {REQUEST_TIMEOUT_S}\n'
        "registration_timeout_s = 3\n"
    )


@pytest.fixture(scope="module")
def nri_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    tmp = tmp_path_factory.mktemp("nri")
    install_launched(str(tmp / "plugins"), "05-launched", str(tmp / "launched.events"))
    with vm_daemon(tmp, NO_POD_NETWORK + nri_config(tmp)) as env:
        yield env


PluginFactory = Callable[[str, str, Behaviour], ScriptedPlugin]


@pytest.fixture
def connect(nri_env: VmEnv) -> Iterator[PluginFactory]:
    with plugins_of(nri_env) as make:
        yield make


@contextlib.contextmanager
def plugins_of(nri_env: VmEnv) -> Iterator[PluginFactory]:
    """Connect scripted plugins; each is hung up on the way out, and the daemon seen to
    have dropped it."""
    plugins: list[ScriptedPlugin] = []

    def make(name: str, idx: str, behaviour: Behaviour) -> ScriptedPlugin:
        plugin = ScriptedPlugin(name, idx, behaviour)
        plugin.connect(str(nri_env.tmp / "nri" / "nri.sock"))
        wait_for(lambda: plugin.synchronized, 30, f"{name}'s Synchronize")
        plugins.append(plugin)
        return plugin

    yield make
    for plugin in plugins:
        plugin.close()
    log = nri_env.tmp / "daemon.log"
    for plugin in plugins:
        name = f"NRI plugin {plugin.idx}-{plugin.name}: disconnected"
        wait_for(lambda n=name: n in log.read_text(), 30, name)  # type: ignore[misc]


def exec_in(env: VmEnv, container_id: str, script: str) -> str:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    response: pb.ExecSyncResponse = env.runtime.ExecSync(request, timeout=120)
    assert response.exit_code == 0, response.stderr
    return response.stdout.decode()


def remove_pod(env: VmEnv, sandbox_id: str) -> None:
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.sandboxes.remove(sandbox_id)
