"""CNI capability arguments (CONVENTIONS.md) and CNI_ARGS from a pod's CRI config.

Capabilities go only to plugins that declare them: ``portMappings`` (hostPort
entries), ``bandwidth`` (the ``kubernetes.io/{ingress,egress}-bandwidth``
annotations), ``ipRanges`` (the pod CIDR kubelet gave UpdateRuntimeConfig,
one range set per CIDR as containerd does) and ``dns``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from vmcri.errors import InvalidArgument
from vmcri.model import PodConfig

INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
# kubelet's bounds for the bandwidth annotations (1k .. 1P bits per second).
MIN_BANDWIDTH = 1000
MAX_BANDWIDTH = 10**15
# The bandwidth plugin wants a burst; containerd and CRI-O give the largest it accepts.
BANDWIDTH_BURST = 2**32 - 1

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$")
_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(text: str, where: str) -> int:
    """A Kubernetes quantity ("10M", "1Gi", "500k") as an integer; raises InvalidArgument."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise InvalidArgument(f"{where}: {text!r} is not a quantity such as 10M or 1Gi")
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def bandwidth(annotations: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, prefix in ((INGRESS_ANNOTATION, "ingress"), (EGRESS_ANNOTATION, "egress")):
        if key not in annotations:
            continue
        where = f"config.annotations[{key!r}]"
        rate = parse_quantity(annotations[key], where)
        if not MIN_BANDWIDTH <= rate <= MAX_BANDWIDTH:
            raise InvalidArgument(f"{where}: must be between 1k and 1P bits per second")
        out[f"{prefix}Rate"] = rate
        out[f"{prefix}Burst"] = BANDWIDTH_BURST
    return out


def ip_ranges(pod_cidr: str) -> list[list[dict[str, str]]]:
    ranges = []
    for cidr in (c.strip() for c in pod_cidr.split(",")):
        if not cidr:
            continue
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue  # UpdateRuntimeConfig refuses bad CIDRs; an old one is not worth failing on
        ranges.append([{"subnet": cidr}])
    return ranges


def capability_args(pod: PodConfig, pod_cidr: str) -> dict[str, Any]:
    """The runtimeConfig values vmcri offers; raises InvalidArgument for bad annotations."""
    caps: dict[str, Any] = {}
    ports = [
        {
            "hostPort": p.host_port,
            "containerPort": p.container_port,
            "protocol": p.protocol.name.lower(),
            **({"hostIP": p.host_ip} if p.host_ip else {}),
        }
        for p in pod.port_mappings
        if p.host_port > 0  # a port without a host side is only documentation (containerd)
    ]
    if ports:
        caps["portMappings"] = ports
    limits = bandwidth(pod.annotations)
    if limits:
        caps["bandwidth"] = limits
    ranges = ip_ranges(pod_cidr)
    if ranges:
        caps["ipRanges"] = ranges
    dns = pod.dns
    if dns.servers or dns.searches or dns.options:
        caps["dns"] = {
            "servers": list(dns.servers),
            "searches": list(dns.searches),
            "options": list(dns.options),
        }
    return caps


def cni_args(pod: PodConfig, sandbox_id: str) -> dict[str, str]:
    m = pod.metadata
    return {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": m.namespace,
        "K8S_POD_NAME": m.name,
        "K8S_POD_INFRA_CONTAINER_ID": sandbox_id,
        "K8S_POD_UID": m.uid,
    }
