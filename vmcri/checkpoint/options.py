"""The runtime-specific ``options`` of CheckpointPod and RestorePod.

vmcri knows none yet: an option it does not know is refused by name rather than
ignored, since a caller that sends one expects it to change what is saved.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmcri.errors import InvalidArgument

KNOWN: frozenset[str] = frozenset()


def check_options(options: Mapping[str, str]) -> None:
    for key in sorted(options):
        if key not in KNOWN:
            raise InvalidArgument(f"options: unknown key {key[:64]!r} (vmcri knows none)")
