"""Requests that a daemon with one runc pod (the anchor) accepts: what the fuzzer mutates."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message

from vmcri.api import api_pb2 as pb

MIB = 1024 * 1024


def pod_config(tmp: Path, name: str) -> pb.PodSandboxConfig:
    """A pod as kubelet describes one, with every section of the config filled in."""
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="fuzz"),
        hostname=name,
        log_directory=str(tmp / "logs" / name),
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["fuzz.svc"], options=["ndots:5"]),
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080)],
        labels={"io.kubernetes.pod.name": name},
        annotations={"fuzz": "seed"},
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.POD),
                run_as_user=pb.Int64Value(value=0),
                supplemental_groups=[1000],
            ),
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            resources=pb.LinuxContainerResources(
                cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=64 * MIB
            ),
        ),
    )


def seeds(tmp: Path, anchor: str, container_id: str, image: str) -> dict[str, list[Message]]:
    """Per RPC name, requests that name real objects (the anchor pod, its running
    container, the pulled image) and pass every check."""
    resources = pb.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=64 * MIB
    )
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        image=pb.ImageSpec(image=image),
        command=["sh", "-c", "true"],
        working_dir="/",
        envs=[pb.KeyValue(key="A", value=b"1")],
        mounts=[pb.Mount(container_path="/data", host_path=str(tmp / "logs"), readonly=True)],
        log_path="c.log",
        linux=pb.LinuxContainerConfig(resources=resources),
    )
    return {
        "RunPodSandbox": [
            pb.RunPodSandboxRequest(config=pod_config(tmp, "seed"), runtime_handler="runc")
        ],
        "UpdatePodSandboxResources": [
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=anchor, resources=resources)
        ],
        "CreateContainer": [
            pb.CreateContainerRequest(
                pod_sandbox_id=anchor, config=container, sandbox_config=pod_config(tmp, "anchor")
            )
        ],
        "ExecSync": [pb.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=10)],
        "Exec": [pb.ExecRequest(container_id=container_id, cmd=["sh"], stdin=True, stdout=True)],
        "Attach": [pb.AttachRequest(container_id=container_id, stdout=True)],
        "ContainerStatus": [pb.ContainerStatusRequest(container_id=container_id, verbose=True)],
        "ContainerStats": [pb.ContainerStatsRequest(container_id=container_id)],
        "ReopenContainerLog": [pb.ReopenContainerLogRequest(container_id=container_id)],
        "UpdateContainerResources": [
            pb.UpdateContainerResourcesRequest(container_id=container_id, linux=resources)
        ],
        "StopContainer": [pb.StopContainerRequest(container_id=container_id, timeout=1)],
        "ImageStatus": [pb.ImageStatusRequest(image=pb.ImageSpec(image=image), verbose=True)],
        "PortForward": [pb.PortForwardRequest(pod_sandbox_id=anchor, port=[8080])],
        "PodSandboxStatus": [pb.PodSandboxStatusRequest(pod_sandbox_id=anchor, verbose=True)],
        "ListPodSandbox": [
            pb.ListPodSandboxRequest(
                filter=pb.PodSandboxFilter(
                    id=anchor[:8], state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY)
                )
            )
        ],
        "ListContainers": [
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=anchor))
        ],
        "UpdateRuntimeConfig": [
            pb.UpdateRuntimeConfigRequest(
                runtime_config=pb.RuntimeConfig(
                    network_config=pb.NetworkConfig(pod_cidr="10.88.0.0/16")
                )
            )
        ],
    }
