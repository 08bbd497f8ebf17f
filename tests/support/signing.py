"""Real signatures for trust tests: GPG keys in a throw-away GNUPGHOME, sigstore (cosign) ones.

``GpgHome`` generates unprotected keys (``%no-protection``) with Debian's ``gpg`` and
stops the agent it started when closed; the tests sign with Debian's ``skopeo`` using it.
Debian's skopeo 1.9.3 lists ``--sign-by-sigstore-private-key`` but refuses it ("Debian-local
change: sigstore disabled"), and Debian 12 has no cosign, so sigstore signatures are made
here with ``cryptography`` and laid out as cosign and skopeo write them: an OCI manifest
tagged ``sha256-<hex>.sig`` whose layers are the payloads, each annotated with its
base64 signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.support.push import Pusher
from vmcri.errors import NotFound
from vmcri.images.registry_client import BlobSink

COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


class GpgHome:
    """A private GNUPGHOME with generated keys; a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.path)}

    def _gpg(self, *args: str, stdin: bytes = b"") -> bytes:
        return subprocess.run(
            ["gpg", "--homedir", str(self.path), "--batch", *args],
            input=stdin,
            capture_output=True,
            check=True,
        ).stdout

    def generate(self, name: str) -> str:
        """A new unprotected ed25519 signing key; returns its fingerprint."""
        params = (
            "%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
            f"Name-Real: {name}\nName-Email: {name}@vmcri.test\nExpire-Date: 0\n%commit\n"
        )
        self._gpg("--gen-key", stdin=params.encode())
        listing = self._gpg("--with-colons", "--list-keys", f"{name}@vmcri.test").decode()
        return next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")

    def public_key(self, fingerprint: str, armor: bool = True) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export", fingerprint)

    def sign(self, fingerprint: str, payload: bytes) -> bytes:
        """An inline OpenPGP signature of ``payload``: what simple signing stores."""
        return self._gpg("--local-user", fingerprint, "--sign", stdin=payload)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.path), "--kill", "all"],
            capture_output=True,
            check=False,
        )

    def __enter__(self) -> GpgHome:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- sigstore ---------------------------------------------------------------------------

SigstoreKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_sigstore_key(kind: str = "p256") -> SigstoreKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


def public_pem(key: SigstoreKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cosign_payload(reference: str, manifest_digest: str) -> bytes:
    """The payload cosign and skopeo sign (``optional`` null, as cosign writes it)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(doc).encode()


def sigstore_sign(key: SigstoreKey, payload: bytes) -> str:
    """The base64 signature cosign puts in the annotation."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(payload)
    else:
        raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


def push_cosign_signatures(
    host: str, repo: str, manifest_digest: str, signatures: list[tuple[bytes, str]]
) -> str:
    """Attach ``(payload, base64 signature)`` pairs to ``manifest_digest`` in ``repo``;
    returns the tag (``sha256-<hex>.sig``)."""
    pusher = Pusher(host)
    config = b"{}"
    layers = [
        {
            "mediaType": COSIGN_PAYLOAD_TYPE,
            "digest": pusher.blob(repo, payload),
            "size": len(payload),
            "annotations": {COSIGN_SIGNATURE_ANNOTATION: signature},
        }
        for payload, signature in signatures
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": pusher.blob(repo, config),
            "size": len(config),
        },
        "layers": layers,
    }
    tag = manifest_digest.replace(":", "-") + ".sig"
    body = json.dumps(manifest).encode()
    pusher.manifest(repo, tag, body, "application/vnd.oci.image.manifest.v1+json")
    return tag


class AttachedSignatures:
    """A registry client's two calls for one image's ``sha256-<hex>.sig`` manifest and
    its payload blobs, in memory (``signatures``: payload, base64 signature; none: the
    image has no attachment), for tests without a registry."""

    def __init__(self, digest: str, signatures: list[tuple[bytes, str]]) -> None:
        self.tag = digest.replace(":", "-") + ".sig"
        self.blobs = {"sha256:" + hashlib.sha256(p).hexdigest(): p for p, _ in signatures}
        layers = [
            {
                "mediaType": COSIGN_PAYLOAD_TYPE,
                "digest": "sha256:" + hashlib.sha256(p).hexdigest(),
                "size": len(p),
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: s},
            }
            for p, s in signatures
        ]
        self.manifest = json.dumps({"schemaVersion": 2, "layers": layers}).encode()
        self.present = bool(signatures)

    def get_manifest(self, reference: str, accept: str = "") -> tuple[bytes, str]:
        if not self.present or reference != self.tag:
            raise NotFound(f"manifest {reference}")
        return self.manifest, accept

    def fetch_blob(self, digest: str, sink: BlobSink) -> None:
        sink.write(self.blobs[digest])
