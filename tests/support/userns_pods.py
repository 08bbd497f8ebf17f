"""CRI messages of a pod with its own user namespace, as kubelet sends them for
``hostUsers: false`` (one range of 65536 IDs at a multiple of 65536), shared by the VM
integration and security tests."""

from __future__ import annotations

from vmcri.api import api_pb2 as pb

BASE = 65536
SIZE = 65536


def userns_options(base: int = BASE) -> pb.NamespaceOption:
    ids = [pb.IDMapping(host_id=base, container_id=0, length=SIZE)]
    return pb.NamespaceOption(
        network=pb.POD,
        pid=pb.CONTAINER,
        ipc=pb.POD,
        userns_options=pb.UserNamespace(mode=pb.POD, uids=ids, gids=ids),
    )


def pod_linux(base: int = BASE) -> pb.LinuxPodSandboxConfig:
    return pb.LinuxPodSandboxConfig(
        security_context=pb.LinuxSandboxSecurityContext(namespace_options=userns_options(base))
    )


def container_linux(
    base: int = BASE, security: pb.LinuxContainerSecurityContext | None = None
) -> pb.LinuxContainerConfig:
    context = pb.LinuxContainerSecurityContext()
    if security is not None:
        context.CopyFrom(security)
    context.namespace_options.CopyFrom(userns_options(base))
    return pb.LinuxContainerConfig(security_context=context)
