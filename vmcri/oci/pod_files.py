"""Contents of a pod's /etc/hostname, /etc/hosts and /etc/resolv.conf. Pure.

Shared by both handlers (the runc backend writes them on the host, the VM
backend sends them to the guest) and by the pod service, which names a pod's
host; it lives here, beside the spec generator whose mounts show the files to
every container, so no handler imports another's modules.
"""

from __future__ import annotations

from vmcri.errors import InvalidArgument
from vmcri.model import DNSConfig

MAX_SEARCHES = 32
# kubelet's limit for a pod's host name (a DNS label); Linux takes at most 64 bytes.
MAX_HOSTNAME = 63


def pod_hostname(hostname: str) -> str:
    """The host name a pod gets: cut to 63 bytes like kubelet does, no trailing '-' or '.'.

    A long pod name must not fail RunPodSandbox (sethostname would refuse it).
    """
    raw = hostname.encode()
    if len(raw) <= MAX_HOSTNAME:
        return hostname
    return raw[:MAX_HOSTNAME].decode(errors="ignore").rstrip("-.")


def hostname_file(hostname: str) -> str:
    return f"{hostname}\n" if hostname else ""


def hosts_file(hostname: str, ips: tuple[str, ...] = ()) -> str:
    """Localhost entries plus the pod's own name on its addresses (kubelet's managed layout)."""
    lines = [
        "# Kubernetes-managed hosts file (vmcri).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    for ip in ips:
        if hostname:
            lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(dns: DNSConfig) -> str:
    """resolv.conf(5) from the CRI DNSConfig; empty config gives an empty file.

    Raises InvalidArgument naming ``dns_config.<field>`` for entries with
    whitespace or too many search domains.
    """
    for field, values in (
        ("servers", dns.servers),
        ("searches", dns.searches),
        ("options", dns.options),
    ):
        for i, value in enumerate(values):
            if not value or any(c.isspace() for c in value):
                raise InvalidArgument(f"dns_config.{field}[{i}]: {value!r} is not a valid entry")
    if len(dns.searches) > MAX_SEARCHES:
        raise InvalidArgument(f"dns_config.searches: more than {MAX_SEARCHES} domains")
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + ("\n" if lines else "")
