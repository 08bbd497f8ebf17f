"""Image trust end to end: a real daemon, Debian's docker-registry, signatures made by
Debian's skopeo and gpg (simple signing) and by ``cryptography`` (sigstore), pulls
through the CRI socket. Every refusal answers FAILED_PRECONDITION naming the failed
requirement and leaves the image store exactly as it was."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.daemon.conftest import start_daemon
from tests.support.registry import LocalRegistry
from tests.support.signing import cosign_payload, push_cosign_signatures, sigstore_sign
from tests.support.trust_env import TrustNode, trust_node
from vmcri.cli import main as cli_main
from vmcri.errors import SignatureRefused
from vmcri.images.auth import Deadline
from vmcri.images.service import ImageService
from vmcri.images.trust.verifier import ImageTrust, TrustSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[TrustNode]:
    with trust_node(tmp_path_factory.mktemp("trust"), registry) as running:
        yield running


def _refused(node: TrustNode, image: str, *words: str, namespace: str = "") -> str:
    before = node.image_files()
    with pytest.raises(grpc.RpcError) as err:
        node.pull(image, namespace)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    message = str(err.value.details())
    assert message.startswith("SignatureValidationFailed: "), message
    for word in words:
        assert word in message, message
    assert node.image_files() == before  # no blob, layer, ingest file or record
    return message


def _raw_manifest(image: str) -> bytes:
    """The manifest bytes as the registry serves them (what a signature must name)."""
    args = ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"]
    return subprocess.run(args, capture_output=True, check=True).stdout


def _sig_path(node: TrustNode, store: Path, repo: str, digest: str, n: int = 1) -> Path:
    return store / f"{repo}@{digest.replace(':', '=')}" / f"signature-{n}"


def test_signed_by_the_trusted_key_is_pulled(node: TrustNode) -> None:
    digest = node.signed_image("gpg/app:1")
    image_id = node.pull(f"{node.host}/gpg/app:1")
    assert image_id.startswith("sha256:")
    assert _sig_path(node, node.file_store, "gpg/app", digest).is_file()
    # By digest too: matchRepoDigestOrExact accepts the tag's signature for its digest.
    assert node.pull(f"{node.host}/gpg/app@{digest}") == image_id


def test_unsigned_is_refused_and_leaves_nothing(node: TrustNode) -> None:
    pushed = node.push("gpg/unsigned:1")
    _refused(node, f"{node.host}/gpg/unsigned:1", f'docker["{node.host}/gpg"][0]', "signedBy")
    _refused(node, f"{node.host}/gpg/unsigned@{pushed.manifest_digest}", "no signature found")


def test_signed_by_another_key_is_refused(node: TrustNode) -> None:
    node.signed_image("gpg/otherkey:1", sign_by=node.other)
    _refused(node, f"{node.host}/gpg/otherkey:1", "which the policy does not trust")


def test_signed_for_another_reference_is_refused(node: TrustNode) -> None:
    node.signed_image("gpg/mismatch:1", identity=f"{node.host}/gpg/somethingelse:1")
    _refused(node, f"{node.host}/gpg/mismatch:1", "signed for", "somethingelse")


def test_tampered_signature_is_refused(node: TrustNode) -> None:
    digest = node.signed_image("gpg/tampered:1")
    sig = _sig_path(node, node.file_store, "gpg/tampered", digest)
    data = bytearray(sig.read_bytes())
    data[len(data) // 2] ^= 0x40
    sig.write_bytes(bytes(data))
    _refused(node, f"{node.host}/gpg/tampered:1", "signature-1")


def test_signature_for_another_manifest_is_refused(node: TrustNode, tmp_path: Path) -> None:
    """A valid signature by the trusted key, with the right identity, but for other content."""
    victim = node.push("gpg/swapped:1")
    other = node.push("gpg/decoy:1")
    manifest = tmp_path / "decoy-manifest.json"
    manifest.write_bytes(_raw_manifest(f"{node.host}/gpg/decoy:1"))
    sig = _sig_path(node, node.file_store, "gpg/swapped", victim.manifest_digest)
    sig.parent.mkdir(parents=True)
    subprocess.run(
        [
            *("skopeo", "standalone-sign", str(manifest), f"{node.host}/gpg/swapped:1"),
            *(node.release, "-o", str(sig)),
        ],
        env=node.gpg.env,
        check=True,
        capture_output=True,
    )
    assert other.manifest_digest != victim.manifest_digest
    _refused(node, f"{node.host}/gpg/swapped:1", f"is for manifest '{other.manifest_digest}'")


def test_http_lookaside(node: TrustNode) -> None:
    node.signed_image("web/app:1")
    assert node.pull(f"{node.host}/web/app:1").startswith("sha256:")
    node.push("web/unsigned:1")
    _refused(node, f"{node.host}/web/unsigned:1", "no signature found in http://127.0.0.1:")


def test_reject_and_accept_anything(node: TrustNode) -> None:
    node.push("elsewhere/app:1")
    node.push("open/app:1")
    _refused(node, f"{node.host}/elsewhere/app:1", "default[0]", "reject")
    assert node.pull(f"{node.host}/open/app:1").startswith("sha256:")


def test_namespace_policy_overrides_the_node_default(node: TrustNode) -> None:
    node.push("gpg/team:1")
    node.push("open/team:1")
    (node.policy_dir / "relaxed.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    (node.policy_dir / "strict.json").write_text(json.dumps({"default": [{"type": "reject"}]}))
    _refused(node, f"{node.host}/gpg/team:1")
    assert node.pull(f"{node.host}/gpg/team:1", namespace="relaxed").startswith("sha256:")
    assert node.pull(f"{node.host}/open/team:1").startswith("sha256:")
    _refused(node, f"{node.host}/open/team:1", "strict.json", namespace="strict")
    # A namespace that is not a DNS-1123 label names no file: refused as bad input.
    with pytest.raises(grpc.RpcError) as err:
        node.pull(f"{node.host}/open/team:1", namespace="../policies/relaxed")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sandbox_config.metadata.namespace" in str(err.value.details())
    # A namespace without a file of its own gets the node's policy.
    assert node.pull(f"{node.host}/open/team:1", namespace="other").startswith("sha256:")
    # An invalid file refuses its namespace's pulls, naming the key; never "accept".
    broken = node.policy_dir / "broken.json"
    broken.write_text(json.dumps({"default": [{"type": "trustMe"}]}))
    try:
        _refused(node, f"{node.host}/open/team:1", "broken.json", "trustMe", namespace="broken")
    finally:
        broken.unlink()  # a restarted daemon (or the CLI) would refuse to start with it


def _cosign(node: TrustNode, repo: str, tag: str, signer: object, claim: str | None = None) -> str:
    pushed = node.push(f"{repo}:{tag}")
    reference = claim or f"{node.host}/{repo}:{tag}"
    payload = cosign_payload(reference, pushed.manifest_digest)
    push_cosign_signatures(
        node.host,
        repo,
        pushed.manifest_digest,
        [(payload, sigstore_sign(signer, payload))],  # type: ignore[arg-type]
    )
    return pushed.manifest_digest


def test_sigstore_attachments(node: TrustNode) -> None:
    digest = _cosign(node, "cosign/app", "1", node.cosign)
    assert node.pull(f"{node.host}/cosign/app:1").startswith("sha256:")
    assert node.pull(f"{node.host}/cosign/app@{digest}").startswith("sha256:")
    _cosign(node, "cosign/otherkey", "1", node.cosign_other)
    _refused(node, f"{node.host}/cosign/otherkey:1", "sigstoreSigned", "any of the policy")
    _cosign(node, "cosign/mismatch", "1", node.cosign, claim=f"{node.host}/cosign/app:1")
    _refused(node, f"{node.host}/cosign/mismatch:1", "signed for")
    node.push("cosign/unsigned:1")
    _refused(node, f"{node.host}/cosign/unsigned:1", "no sigstore signature is attached")


def test_sigstore_signature_for_another_digest_is_refused(node: TrustNode) -> None:
    victim = node.push("cosign/swapped:1")
    decoy = node.push("cosign/decoy:1")
    payload = cosign_payload(f"{node.host}/cosign/swapped:1", decoy.manifest_digest)
    signature = sigstore_sign(node.cosign, payload)
    push_cosign_signatures(
        node.host, "cosign/swapped", victim.manifest_digest, [(payload, signature)]
    )
    _refused(node, f"{node.host}/cosign/swapped:1", f"is for manifest '{decoy.manifest_digest}'")


def test_cli_pull_honours_the_policy(
    node: TrustNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node.push("gpg/cli:1")
    config = tmp_path / "config.toml"
    config.write_text((node.tmp / "config.toml").read_text())
    base = ["images", "--config", str(config), "--root", str(tmp_path / "root")]
    base += ["--registries-conf", str(node.tmp / "registries.conf")]
    assert cli_main([*base, "pull", "-q", f"{node.host}/gpg/cli:1"]) == 2
    assert "SignatureValidationFailed" in capsys.readouterr().err
    assert cli_main([*base, "ls", "-q"]) == 0
    assert capsys.readouterr().out == ""
    (node.policy_dir / "cli.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    assert cli_main([*base, "pull", "-q", "--namespace", "cli", f"{node.host}/gpg/cli:1"]) == 0
    assert capsys.readouterr().out.strip().startswith("sha256:")
    node.push("gpg/cli:2")
    reject = tmp_path / "reject.json"
    reject.write_text(json.dumps({"default": [{"type": "reject"}]}))
    args = ["pull", "--signature-policy", str(reject), "--namespace", "cli"]
    assert cli_main([*base, *args, f"{node.host}/gpg/cli:2"]) == 0  # the namespace's wins
    capsys.readouterr()
    node.push("open/cli:1")
    args = ["pull", "--signature-policy", str(reject)]
    assert cli_main([*base, *args, f"{node.host}/open/cli:1"]) == 2
    assert f"{reject} default[0], reject" in capsys.readouterr().err


def test_identity_is_the_reference_requested_not_the_mirror(
    node: TrustNode, tmp_path: Path
) -> None:
    """A mirror serves every pull; signatures must name the origin's reference."""
    origin = "registry.invalid:5000"  # never reached: the mirror has everything
    store = tmp_path / "sigs"
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "origin.yaml").write_text(
        f"docker:\n  {origin}:\n    lookaside: file://{store}\n"
    )
    release_key = node.tmp / "keys" / "release.asc"
    policy = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                f"{origin}/gpg": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(release_key)}
                ]
            }
        },
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    settings = TrustSettings(
        tmp_path / "policy.json", tmp_path / "registries.d", tmp_path / "no-policies"
    )
    with LocalRegistry(tmp_path / "mirror", storage=node.registry.storage) as mirror:
        conf = tmp_path / "registries.conf"
        conf.write_text(
            f'[[registry]]\nlocation = "{origin}"\n'
            f'[[registry.mirror]]\nlocation = "{mirror.host}"\ninsecure = true\n'
        )
        service = ImageService(tmp_path / "root", conf, trust=ImageTrust.load(settings))
        for repo, identity in (
            ("gpg/mirrored", f"{origin}/gpg/mirrored:1"),
            ("gpg/mirrorname", f"{mirror.host}/gpg/mirrorname:1"),
        ):
            pushed = node.push(f"{repo}:1")
            manifest = tmp_path / "manifest.json"
            manifest.write_bytes(_raw_manifest(f"{mirror.host}/{repo}:1"))
            sig = _sig_path(node, store, repo, pushed.manifest_digest)
            sig.parent.mkdir(parents=True)
            subprocess.run(
                [
                    "skopeo",
                    "standalone-sign",
                    str(manifest),
                    identity,
                    node.release,
                    "-o",
                    str(sig),
                ],
                env=node.gpg.env,
                check=True,
                capture_output=True,
            )
        image_id = service.pull(f"{origin}/gpg/mirrored:1", deadline=Deadline.after(60))
        assert service.status(f"{origin}/gpg/mirrored:1") is not None
        assert image_id.startswith("sha256:")
        before = {str(p) for p in (tmp_path / "root").rglob("*")}
        with pytest.raises(SignatureRefused, match=f"signed for '{mirror.host}/gpg/mirrorname:1'"):
            service.pull(f"{origin}/gpg/mirrorname:1", deadline=Deadline.after(60))
        assert {str(p) for p in (tmp_path / "root").rglob("*")} == before


def test_daemon_does_not_start_with_a_policy_it_cannot_enforce(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {"docker": {"quay.io": [{"type": "sigstoreSigned", "fulcio": {}}]}},
            }
        )
    )
    (tmp_path / "config.toml").write_text(
        f'[network]\nenabled = false\n[image_trust]\npolicy = "{policy}"\n'
    )
    with pytest.raises(AssertionError) as err:
        start_daemon(tmp_path, config=tmp_path / "config.toml")
    assert 'transports.docker["quay.io"][0].fulcio: keyless sigstore' in str(err.value)
