"""The signed payload both signature kinds carry, checked strictly.

A signature only binds what its payload says, so the payload is read like
containers/image reads it: a JSON object whose ``critical`` part has exactly
``type``, ``image`` (exactly ``docker-manifest-digest``) and ``identity`` (exactly
``docker-reference``), and an ``optional`` part that is ignored. Any other key in
``critical`` is refused: a payload that says more than we understand is not one we
may accept.
"""

from __future__ import annotations

import json
from typing import Any

from vmcri.errors import SignatureRefused

SIMPLE_SIGNING_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"


def _exact_keys(value: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SignatureRefused(f"payload {where} is not a JSON object")
    if set(value) != keys:
        raise SignatureRefused(
            f"payload {where} has keys {sorted(value)}, expected exactly {sorted(keys)}"
        )
    return value


def check_payload(raw: bytes, want_type: str, manifest_digest: str) -> str:
    """The ``docker-reference`` the payload claims, once its type and digest are checked.

    Raises SignatureRefused for a payload that does not parse, is of another type, or
    names another manifest digest than ``manifest_digest`` (the image actually fetched).
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureRefused("signed payload is not JSON") from exc
    if not isinstance(doc, dict) or "critical" not in doc:
        raise SignatureRefused("signed payload has no 'critical' object")
    extra = set(doc) - {"critical", "optional"}
    if extra:
        raise SignatureRefused(f"signed payload has unknown keys {sorted(extra)}")
    optional = doc.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise SignatureRefused("payload 'optional' is not a JSON object")
    critical = _exact_keys(doc["critical"], {"type", "image", "identity"}, "'critical'")
    if critical["type"] != want_type:
        raise SignatureRefused(f"payload type {critical['type']!r} is not {want_type!r}")
    image = _exact_keys(critical["image"], {"docker-manifest-digest"}, "'critical.image'")
    identity = _exact_keys(critical["identity"], {"docker-reference"}, "'critical.identity'")
    digest = image["docker-manifest-digest"]
    if digest != manifest_digest:
        raise SignatureRefused(
            f"signature is for manifest {str(digest)[:80]!r}, not {manifest_digest}"
        )
    claimed = identity["docker-reference"]
    if not isinstance(claimed, str):
        raise SignatureRefused("payload docker-reference is not a string")
    return claimed
