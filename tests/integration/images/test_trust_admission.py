"""Image trust after the pull: CreateContainer checks the pod's namespace's policy
against what the image's pulls verified (kubelet's ``IfNotPresent`` skips PullImage for
an image already present), and the node's policy and registries.d take effect when
edited. A real daemon, Debian's docker-registry, skopeo and gpg; runc pods (the check
is in the image service, before any backend is asked for anything)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.vm.conftest import BOOT_TIMEOUT_S, destroy_domain, wait_for_template
from tests.support.registry import LocalRegistry
from tests.support.trust_env import TrustNode, trust_node
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[TrustNode]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("needs root and runc (runc pods)")
    with trust_node(tmp_path_factory.mktemp("admission"), registry) as running:
        yield running


@pytest.fixture(scope="module")
def namespaces(node: TrustNode) -> Iterator[None]:
    """``relaxed`` accepts anything; ``strict`` wants the release key's signature."""
    release_key = node.tmp / "keys" / "release.asc"
    signed = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(release_key)}]
    (node.policy_dir / "relaxed.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    (node.policy_dir / "strict.json").write_text(json.dumps({"default": signed}))
    yield
    for name in ("relaxed", "strict"):
        (node.policy_dir / f"{name}.json").unlink()


class Pods:
    """runc pods of the trust node's daemon, removed on the way out."""

    def __init__(self, node: TrustNode) -> None:
        self.node = node
        self.sandboxes: list[str] = []

    def run(self, namespace: str, handler: str = "runc") -> tuple[str, pb.PodSandboxConfig]:
        name = f"p-{uuid.uuid4().hex[:8]}"
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace=namespace),
            log_directory=str(self.node.tmp / "logs" / name),
        )
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        runtime = self.node.daemon.runtime()
        sandbox_id = str(runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id)
        self.sandboxes.append(sandbox_id)
        return sandbox_id, config

    def create(self, pod: tuple[str, pb.PodSandboxConfig], image: str, volume: str = "") -> str:
        """CreateContainer of ``image``, with ``volume`` mounted as an image volume."""
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=f"c-{uuid.uuid4().hex[:8]}"),
            image=pb.ImageSpec(image=image),
            command=["/bin/true"],
        )
        if volume:
            config.mounts.append(
                pb.Mount(container_path="/vol", image=pb.ImageSpec(image=volume), readonly=True)
            )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod[0], config=config, sandbox_config=pod[1]
        )
        return str(self.node.daemon.runtime().CreateContainer(request, timeout=120).container_id)

    def refused(
        self, pod: tuple[str, pb.PodSandboxConfig], image: str, *words: str, volume: str = ""
    ) -> str:
        """CreateContainer is refused FAILED_PRECONDITION with ``words``, creating nothing."""
        runtime = self.node.daemon.runtime()
        with pytest.raises(grpc.RpcError) as err:
            self.create(pod, image, volume)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        message = str(err.value.details())
        assert "SignatureValidationFailed: " in message, message
        for word in words:
            assert word in message, message
        listed = runtime.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=pod[0])),
            timeout=30,
        )
        assert list(listed.containers) == []
        return message

    def remove_all(self) -> None:
        runtime = self.node.daemon.runtime()
        try:
            for sandbox_id in self.sandboxes:
                stop = pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
                runtime.StopPodSandbox(stop, timeout=120)
                remove = pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
                runtime.RemovePodSandbox(remove, timeout=120)
        finally:
            for sandbox_id in self.sandboxes:  # a VM RemovePodSandbox could not reach
                destroy_domain(sandbox_id)


@pytest.fixture
def pods(node: TrustNode, namespaces: None) -> Iterator[Pods]:
    made = Pods(node)
    try:
        yield made
    finally:
        made.remove_all()


def _signers(node: TrustNode, image_id: str) -> list[str]:
    """The keys of the signatures the image's record says its pulls verified."""
    path = node.daemon.root / "images" / "records" / f"{image_id.split(':', 1)[1]}.json"
    verified = json.loads(path.read_bytes())["verified"]
    return [str(sig["key"]) for v in verified for sig in v["signatures"]]


def _signatures(node: TrustNode, repo: str, digest: str) -> Path:
    return node.file_store / f"{repo}@{digest.replace(':', '=')}"


