"""Which of the node's namespaces a pod or container may share, by what its handler can give.

A VM pod has its own kernel: the node's PID and IPC namespaces (hostPID, hostIPC)
do not exist inside it, so a VM handler refuses them rather than quietly handing
out the guest's own. A pod's network is checked (and may be routed to another
handler) by the pod service; this covers PID and IPC for pods, and all three for a
container, whose pod has already been placed.
"""

from __future__ import annotations

from vmcri.errors import InvalidArgument
from vmcri.handlers.registry import Handler
from vmcri.model import NamespaceMode, NamespaceOptions


def check_host_namespaces(
    options: NamespaceOptions, handler: Handler, field: str, network: bool = False
) -> None:
    """Raises InvalidArgument naming ``field``.pid/.ipc (and .network, with ``network``)
    when NODE is asked of a handler that cannot share that namespace of the node."""
    features = handler.backend.features()
    asked = [
        ("pid", options.pid, features.host_pid_ipc),
        ("ipc", options.ipc, features.host_pid_ipc),
    ]
    if network:
        asked.append(("network", options.network, features.host_network))
    for name, mode, possible in asked:
        if mode is NamespaceMode.NODE and not possible:
            raise InvalidArgument(
                f"{field}.{name}: NODE (the host's {name.upper()} namespace) is not supported "
                f"by runtime handler {handler.name!r} ({handler.backend_name} pods have a "
                "kernel of their own); run the pod with the runc handler"
            )
