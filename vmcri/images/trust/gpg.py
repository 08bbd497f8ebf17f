"""Simple signing (GPG) through Debian's ``gpg`` and ``gpgv``.

``gpgv`` was chosen over python-gnupg and a GPGME binding: it verifies and nothing else
(no trust database, no agent, no key fetching), takes exactly the keyring it is given,
and reports on a machine-readable status fd; python-gnupg would only wrap the same
binary with more surface, and GPGME needs a full GnuPG home. The policy's keys are
imported once, at start-up, into a throw-away home and exported as one binary keyring;
each verification writes that keyring and the untrusted signature into a private
temporary directory and runs ``gpgv`` there, bounded in time and output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmcri.errors import ConfigError, SignatureRefused

GPG = "gpg"
GPGV = "gpgv"
GPG_TIMEOUT_S = 10.0
MAX_STATUS_BYTES = 64 << 10
# Status keywords of a signature that must never count as verified.
_BAD = ("BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY", "NODATA")


@dataclass(frozen=True)
class Keyring:
    """The policy's GPG keys: their primary fingerprints and one exported binary keyring."""

    fingerprints: tuple[str, ...]
    data: bytes


def _run(args: list[str], stdin: bytes, home: str, what: str) -> bytes:
    try:
        done = subprocess.run(
            [GPG, "--homedir", home, "--batch", "--no-autostart", "--no-tty", *args],
            input=stdin,
            capture_output=True,
            timeout=GPG_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{what}: running gpg failed: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"{what}: gpg refused the key: {err[-1] if err else done.returncode}")
    return done.stdout


def build_keyring(keys: list[bytes], what: str) -> Keyring:
    """Import ``keys`` (armored or binary OpenPGP public keys) into one keyring.

    Raises ConfigError naming ``what`` when gpg cannot read a key or none is found, or
    gpgv (which every verification runs) is not installed.
    """
    if shutil.which(GPGV) is None:
        raise ConfigError(f"{what}: {GPGV} is not installed (Debian package gpgv)")
    with tempfile.TemporaryDirectory(prefix="vmcri-gpg-") as home:
        for key in keys:
            _run(["--import"], key, home, what)
        listing = _run(["--with-colons", "--list-keys"], b"", home, what).decode()
        fingerprints: list[str] = []
        primary = False
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] in ("pub", "sub"):
                primary = fields[0] == "pub"
            elif fields[0] == "fpr" and primary and len(fields) > 9:
                fingerprints.append(fields[9])
                primary = False
        if not fingerprints:
            raise ConfigError(f"{what}: no OpenPGP public key found")
        data = _run(["--export"], b"", home, what)
    return Keyring(tuple(fingerprints), data)


def verify(keyring: Keyring, signature: bytes, max_payload: int) -> tuple[str, bytes]:
    """Verify an inline-signed simple-signing ``signature``; returns (key fingerprint, payload).

    Raises SignatureRefused when gpgv does not report exactly one good signature by a
    key of ``keyring``, or the signed payload is larger than ``max_payload``.
    """
    with tempfile.TemporaryDirectory(prefix="vmcri-gpgv-") as tmp:
        ring = Path(tmp, "keyring.gpg")
        sig = Path(tmp, "signature")
        out = Path(tmp, "payload")
        ring.write_bytes(keyring.data)
        sig.write_bytes(signature)
        try:
            done = subprocess.run(
                [
                    GPGV,
                    "--homedir",
                    tmp,
                    "--status-fd",
                    "1",
                    "--keyring",
                    str(ring),
                    "--output",
                    str(out),
                    str(sig),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=GPG_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SignatureRefused("gpgv did not finish in time") from exc
        except OSError as exc:
            raise SignatureRefused(f"gpgv cannot run: {exc}") from exc
        status = done.stdout[:MAX_STATUS_BYTES].decode(errors="replace").splitlines()
        words = [line.split()[1:] for line in status if line.startswith("[GNUPG:] ")]
        bad = [w[0] for w in words if w and w[0] in _BAD]
        valid = [w for w in words if w and w[0] == "VALIDSIG"]
        good = [w for w in words if w and w[0] == "GOODSIG"]
        unknown = [w[1] for w in words if len(w) > 1 and w[0] == "NO_PUBKEY"]
        if unknown:
            raise SignatureRefused(f"signed by key {unknown[0]}, which the policy does not trust")
        if done.returncode != 0 or bad or len(valid) != 1 or len(good) != 1:
            why = ", ".join(bad) or f"gpgv exit status {done.returncode}"
            raise SignatureRefused(f"not a valid signature by a trusted key ({why})")
        fields = valid[0]
        primary = fields[-1] if len(fields) >= 11 else fields[1]
        if primary not in keyring.fingerprints:
            raise SignatureRefused(f"signed by key {primary}, which the policy does not trust")
        try:
            fd = os.open(out, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise SignatureRefused("gpgv wrote no signed payload") from exc
        with os.fdopen(fd, "rb") as f:
            payload = f.read(max_payload + 1)
        if len(payload) > max_payload:
            raise SignatureRefused(f"signed payload is larger than {max_payload} bytes")
        return primary, payload
