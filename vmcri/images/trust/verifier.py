"""The one question the puller asks: may this manifest, fetched for this reference, be used?

Asked after the top manifest is fetched and its digest checked, before anything of the
image is stored: a refusal leaves no blob, layer or record behind. The identity checked
is the reference requested, whichever mirror served it. A pod's namespace may have a
policy of its own, CRI-O's ``signature_policy_dir/<namespace>.json``, which replaces the
node's for pulls made for that namespace's pods.

Per-namespace files are checked at start-up like the node's policy; one written later is
read at the pull that needs it (re-read when it changes), and an invalid one refuses
that namespace's pulls, naming the file and key, rather than falling back to the node's.
The node's policy and registries.d are re-read when they change too (``_Reloaded``).
``check`` returns the signatures that met the policy: the image's record keeps them, and
CreateContainer asks again with them (``admission.py``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from vmcri.config import ImageTrustConfig
from vmcri.errors import ConfigError, InvalidArgument, SignatureRefused
from vmcri.images.auth import Deadline
from vmcri.images.reference import Reference
from vmcri.images.registry_client import RegistryClient
from vmcri.images.trust import gpg, sigstore
from vmcri.images.trust.evidence import AcceptedSignature
from vmcri.images.trust.identity import SignedIdentity
from vmcri.images.trust.payload import COSIGN_TYPE, SIMPLE_SIGNING_TYPE, check_payload
from vmcri.images.trust.policy import (
    ACCEPT_ALL,
    AcceptAnything,
    Policy,
    Reject,
    Requirement,
    SignedBy,
    load_policy,
)
from vmcri.images.trust.registries_d import MAX_FILES, SignatureStores, load_registries_d
from vmcri.images.trust.sources import (
    MAX_PAYLOAD_BYTES,
    AttachedSignature,
    attached_signatures,
    lookaside_signatures,
)

log = logging.getLogger(__name__)

# A Kubernetes namespace is a DNS-1123 label; nothing else may name a policy file.
_NAMESPACE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
MAX_REASON_CHARS = 600


def is_namespace(name: str) -> bool:
    """Whether ``name`` may name a policy file (a DNS-1123 label)."""
    return bool(_NAMESPACE.match(name))


@dataclass(frozen=True)
class TrustSettings:
    """Where the trust configuration lives (``[image_trust]`` of the config)."""

    policy: Path = Path("/etc/containers/policy.json")
    registries_d: Path = Path("/etc/containers/registries.d")
    policy_dir: Path = Path("/etc/vmcri/policies")

    @classmethod
    def of(cls, conf: ImageTrustConfig) -> TrustSettings:
        return cls(Path(conf.policy), Path(conf.registries_d), Path(conf.signature_policy_dir))


class _Signatures:
    """The image's signatures, fetched at most once per store for one check."""

    def __init__(
        self,
        ref: Reference,
        digest: str,
        client: RegistryClient | None,
        stores: SignatureStores,
        deadline: Deadline,
    ) -> None:
        self.ref, self.digest, self.client = ref, digest, client
        self.stores, self.deadline = stores, deadline
        self._lookaside: list[bytes] | None = None
        self._attached: list[AttachedSignature] | None = None

    def lookaside(self) -> tuple[str | None, list[bytes]]:
        base = self.stores.lookaside(self.ref)
        if base is None:
            return None, []
        if self._lookaside is None:
            self._lookaside = lookaside_signatures(base, self.ref, self.digest, self.deadline)
        return base, self._lookaside

    def attached(self) -> tuple[bool, list[AttachedSignature]]:
        if not self.stores.use_sigstore_attachments(self.ref) or self.client is None:
            return False, []
        if self._attached is None:
            self._attached = attached_signatures(self.client, self.digest)
        return True, self._attached


