"""Which CRI calls may hold a server thread for long, and whose pod pays for them.

grpcio's sync server runs every RPC on one thread pool. kubelet polls the runtime every
second (PLEG's ListPodSandbox/ListContainers, Status, Version, the *Status and stats
calls): when slow calls hold every thread, the poll waits, PLEG reports the runtime
unhealthy and the node goes NotReady. So every RPC has a class:

``POLL``
    Answers from records or quick backend reads; never limited. The pool has threads
    beyond every slow bound together (``vmcri.cri.server``), so a POLL call never
    waits behind slow ones.
``WORK``
    May run for as long as a request or an image asks (ExecSync up to its time-out,
    PullImage, RunPodSandbox, Create/StartContainer, resource updates). Counted per
    pod and node-wide; over either bound the call is refused at once with
    RESOURCE_EXHAUSTED, never queued.
``TEARDOWN``
    Stop/Remove of a live container or sandbox (a stop waits out the grace period). A
    bucket of its own, so a pod's hung ExecSyncs can never refuse the stop that would
    end them. A teardown whose target is already gone, stopped or removed is POLL: the
    CRI says such a call "must not return an error", and it is quick, so it is never
    refused.
``STREAM``
    GetContainerEvents: holds a thread for as long as the client listens. Node-wide
    bound only (it belongs to no pod).

What kubelet does with RESOURCE_EXHAUSTED (why refusing is safe):

* ExecSync of a probe: the exec prober turns an error that is neither an exit status
  nor a time-out into ``probe.Unknown`` with an error; the prober records a warning
  event ("Liveness probe errored and resulted in unknown state: rpc error: code =
  ResourceExhausted desc = <our message>") and the probe worker throws the result away
  ("Prober error, throw away the result") and probes again next period: an over-share
  probe neither fails nor restarts the container, and the pod's owner sees why. ExecSync of a
  lifecycle hook fails the hook (postStart: the container is killed and restarted
  with back-off, as for a hook that failed for any reason).
* StopContainer/StopPodSandbox of a live target: killContainer returns the error, the
  pod worker's sync fails and is retried (back-off in seconds), so the pod stops in
  waves of its share; the container keeps running meanwhile, which the CRI allows
  (a stop ends when it returns, not before).
* RunPodSandbox, CreateContainer, StartContainer, PullImage: the pod's sync fails with
  the message as its event and kubelet retries with its back-off, as for any error.

A pod's calls are keyed by its sandbox ID; RunPodSandbox (no sandbox yet) and PullImage
(which carries the pod's config, if any) by the pod's UID, so one pod's start-up is its
own bucket too. Calls naming a container or sandbox that does not exist are POLL: they
answer NOT_FOUND at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState


class CallClass(Enum):
    POLL = "poll"
    WORK = "work"
    TEARDOWN = "teardown"
    STREAM = "stream"


NODE = "node"  # the key of slow calls that name no pod (crictl pull, RemoveImage)


@dataclass(frozen=True)
class Admit:
    """What one call takes: its class and the pod (key) it is counted against."""

    kind: CallClass
    pod: str = NODE


POLL = Admit(CallClass.POLL)


class Targets(Protocol):
    """The records a call names, as stored (no backend is asked: this runs per call)."""

    def container(self, container_id: str) -> ContainerRecord | None: ...

    def sandbox(self, sandbox_id: str) -> SandboxRecord | None: ...

    def containers_of(self, sandbox_id: str) -> Sequence[ContainerRecord]: ...


Classifier = Callable[[Any, Targets], Admit]


def _work_in_container(request: Any, targets: Targets) -> Admit:
    container = _find_container(request.container_id, targets)
    return POLL if container is None else Admit(CallClass.WORK, container.sandbox_id)


def _work_in_sandbox(request: Any, targets: Targets) -> Admit:
    sandbox = _find_sandbox(request.pod_sandbox_id, targets)
    return POLL if sandbox is None else Admit(CallClass.WORK, sandbox.id)


def _run_sandbox(request: Any, _: Targets) -> Admit:
    return Admit(CallClass.WORK, _pod_uid_key(request.config.metadata))


def _pull_image(request: Any, _: Targets) -> Admit:
    if request.HasField("sandbox_config"):
        return Admit(CallClass.WORK, _pod_uid_key(request.sandbox_config.metadata))
    return Admit(CallClass.WORK, NODE)


def _node_work(_: Any, __: Targets) -> Admit:
    return Admit(CallClass.WORK, NODE)


def _stop_container(request: Any, targets: Targets) -> Admit:
    container = _find_container(request.container_id, targets)
    if container is None or container.state is ContainerState.EXITED:
        return POLL
    return Admit(CallClass.TEARDOWN, container.sandbox_id)


def _remove_container(request: Any, targets: Targets) -> Admit:
    container = _find_container(request.container_id, targets)
    return POLL if container is None else Admit(CallClass.TEARDOWN, container.sandbox_id)


def _stop_sandbox(request: Any, targets: Targets) -> Admit:
    sandbox = _find_sandbox(request.pod_sandbox_id, targets)
    if sandbox is None:
        return POLL
    if sandbox.state is SandboxState.NOTREADY and all(
        c.state is ContainerState.EXITED for c in targets.containers_of(sandbox.id)
    ):
        return POLL  # already stopped: the CRI forbids an error here
    return Admit(CallClass.TEARDOWN, sandbox.id)


def _remove_sandbox(request: Any, targets: Targets) -> Admit:
    sandbox = _find_sandbox(request.pod_sandbox_id, targets)
    return POLL if sandbox is None else Admit(CallClass.TEARDOWN, sandbox.id)


def _stream(_: Any, __: Targets) -> Admit:
    return Admit(CallClass.STREAM)


def _poll(_: Any, __: Targets) -> Admit:
    return POLL


_R = "runtime.v1.RuntimeService/"
_I = "runtime.v1.ImageService/"

# Every RPC of both services; a unit test checks the proto has no other, so a new RPC
# must be placed here before it is served.
CLASSES: dict[str, Classifier] = {
    # kubelet's every-second calls and other answers from records.
    **{
        _R + name: _poll
        for name in (
            "Version",
            "Status",
            "RuntimeConfig",
            "UpdateRuntimeConfig",
            "PodSandboxStatus",
            "ListPodSandbox",
            "StreamPodSandboxes",
            "ContainerStatus",
            "ListContainers",
            "StreamContainers",
            "ContainerStats",
            "ListContainerStats",
            "StreamContainerStats",
            "PodSandboxStats",
            "ListPodSandboxStats",
            "StreamPodSandboxStats",
            "ListMetricDescriptors",
            "ListPodSandboxMetrics",
            "StreamPodSandboxMetrics",
            "ReopenContainerLog",
            # The streaming URL calls only issue a token; the session runs elsewhere
            # (the streaming server, with its own per-pod share).
            "Exec",
            "Attach",
            "PortForward",
        )
    },
    **{_I + name: _poll for name in ("ListImages", "StreamImages", "ImageStatus", "ImageFsInfo")},
    # Calls that may run for long, counted against their pod.
    _R + "ExecSync": _work_in_container,
    _R + "StartContainer": _work_in_container,
    _R + "UpdateContainerResources": _work_in_container,
    _R + "CheckpointContainer": _work_in_container,
    _R + "CreateContainer": _work_in_sandbox,
    _R + "UpdatePodSandboxResources": _work_in_sandbox,
    _R + "CheckpointPod": _work_in_sandbox,
    _R + "RunPodSandbox": _run_sandbox,
    _R + "RestorePod": _node_work,
    _I + "PullImage": _pull_image,
    _I + "RemoveImage": _node_work,
    # Teardown: a bucket of its own (see the module docstring).
    _R + "StopContainer": _stop_container,
    _R + "RemoveContainer": _remove_container,
    _R + "StopPodSandbox": _stop_sandbox,
    _R + "RemovePodSandbox": _remove_sandbox,
    _R + "GetContainerEvents": _stream,
}


def classify(method: str, request: Any, targets: Targets) -> Admit:
    """The class and pod of a call of ``method`` ("/runtime.v1.RuntimeService/ExecSync").

    A method not in :data:`CLASSES` (none the proto has) is WORK of the node: unknown
    work is bounded rather than trusted to be quick.
    """
    classifier = CLASSES.get(method.lstrip("/"), _node_work)
    return classifier(request, targets)


def _find_container(container_id: str, targets: Targets) -> ContainerRecord | None:
    return targets.container(container_id) if container_id else None


def _find_sandbox(sandbox_id: str, targets: Targets) -> SandboxRecord | None:
    return targets.sandbox(sandbox_id) if sandbox_id else None


def _pod_uid_key(metadata: Any) -> str:
    uid = metadata.uid or f"{metadata.namespace}/{metadata.name}"
    return f"uid:{uid}"
