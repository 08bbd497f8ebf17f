"""What the end-to-end suites share: a real daemon whose store holds a busybox image from a
real registry on loopback, torn down completely however a test ends, and polling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import grpc

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry, registries_conf_for, registry_or_skip
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import HostMounter, mount_points

IMAGE_NAME = "test/busybox:1"
NO_POD_NETWORK = "[network]\nenabled = false\n"


class Env(Protocol):
    """A suite's environment: the daemon (a test may restart it) and the pods it made."""

    daemon: RunningDaemon
    sandboxes: list[str]


E = TypeVar("E", bound=Env)


@contextlib.contextmanager
def daemon_with_busybox(
    tmp: Path,
    make_env: Callable[[Path, LocalRegistry, str, RunningDaemon], E],
    extra_config: str = NO_POD_NETWORK,
) -> Iterator[E]:
    """Registry + busybox image + daemon (config in ``tmp/config.toml``, plus
    ``extra_config``), image pulled.

    ``extra_config`` is appended to the config; by default pods get loopback only
    (no CNI), which suites that are not about networking rely on.

    On the way out every pod the suite recorded is removed, the daemon stopped and
    every mount below ``tmp`` released, which must leave none behind.
    """
    with registry_or_skip(tmp / "registry") as registry:
        push_busybox_image(registry.host, IMAGE_NAME)
        image = f"{registry.host}/{IMAGE_NAME}"
        conf = registries_conf_for(tmp / "registries.conf", registry.host)
        (tmp / "config.toml").write_text(f'registries_conf = "{conf}"\n{extra_config}')
        env = make_env(tmp, registry, image, start_daemon(tmp, config=tmp / "config.toml"))
        try:
            env.daemon.images().PullImage(
                pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120
            )
            yield env
        finally:
            runtime = env.daemon.runtime()
            for sandbox_id in env.sandboxes:
                with contextlib.suppress(grpc.RpcError):
                    runtime.RemovePodSandbox(
                        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
                    )
            stop_daemon(env.daemon)
            HostMounter().unmount_below(tmp)
            assert mount_points(tmp) == []
