"""The image signature policy in force: what ``vmcri doctor`` says about image trust."""

from __future__ import annotations

from vmcri.config import ImageTrustConfig
from vmcri.doctor.model import Check, Status
from vmcri.errors import ConfigError
from vmcri.images.trust.verifier import ImageTrust, TrustSettings


def check_image_trust(conf: ImageTrustConfig) -> Check:
    """OK with the policy's summary; INFO when every image is accepted; FAIL if invalid."""
    settings = TrustSettings.of(conf)
    try:
        trust = ImageTrust.load(settings)
    except ConfigError as exc:
        return Check(
            "image trust",
            Status.FAIL,
            exc.message,
            "the daemon refuses to start with an invalid signature policy; a running one "
            "re-reads an edited file and refuses the pulls and containers it covers until "
            "it is fixed",
            "fix the file named above (containers-policy.json(5), containers-registries.d(5))",
        )
    found = trust.policy.summary()
    namespaces = trust.namespace_policies()
    if namespaces:
        found += f"; namespaces with their own policy: {', '.join(namespaces)}"
    if trust.policy.accepts_everything and not namespaces:
        return Check(
            "image trust",
            Status.INFO,
            found,
            "images are pulled without signature checks",
            f"write a policy to {settings.policy} to require signed images (docs/image-trust.md)",
        )
    stores = f"signature stores from {trust.stores.source}"
    return Check("image trust", Status.OK, found + f"; {stores}", "pulls are verified")
