"""The contract every sandbox backend (``vm``, ``runc``) fulfils.

The pod and container services (``vmcri.runtime``) own the records, names,
state transitions and log paths; a backend only does the host work of a pod:
its lifecycle, and what a container needs of its pod (where its agent is, its
rootfs and volumes prepared and released, room made for it). A running
container is the supervisor's (``vmcri.supervisor.api``), which the container
service calls directly. Every method is idempotent where the CRI contract asks
for it (stop, remove), treats "already gone" as success, and leaves nothing
behind when it fails half-way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.model import Condition, ImageInfo, PodConfig, Resources
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerSupervisor, PortConnection


@dataclass(frozen=True)
class HandlerFeatures:
    """What CRI Status reports per runtime handler."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False
    # Whether pods with NamespaceMode.NODE network (hostNetwork) can run; not reported to
    # kubelet, checked by the pod service, which names the field when it refuses one.
    host_network: bool = True
    # Whether pods and containers may share the node's PID or IPC namespace (hostPID,
    # hostIPC); a VM has neither to give. Checked like host_network, never reported.
    host_pid_ipc: bool = True
    # Whether containers run inside a guest, where the host's device nodes and binaries
    # (OCI hooks) do not exist: NRI adjustments that need them are refused (vmcri.nri).
    in_guest: bool = False
    # For a pod with a user namespace, the backend makes the pod's network namespace
    # itself, inside it, and reports it as SandboxStarted.netns_path; CNI runs on it
    # after run_sandbox. (runc 1.1 joins the user namespace first, and could not join a
    # network namespace the host's user namespace owns.)
    userns_owns_netns: bool = False


@dataclass(frozen=True)
class SandboxStarted:
    """What a backend reports after a sandbox is up."""

    runtime: dict[str, str] = field(default_factory=dict)  # facts to find it again
    netns_path: str = ""
    ip: str = ""
    additional_ips: tuple[str, ...] = ()


class SandboxBackend(Protocol):
    """One isolation technology for pods, chosen per RuntimeClass handler."""

    def features(self) -> HandlerFeatures: ...

    def conditions(self) -> Sequence[Condition]:
        """Warnings or failures to show in CRI Status (e.g. running without KVM)."""
        ...

    # ---- the sandbox's lifecycle -----------------------------------------------------

    def new_sandbox_id(self, config: PodConfig) -> str:
        """The ID of a new pod of ``config``, asked once per RunPodSandbox before its record
        exists: a fresh one (``vmcri.ids.new_id``), or the ID under which this backend made
        the pod's isolation in advance (the vm handler's pool of restored VMs): it is the
        pod's from then on, and ``run_sandbox`` of a record with that ID takes it over."""
        ...

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        """Bring the pod's isolation up; on failure, undo everything and raise."""
        ...

    def stop_sandbox(self, sandbox: SandboxRecord) -> None:
        """Stop the sandbox; idempotent. The container service has killed its containers
        and waited for their exits (``ContainerService.kill_all``, the one owner of that);
        one that is somehow still running ends with the pod and its exit (137) is sent up.
        """
        ...

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        """Release everything the sandbox held; idempotent."""
        ...

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool: ...

    # ---- what a container needs of its pod -------------------------------------------

    @property
    def supervisor(self) -> ContainerSupervisor:
        """Where the pod's containers run: the supervisor over its agent, placed where this
        backend runs the agent (in the VM, on the host). The container service calls it
        directly for a running container."""
        ...

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        """Prepare the container's rootfs, volumes and spec (making room for it first where
        the pod has a size) and hand it to the pod's supervisor (runc create); return facts
        to keep in its record. On failure nothing is left behind."""
        ...

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """Delete it in the pod's supervisor and release its rootfs and volumes; idempotent."""
        ...

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        """Give the container ``resources`` (UpdateContainerResources), making room for them
        first where the backend's isolation has a size (a VM grows); raises InvalidArgument
        naming ``linux.<field>`` when it cannot."""
        ...

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        """The pod's limits become ``resources`` (UpdatePodSandboxResources): make room for
        them, or raise InvalidArgument naming ``resources.<field>``, before they are recorded.
        A backend whose pods have no size of their own (the runc handler: kubelet sizes the
        pod cgroup itself) does nothing."""
        ...

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Connect to 127.0.0.1:``port`` in the pod's network namespace.

        Raises Unavailable (nothing listens) or FailedPrecondition (pod not running).
        """
        ...