def test_image_pulled_for_a_relaxed_namespace_is_refused_in_a_strict_one(
    node: TrustNode, pods: Pods
) -> None:
    pushed = node.push("gpg/adm:1", runnable=True)  # unsigned
    image = f"{node.host}/gpg/adm:1"
    image_id = node.pull(image, namespace="relaxed")
    strict = pods.run("strict")
    message = pods.refused(strict, image, "namespace strict", "strict.json", "signedBy")
    assert "pull the image for this namespace" in message
    # By image ID (what kubelet passes) too: every name it was pulled as is tried.
    pods.refused(strict, image_id, "namespace strict")
    # The relaxed namespace's pods may still use it.
    pods.create(pods.run("relaxed"), image)

    # Signed in place (same manifest), then pulled for the strict namespace: accepted.
    node.skopeo_copy("gpg/adm:1", "gpg/adm:1", sign_by=node.release)
    assert _signatures(node, "gpg/adm", pushed.manifest_digest).is_dir()
    assert node.pull(image, namespace="strict") == image_id
    assert node.release in _signers(node, image_id)
    # The record answers from now on, with no signature store to read.
    shutil.rmtree(_signatures(node, "gpg/adm", pushed.manifest_digest))
    assert pods.create(strict, image)
    assert pods.create(strict, image_id)


def test_signatures_are_fetched_again_where_the_record_cannot_answer(
    node: TrustNode, pods: Pods
) -> None:
    digest = node.signed_image("gpg/again:1", runnable=True)
    image = f"{node.host}/gpg/again:1"
    image_id = node.pull(image, namespace="relaxed")  # verified nothing
    assert _signers(node, image_id) == []
    strict = pods.run("strict")
    assert pods.create(strict, image)  # lookaside read again, the signature verified
    assert _signers(node, image_id) == [node.release]
    shutil.rmtree(_signatures(node, "gpg/again", digest))
    assert pods.create(strict, image)  # now from the record


def test_a_namespace_without_a_policy_uses_the_node_policy(node: TrustNode, pods: Pods) -> None:
    node.push("elsewhere/adm:1", runnable=True)  # the node's default: reject
    image = f"{node.host}/elsewhere/adm:1"
    node.pull(image, namespace="relaxed")
    message = pods.refused(pods.run("plain"), image, "namespace plain", "default[0]", "reject")
    assert str(node.policy) in message
    assert pods.create(pods.run("relaxed"), image)


def test_an_image_volume_is_held_to_the_namespace_policy(node: TrustNode, pods: Pods) -> None:
    signed = f"{node.host}/gpg/base:1"
    node.signed_image("gpg/base:1", runnable=True)
    node.pull(signed, namespace="strict")
    node.push("gpg/data:1")  # unsigned
    data = f"{node.host}/gpg/data:1"
    node.pull(data, namespace="relaxed")
    message = pods.refused(pods.run("strict"), signed, "config.mounts[0].image", volume=data)
    assert "namespace strict" in message
    assert pods.create(pods.run("relaxed"), signed, volume=data)


def test_a_vm_pod_is_held_to_its_namespace_policy_too(node: TrustNode, pods: Pods) -> None:
    node.push("gpg/vm:1", runnable=True)  # unsigned
    image = f"{node.host}/gpg/vm:1"
    node.pull(image, namespace="relaxed")
    wait_for_template(node.daemon)
    pods.refused(pods.run("strict", handler="vm"), image, "namespace strict", "signedBy")
    assert pods.create(pods.run("relaxed", handler="vm"), image)


def _pull_refused(node: TrustNode, image: str, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        node.pull(image)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    message = str(err.value.details())
    for word in words:
        assert word in message, message
    return message


def test_node_policy_edits_take_effect_at_the_next_pull(node: TrustNode) -> None:
    node.push("open/edited:1")
    image = f"{node.host}/open/edited:1"
    original = node.policy.read_bytes()
    doc = json.loads(original)
    doc["transports"]["docker"][f"{node.host}/open"] = [{"type": "reject"}]
    try:
        node.policy.write_text(json.dumps(doc))
        _pull_refused(node, image, f'docker["{node.host}/open"][0]', "reject")
        # A broken edit refuses pulls naming the key; never "accept", never the old file.
        node.policy.write_text(json.dumps({"default": [{"type": "trustMe"}]}))
        message = _pull_refused(node, image, str(node.policy), "trustMe", "is invalid")
        assert "signature policy changed and is invalid" in node.daemon.log.read_text()
        assert message.startswith("SignatureValidationFailed: ")
    finally:
        node.policy.write_bytes(original)
    assert node.pull(image).startswith("sha256:")


def test_registries_d_edits_take_effect_at_the_next_pull(node: TrustNode) -> None:
    node.signed_image("gpg/stores:1")
    image = f"{node.host}/gpg/stores:1"
    conf = node.registries_d / "node.yaml"
    original = conf.read_text()
    try:
        conf.write_text(original.replace("lookaside:", "lookasid:", 1))
        _pull_refused(node, image, "registries.d", "lookasid", "is invalid")
        # A valid edit that points the store elsewhere: the signature is not found there.
        empty = node.tmp / "empty-store"
        empty.mkdir(exist_ok=True)
        conf.write_text(original.replace(f"file://{node.file_store}\n", f"file://{empty}\n", 1))
        _pull_refused(node, image, "no signature found")
    finally:
        conf.write_text(original)
    assert node.pull(image).startswith("sha256:")
