"""Sigstore (cosign-style) signatures checked with a public key, through ``cryptography``.

A cosign signature is a base64 signature over the payload blob, made with the
private half of one of the policy's public keys: ECDSA (P-256, P-384, P-521) over
SHA-256, Ed25519, or RSA PKCS#1 v1.5 over SHA-256, the schemes cosign and
``skopeo --sign-by-sigstore-private-key`` produce. ``cryptography`` (pyca, OpenSSL
underneath) was picked over PyNaCl (Ed25519 only) and ``ecdsa`` (pure Python,
no RSA, not constant-time). Keyless signing (Fulcio certificates, Rekor
transparency log) is refused at start-up by the policy parser: it cannot be
verified without trusting a network service the node may not reach.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from vmcri.errors import ConfigError, SignatureRefused

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
MAX_SIGNATURE_B64 = 8 << 10  # an RSA-4096 signature is 684 base64 characters


def load_public_keys(pem: bytes, what: str) -> list[PublicKey]:
    """Every PEM public key in ``pem``; raises ConfigError naming ``what`` if none loads."""
    keys: list[PublicKey] = []
    marker = b"-----BEGIN "
    blocks = [marker + b for b in pem.split(marker)[1:]]
    for block in blocks or [pem]:
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{what}: not a PEM public key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            if not isinstance(key, rsa.RSAPublicKey):
                raise ConfigError(f"{what}: {type(key).__name__} keys are not supported")
            if key.key_size < 2048:
                raise ConfigError(f"{what}: RSA keys of {key.key_size} bits are too weak")
        keys.append(key)
    return keys


def key_id(key: PublicKey) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo: how a verification names it."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def verify(keys: list[PublicKey], signature_b64: str, payload: bytes) -> PublicKey:
    """Check ``signature_b64`` over ``payload`` against any of ``keys``; returns the key.

    Raises SignatureRefused when it is not base64 or no key verifies it.
    """
    if len(signature_b64) > MAX_SIGNATURE_B64:
        raise SignatureRefused(f"signature is longer than {MAX_SIGNATURE_B64} characters")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureRefused("signature is not base64") from exc
    for key in keys:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, payload)
            else:
                key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return key
    raise SignatureRefused("signature does not verify with any of the policy's public keys")
