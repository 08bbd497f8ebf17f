"""May this pulled image run in a pod of this namespace? Asked at CreateContainer.

CRI-O checks signatures at pull only: with kubelet's ``IfNotPresent`` an image already
in the store is never pulled again, so one pulled for a namespace with a relaxed policy
(or before any policy was written) would run in a namespace whose policy refuses it.
vmcri asks the policy in force for the pod's namespace again at CreateContainer:

1. the policy accepts everything (the default, no policy file): done, with no I/O but
   the two stats that notice an edited policy;
2. else, for the reference the container names (an image ID: each name the image was
   pulled as), the scope's requirements are checked against what the image's record says
   was verified (``evidence.py``), without I/O: met, done;
3. else the signatures are fetched and verified again, for the newest top manifest
   digest of that name, anonymously and within ``REVERIFY_TIMEOUT_S``; what they prove
   is added to the record (through the store's update) so the next container is step 2;
4. else SignatureRefused (FAILED_PRECONDITION) naming the policy, scope and requirement,
   telling the operator to pull the image for that namespace.

A ``reject`` scope is not fetched for: nothing can meet it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from vmcri.errors import InvalidReference, SignatureRefused, VmcriError
from vmcri.images.auth import Deadline
from vmcri.images.content_store import ImageRecord
from vmcri.images.reference import Reference, parse_reference
from vmcri.images.trust import evidence
from vmcri.images.trust.evidence import AcceptedSignature, Verification
from vmcri.images.trust.policy import Policy, Reject
from vmcri.images.trust.verifier import MAX_REASON_CHARS, ImageTrust, is_namespace

log = logging.getLogger(__name__)

REVERIFY_TIMEOUT_S = 15.0
"""All of one CreateContainer's signature fetching (kubelet's own request time-out is 2 min)."""
MAX_REFETCHED_NAMES = 3
"""Names of one image whose signatures one CreateContainer may fetch again."""

Reverify = Callable[[Reference, str, Policy, Deadline], tuple[AcceptedSignature, ...]]
Update = Callable[[str, Callable[[ImageRecord], ImageRecord]], ImageRecord | None]


class Admission:
    """Checks a stored image against the policy for a pod's namespace."""

    def __init__(self, trust: ImageTrust, reverify: Reverify, update: Update) -> None:
        self.trust = trust
        self._reverify = reverify
        self._update = update

    def admit(self, record: ImageRecord, requested: str, namespace: str) -> None:
        """Return when the policy for ``namespace`` accepts ``record`` named ``requested``.

        Raises SignatureRefused (not accepted, or the policy is invalid), StateCorrupt.
        """
        # RunPodSandbox takes any namespace; one that is not a DNS-1123 label cannot have
        # a policy file, so the node's applies (a pull for it is refused INVALID_ARGUMENT).
        policy = self.trust.policy_for(namespace if is_namespace(namespace) else "")
        if policy.accepts_everything:
            return
        names = names_for(record, requested)
        reasons: list[str] = []
        missing: list[tuple[Reference, str]] = []
        for name in names:
            why = recorded_unmet(policy, record, name)
            if why is None:
                return
            reasons.append(why[1])
            if why[0] is not None:
                missing.append((name, why[0]))
        deadline = Deadline.after(REVERIFY_TIMEOUT_S)
        for name, digest in missing[:MAX_REFETCHED_NAMES]:
            try:
                accepted = self._reverify(name, digest, policy, deadline)
            except SignatureRefused as exc:
                reasons.append(exc.message.removeprefix("SignatureValidationFailed: "))
                continue
            except VmcriError as exc:  # registry or signature store unreachable, too slow
                reasons.append(f"the signatures of {name} could not be fetched: {exc.message}")
                continue
            self._update(record.id, _adding(Verification.of(name, digest, accepted)))
            log.info("image %s (%s) verified again for namespace %r", name, digest, namespace)
            return
        whose = f"namespace {namespace}" if namespace else "the node"
        raise SignatureRefused(
            f"SignatureValidationFailed: image {requested} ({record.id}) is not accepted by "
            f"the signature policy of {whose}: {'; '.join(reasons)[:MAX_REASON_CHARS]}; "
            "pull the image for this namespace (PullImage with the pod's sandbox config) "
            "once it is signed as that policy requires"
        )


def _adding(new: Verification) -> Callable[[ImageRecord], ImageRecord]:
    return lambda r: replace(r, verified=evidence.merge(r.verified, [new]))


def names_for(record: ImageRecord, requested: str) -> list[Reference]:
    """The reference the container names, if it is one of the image's; else (an image ID)
    every name the image was pulled as."""
    try:
        ref: Reference | None = parse_reference(requested)
    except InvalidReference:
        ref = None
    if ref is not None:
        if ref.digest is not None and ref.with_digest(ref.digest) in record.repo_digests:
            return [ref]
        if ref.digest is None and ref.tagged() in record.repo_tags:
            return [ref]
    names = []
    for text in (*record.repo_tags, *record.repo_digests):
        try:
            names.append(parse_reference(text))
        except InvalidReference:
            continue  # a stored name this version does not parse names nothing
    return names


def recorded_unmet(
    policy: Policy, record: ImageRecord, name: Reference
) -> tuple[str | None, str] | None:
    """None when the record shows ``name``'s requirements met; else the digest worth
    fetching signatures for (None: nothing could meet them) and why."""
    scope, requirements = policy.lookup(name)
    digests = evidence.digests_of(name, record.repo_digests, record.verified)
    if not digests:
        return None, f"{name}: the image was not pulled as this reference"
    why = ""
    for digest in digests:
        for i, req in enumerate(requirements):
            unmet = evidence.unmet(req, name, digest, record.verified)
            if unmet is not None:
                why = f"{name} is refused by {policy.source} {scope}[{i}], {req.describe()}: "
                why += unmet
                break
        else:
            return None
    if any(isinstance(r, Reject) for r in requirements):
        return None, why
    return digests[0], why
