"""The one exception tree of vmcri.

Every error that crosses a module boundary is a :class:`VmcriError`. Each class
carries the canonical gRPC status name in ``code``; ``vmcri.cri.status`` is the
only place that turns it into a gRPC status, so this module stays free of grpc
and can be imported by the in-guest agent too::

    VmcriError                       INTERNAL
     ├── InvalidArgument             INVALID_ARGUMENT
     │    ├── ConfigError            (bad configuration at start-up)
     │    ├── InvalidReference       (image reference that does not parse)
     │    └── UnsafeContent          (layer or guest data that breaks a rule)
     ├── NotFound                    NOT_FOUND
     ├── AlreadyExists               ALREADY_EXISTS
     ├── FailedPrecondition          FAILED_PRECONDITION
     │    ├── InvalidTransition      (state machine refused a change)
     │    └── SignatureRefused       (the image trust policy refused an image)
     ├── ResourceExhausted           RESOURCE_EXHAUSTED
     ├── DeadlineExceeded            DEADLINE_EXCEEDED
     ├── PermissionDenied            PERMISSION_DENIED
     ├── Unimplemented               UNIMPLEMENTED
     ├── Unavailable                 UNAVAILABLE
     │    ├── RegistryError          (a registry failed or refused us)
     │    └── AgentUnavailable       (the guest agent is not reachable)
     ├── DataLoss                    DATA_LOSS
     │    └── DigestMismatch         (content did not match its digest)
     ├── ProtocolError               INTERNAL (a peer broke the protocol)
     ├── PluginError                 INTERNAL (an NRI plugin refused or failed an event)
     ├── HypervisorError             INTERNAL (libvirt or QEMU failed)
     │    └── TemplateUnusable       (a VM template is missing, stale or broken)
     ├── StateCorrupt                INTERNAL (a state file could not be read)
     └── HostCommandError            INTERNAL (runc, ip, mount... failed)
"""

from __future__ import annotations

from typing import ClassVar


class VmcriError(Exception):
    """Base of every vmcri error; ``code`` names the gRPC status it maps to."""

    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VmcriError):
    code = "INVALID_ARGUMENT"


class ConfigError(InvalidArgument):
    """The configuration file or a command-line option is wrong."""


class InvalidReference(InvalidArgument):
    """An image reference does not parse."""


class UnsafeContent(InvalidArgument):
    """Untrusted content (an image layer, a guest message) broke a safety rule."""


class NotFound(VmcriError):
    code = "NOT_FOUND"


class AlreadyExists(VmcriError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(VmcriError):
    code = "FAILED_PRECONDITION"


class InvalidTransition(FailedPrecondition):
    """A state machine was asked for a change it does not allow."""


class SignatureRefused(FailedPrecondition):
    """The image trust policy refused an image (no acceptable signature, or ``reject``).

    FAILED_PRECONDITION, not PERMISSION_DENIED: the caller is allowed to pull; the image
    does not meet the node's policy, and pulling it again will fail the same way until
    it is signed (or the policy changes). The message starts with
    ``SignatureValidationFailed``, the reason cri-api names for it (as CRI-O's does).
    """


class ResourceExhausted(VmcriError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(VmcriError):
    code = "DEADLINE_EXCEEDED"


class PermissionDenied(VmcriError):
    code = "PERMISSION_DENIED"


class Unimplemented(VmcriError):
    code = "UNIMPLEMENTED"


class Unavailable(VmcriError):
    code = "UNAVAILABLE"


class RegistryError(Unavailable):
    """A registry could not be reached, or refused the request."""


class AgentUnavailable(Unavailable):
    """The in-guest agent did not answer."""


class DataLoss(VmcriError):
    code = "DATA_LOSS"


class DigestMismatch(DataLoss):
    """Content did not match the digest or size it was announced with."""


class ProtocolError(VmcriError):
    """A peer (the guest agent, a registry) broke its protocol."""


class PluginError(VmcriError):
    """An NRI plugin refused an event, or failed it (vmcri.nri); the call it was part of fails."""


class HypervisorError(VmcriError):
    """libvirt or QEMU failed."""


class TemplateUnusable(HypervisorError):
    """A VM template is missing, stale or broken; the pod cold-boots instead."""


class StateCorrupt(VmcriError):
    """A persisted state file could not be read back."""


class HostCommandError(VmcriError):
    """A host command (runc, ip, mount, ...) failed."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr
