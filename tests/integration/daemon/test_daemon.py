"""The real daemon over its unix socket: runtime info, errors, start-up refusals."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from vmcri.api import api_pb2 as pb

from .conftest import RunningDaemon, start_daemon, stop_daemon

pytestmark = pytest.mark.integration


def serve_expecting_refusal(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `vmcri serve ARGS`, which must refuse to start (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "vmcri", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    return result


def test_version(daemon: RunningDaemon) -> None:
    response = daemon.runtime().Version(pb.VersionRequest(version="0.1.0"))
    assert response.runtime_name == "vmcri"
    assert response.runtime_api_version == "v1"
    assert response.runtime_version


def test_socket_mode_is_0660(daemon: RunningDaemon) -> None:
    mode = daemon.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_status_lists_handlers_and_conditions(daemon: RunningDaemon) -> None:
    response = daemon.runtime().Status(pb.StatusRequest(verbose=True))
    conditions = {c.type: c for c in response.status.conditions}
    assert conditions["RuntimeReady"].status is True
    assert conditions["NetworkReady"].status is False
    assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
    names = [h.name for h in response.runtime_handlers]
    assert sorted(names) == ["", "runc", "vm"]
    assert "config" in response.info


def test_runtime_config_reports_the_cgroup_driver(daemon: RunningDaemon) -> None:
    response = daemon.runtime().RuntimeConfig(pb.RuntimeConfigRequest())
    assert response.linux.cgroup_driver == pb.CGROUPFS


def test_update_runtime_config_is_accepted(daemon: RunningDaemon) -> None:
    request = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.88.0.0/16"))
    )
    assert daemon.runtime().UpdateRuntimeConfig(request) == pb.UpdateRuntimeConfigResponse()
    # The CIDR was read, not dropped: one that is not a network is refused, naming it.
    request.runtime_config.network_config.pod_cidr = "10.88.0.0/33"
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime().UpdateRuntimeConfig(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr" in str(info.value.details())


def test_checkpoint_rpcs_say_which_handler_can_and_why_not(daemon: RunningDaemon) -> None:
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime().CheckpointContainer(
            pb.CheckpointContainerRequest(container_id="a" * 64, location="/tmp/x.tar")
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "container_id" in str(info.value.details())
    status = daemon.runtime().Status(pb.StatusRequest())
    conditions = {c.type: c for c in status.status.conditions}
    assert "PodCheckpointRestore" in conditions


def test_unknown_handler_is_refused_and_leaves_nothing(daemon: RunningDaemon) -> None:
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime().RunPodSandbox(
            pb.RunPodSandboxRequest(config=config, runtime_handler="kata")
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "kata" in str(info.value.details()) and "'runc'" in str(info.value.details())
    assert daemon.runtime().ListPodSandbox(pb.ListPodSandboxRequest()).items == []


def test_malformed_request_is_invalid_argument(daemon: RunningDaemon) -> None:
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime().RunPodSandbox(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig()))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "config.metadata" in str(info.value.details())


def test_garbage_bytes_are_rejected_without_crashing(daemon: RunningDaemon) -> None:
    channel = daemon.channel()
    # No serializers: the bytes go on the wire as they are.
    call = channel.unary_unary(
        "/runtime.v1.RuntimeService/Version", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff garbage")
    assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert daemon.runtime().Version(pb.VersionRequest()).runtime_name == "vmcri"


def test_unknown_ids_are_not_found_and_stop_remove_are_idempotent(daemon: RunningDaemon) -> None:
    runtime = daemon.runtime()
    with pytest.raises(grpc.RpcError) as info:
        runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="deadbeef"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="deadbeef"))
    runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id="deadbeef"))
    runtime.RemoveContainer(pb.RemoveContainerRequest(container_id="deadbeef"))


def test_second_daemon_on_the_same_state_dir_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    other_socket = tmp_path / "other.sock"
    result = serve_expecting_refusal(
        "--socket",
        str(other_socket),
        "--root",
        str(daemon.root),
        "--state",
        str(daemon.state),
    )
    assert "in use by another vmcri daemon" in result.stderr
    assert daemon.runtime().Version(pb.VersionRequest()).runtime_name == "vmcri"


def test_second_daemon_on_the_same_socket_is_refused(daemon: RunningDaemon, tmp_path: Path) -> None:
    result = serve_expecting_refusal(
        "--socket",
        str(daemon.socket),
        "--root",
        str(tmp_path / "r2"),
        "--state",
        str(tmp_path / "s2"),
    )
    assert "in use by a running server" in result.stderr
    assert daemon.socket.exists()
    assert daemon.runtime().Version(pb.VersionRequest()).runtime_name == "vmcri"


def test_stale_socket_is_replaced_and_sigterm_is_graceful(tmp_path: Path) -> None:
    first = start_daemon(tmp_path)
    assert stop_daemon(first, signal.SIGKILL) != 0
    assert first.socket.exists()  # left behind by kill -9
    second = start_daemon(tmp_path)
    assert second.runtime().Version(pb.VersionRequest()).runtime_name == "vmcri"
    assert stop_daemon(second) == 0
    assert not second.socket.exists()


def test_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[runtimes.vm]\nbackend = 'vm'\n[runtimes.vm.options]\nmachine = 'pc'\n")
    result = serve_expecting_refusal(
        "--config",
        str(config),
        "--socket",
        str(tmp_path / "s.sock"),
        "--root",
        str(tmp_path / "r"),
        "--state",
        str(tmp_path / "s"),
    )
    assert "runtimes.vm.options.machine" in result.stderr
    assert not (tmp_path / "s.sock").exists()


def test_socket_path_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    result = serve_expecting_refusal(
        "--socket",
        str(blocker / "vmcri.sock"),
        "--root",
        str(tmp_path / "r"),
        "--state",
        str(tmp_path / "s"),
    )
    assert "socket" in result.stderr
