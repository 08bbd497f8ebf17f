"""The metav1.Status JSON that ends an exec or attach on the error stream (protocol v4 and v5).

The client (kubectl, crictl through client-go) decodes it: ``Success``; or ``Failure`` with
reason ``NonZeroExitCode`` and the exit code as the message of the cause of type
``ExitCode`` (the JSON name of a cause's type is ``reason``); or any other failure, whose
message it shows. Key order follows Go's encoding of the struct, as kubelet sends it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

_COMPACT = (",", ":")


def success() -> bytes:
    return json.dumps({"metadata": {}, "status": "Success"}, separators=_COMPACT).encode()


def exit_failure(exit_code: int, cmd: Sequence[str]) -> bytes:
    message = (
        "command terminated with non-zero exit code: "
        f"error executing command [{' '.join(cmd)}], exit code {exit_code}"
    )
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        },
        separators=_COMPACT,
    ).encode()


def internal_error(message: str) -> bytes:
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {message}",
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        },
        separators=_COMPACT,
    ).encode()
