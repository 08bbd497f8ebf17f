"""The guest's network namespace for a pod whose containers have user namespaces of their own.

Such a container joins the guest's network namespace, which the guest's initial user
namespace owns (``vmcri/oci/own_userns.py``), so its root holds no capability there: it
could not bind a port below 1024 (``CAP_NET_BIND_SERVICE``), open a raw socket to ping,
nor write the pod's sysctls, which runc would try from inside. The namespace is the
pod's alone (the VM is the pod), so the agent does what containerd does for every pod
(``enable_unprivileged_ports``, ``enable_unprivileged_icmp``): any process may bind any
port and send ICMP echo, unless the pod's own sysctls say otherwise. The pod's sysctls
were written at SetupSandbox already, so they leave the container's spec.
"""

from __future__ import annotations

from pathlib import Path

from vmcri.errors import HostCommandError

UNPRIVILEGED = {
    "net.ipv4.ip_unprivileged_port_start": "0",
    "net.ipv4.ping_group_range": "0 2147483647",
}


def open_to_the_pods_users(spec: dict[str, object], proc_sys: Path | None) -> None:
    """Move the pod's sysctls out of ``spec``; with ``proc_sys`` (in a guest), write the
    UNPRIVILEGED ones the pod did not set. Raises HostCommandError."""
    linux = spec.get("linux")
    raw = linux.pop("sysctl", {}) if isinstance(linux, dict) else {}
    pods = raw if isinstance(raw, dict) else {}
    if proc_sys is None:
        return
    for key, value in UNPRIVILEGED.items():
        if key in pods:
            continue
        path = proc_sys / key.replace(".", "/")
        try:
            path.write_text(value)
        except FileNotFoundError:
            continue  # a kernel without IPv4
        except OSError as exc:
            raise HostCommandError(f"sysctl {key}={value}: {exc}") from exc