class ImageTrust:
    """The node's policy, its per-namespace overrides, and where signatures are stored.

    Loaded from ``settings``, the node's policy and registries.d are re-read when they
    change (inode, size or mtime of the file, of each registries.d file): an edit takes
    effect at the next pull or CreateContainer, as per-namespace files do. A file that
    became invalid refuses what needs it (SignatureRefused naming the file and key, logged
    once per change) until it is fixed: never "accept", never the previous version. A
    policy file that is removed means no policy, as at start-up.
    """

    def __init__(
        self,
        policy: Policy,
        stores: SignatureStores,
        policy_dir: Path | None = None,
        settings: TrustSettings | None = None,
    ) -> None:
        self.policy_dir = policy_dir
        self._lock = threading.Lock()
        self._ns_cache: dict[str, tuple[tuple[int, int, int], Policy]] = {}
        if settings is None:  # fixed: nothing to re-read
            self._node = _Reloaded("the node's signature policy", _fixed, lambda: policy, policy)
            self._stores = _Reloaded("registries.d", _fixed, lambda: stores, stores)
            return
        path, directory = settings.policy, settings.registries_d
        self._node = _Reloaded(
            "the node's signature policy",
            lambda: _file_key(path),
            lambda: load_policy(path) or ACCEPT_ALL,
            policy,
        )
        self._stores = _Reloaded(
            "registries.d",
            lambda: _dir_key(directory),
            lambda: load_registries_d(directory),
            stores,
        )

    @classmethod
    def accept_all(cls) -> ImageTrust:
        return cls(ACCEPT_ALL, SignatureStores())

    @classmethod
    def load(cls, settings: TrustSettings) -> ImageTrust:
        """Read and check the whole trust configuration. Raises ConfigError naming the key."""
        # The change keys are taken first: an edit while loading is seen at the next use.
        policy_key, stores_key = _file_key(settings.policy), _dir_key(settings.registries_d)
        policy = load_policy(settings.policy) or ACCEPT_ALL
        stores = load_registries_d(settings.registries_d)
        trust = cls(policy, stores, settings.policy_dir, settings)
        trust._node.key, trust._stores.key = policy_key, stores_key
        for name in trust.namespace_policies():
            trust._namespace_policy(name)
        return trust

    @property
    def policy(self) -> Policy:
        """The node's policy as last loaded successfully (for logs and reports)."""
        return self._node.value

    @property
    def stores(self) -> SignatureStores:
        return self._stores.value

    def node_policy(self) -> Policy:
        """The node's policy in force, re-read if the file changed.

        Raises SignatureRefused (naming the file and key) while the file is invalid.
        """
        return self._node.get()

    def signature_stores(self) -> SignatureStores:
        """registries.d in force, re-read if a file changed. Raises SignatureRefused."""
        return self._stores.get()

    def namespace_policies(self) -> list[str]:
        """Namespaces with a policy file of their own (ConfigError for an unlistable dir)."""
        if self.policy_dir is None:
            return []
        try:
            names = [p.stem for p in self.policy_dir.iterdir() if p.suffix == ".json"]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"{self.policy_dir}: cannot list: {exc.strerror}") from exc
        for name in names:
            if not _NAMESPACE.match(name):
                raise ConfigError(
                    f"{self.policy_dir}/{name}.json: {name!r} is not a namespace name"
                )
        return sorted(names)

    def _namespace_policy(self, namespace: str) -> Policy | None:
        """The namespace's own policy, or None. Raises ConfigError for an invalid one."""
        if self.policy_dir is None:
            return None
        path = self.policy_dir / f"{namespace}.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from exc
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._ns_cache.get(namespace)
        if cached is not None and cached[0] == key:
            return cached[1]
        policy = load_policy(path)
        if policy is None:
            return None
        with self._lock:
            self._ns_cache[namespace] = (key, policy)
        return policy

    def policy_for(self, namespace: str) -> Policy:
        """The policy for a pull made for a pod of ``namespace`` ("" = the node's).

        Raises InvalidArgument for a namespace that is not a DNS-1123 label,
        SignatureRefused when the namespace's own file is invalid.
        """
        if not namespace:
            return self.node_policy()
        if not _NAMESPACE.match(namespace):
            raise InvalidArgument(
                f"sandbox_config.metadata.namespace: {namespace[:80]!r} is not a DNS-1123 label"
            )
        try:
            own = self._namespace_policy(namespace)
        except ConfigError as exc:
            raise SignatureRefused(
                f"SignatureValidationFailed: the signature policy of namespace {namespace} "
                f"is invalid: {exc.message}"
            ) from exc
        return own or self.node_policy()

    def check(
        self,
        ref: Reference,
        manifest_digest: str,
        client: RegistryClient | None,
        policy: Policy | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[AcceptedSignature, ...]:
        """Refuse ``ref`` unless ``policy`` (default: the node's, else what ``policy_for``
        gave) has every requirement met by ``manifest_digest``; returns the signatures
        that met them (what the image's record keeps, see ``evidence.py``).

        Raises SignatureRefused naming the policy, scope and requirement that failed
        (a store that breaks its bounds, or a registries.d made invalid since, included),
        RegistryError or DeadlineExceeded (a signature store could not be read).
        """
        policy = policy or self.node_policy()
        scope, requirements = policy.lookup(ref)
        if all(isinstance(r, AcceptAnything | Reject) for r in requirements):
            stores = self.stores  # nothing to fetch: a broken registries.d is not in play
        else:
            stores = self.signature_stores()
        sigs = _Signatures(ref, manifest_digest, client, stores, deadline or Deadline.after(None))
        accepted: list[AcceptedSignature] = []
        for i, req in enumerate(requirements):
            try:
                met = self._met(req, ref, manifest_digest, sigs)
            except SignatureRefused as exc:  # the store broke a bound or sent nonsense
                met = exc.message
            if isinstance(met, str):
                where = f"{policy.source} {scope}[{i}]"
                raise SignatureRefused(
                    f"SignatureValidationFailed: image {ref} ({manifest_digest}) is refused "
                    f"by {where}, {req.describe()}: {met[:MAX_REASON_CHARS]}"
                )
            if met is not None:
                accepted.append(met)
        if not policy.accepts_everything:
            log.info("image %s (%s) accepted by %s %s", ref, manifest_digest, policy.source, scope)
        return tuple(accepted)

    def _met(
        self, req: Requirement, ref: Reference, digest: str, sigs: _Signatures
    ) -> AcceptedSignature | str | None:
        """The signature that meets ``req`` (None: met without one), else why not."""
        if isinstance(req, AcceptAnything):
            return None
        if isinstance(req, Reject):
            return "the policy rejects every image in this scope"
        reasons: list[str] = []
        if isinstance(req, SignedBy):
            base, blobs = sigs.lookaside()
            if base is None:
                return "no lookaside signature store is configured for it in registries.d"
            for n, blob in enumerate(blobs, 1):
                try:
                    signer, payload = gpg.verify(req.keyring, blob, MAX_PAYLOAD_BYTES)
                    claimed = check_payload(payload, SIMPLE_SIGNING_TYPE, digest)
                    _check_identity(req.identity, ref, claimed)
                    return AcceptedSignature("simple-signing", signer, claimed)
                except SignatureRefused as exc:
                    reasons.append(f"signature-{n}: {exc.message}")
            return "; ".join(reasons) or f"no signature found in {base}"
        enabled, attached = sigs.attached()
        if not enabled:
            return "use-sigstore-attachments is not enabled for it in registries.d"
        for n, att in enumerate(attached, 1):
            try:
                key = sigstore.verify(list(req.keys), att.signature_b64, att.payload)
                claimed = check_payload(att.payload, COSIGN_TYPE, digest)
                _check_identity(req.identity, ref, claimed)
                return AcceptedSignature("sigstore", sigstore.key_id(key), claimed)
            except SignatureRefused as exc:
                reasons.append(f"signature {n}: {exc.message}")
        return "; ".join(reasons) or "no sigstore signature is attached to the image"


FileKey = tuple[int, int, int] | None
T = TypeVar("T")


def _fixed() -> None:
    """The change key of a configuration that is never read again."""
    return None


class _Reloaded(Generic[T]):
    """A configuration read again when its change key moves (one ``stat`` per use).

    A version that fails to load is kept as the error, not as a value: every use raises
    it until the file changes again, so nothing falls back to the previous version or to
    "accept".
    """

    def __init__(
        self, what: str, key: Callable[[], object], load: Callable[[], T], value: T
    ) -> None:
        self.what = what
        self._key_of, self._load = key, load
        self.value, self.key = value, key()
        self._error: ConfigError | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value in force. Raises SignatureRefused naming the file and key."""
        key = self._key_of()
        with self._lock:
            if key == self.key:
                if self._error is not None:
                    raise _invalid(self.what, self._error)
                return self.value
        try:
            value, error = self._load(), None
        except ConfigError as exc:
            value, error = self.value, exc
        with self._lock:
            self.key, self.value, self._error = key, value, error
        if error is not None:
            log.error(
                "%s changed and is invalid, what it covers is refused until it is fixed: %s",
                self.what,
                error.message,
            )
            raise _invalid(self.what, error)
        log.info("%s changed and was read again", self.what)
        return value


def _file_key(path: Path) -> FileKey:
    """What tells a changed file apart cheaply (one stat); None when absent or unreadable
    (unreadable: the load then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _dir_key(directory: Path) -> tuple[FileKey, ...] | None:
    """The directory's own key and each ``*.yaml`` file's (an edit in place changes only
    the file's); None when it cannot be listed."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".yaml"))[: MAX_FILES + 1]
    except OSError:
        return None
    return (_file_key(directory), *(_file_key(directory / n) for n in names))


def _invalid(what: str, error: ConfigError) -> SignatureRefused:
    return SignatureRefused(
        f"SignatureValidationFailed: {what} is invalid, so nothing it covers is accepted "
        f"until it is fixed: {error.message}"
    )


def _check_identity(identity: SignedIdentity, ref: Reference, claimed: str) -> None:
    if not identity.matches(ref, claimed):
        raise SignatureRefused(
            f"signed for {claimed[:200]!r}, which {identity.describe()} does not accept for {ref}"
        )
