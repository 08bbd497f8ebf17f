"""Who a container runs as and how it is asked to stop, for ContainerStatus.

Both backends build the process identity from the same inputs (the CRI config,
the image config and the image's /etc/passwd and /etc/group); computing it here
from the image layers means the status is the same whichever backend runs the
container, and needs no backend to report it back. The layers are read the way
overlayfs stacks them: the topmost layer holding the file wins, and an overlay
whiteout or an opaque ``/etc`` hides the layers below.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Sequence

from vmcri.errors import VmcriError
from vmcri.model import ContainerConfig, ImageInfo
from vmcri.oci import process
from vmcri.oci.users import MAX_DB_BYTES, resolve_user
from vmcri.store.records import RunAsUser

log = logging.getLogger(__name__)

_DB_FILES = ("passwd", "group")
_OPAQUE_XATTR = "trusted.overlay.opaque"


def _opaque(directory: str) -> bool:
    try:
        return os.getxattr(directory, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def effective_etc_file(layer_dirs: Sequence[str], name: str) -> str | None:
    """The host path of ``/etc/<name>`` as the merged rootfs shows it, or None."""
    for layer in reversed(layer_dirs):
        etc = os.path.join(layer, "etc")
        path = os.path.join(etc, name)
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None:
            if stat.S_ISREG(st.st_mode):
                return path
            return None  # a whiteout (0:0 char device), a symlink or a directory: not usable
        if _opaque(etc):
            return None
    return None


def container_user(config: ContainerConfig, image: ImageInfo) -> RunAsUser | None:
    """The uid, gid and supplemental groups the process gets; None if it cannot be told.

    Never raises: the backend already validated the same request when it built
    the spec, so a failure here only leaves the status field empty.
    """
    try:
        request = process.user_request(config, image.config)
        with tempfile.TemporaryDirectory(prefix="vmcri-user-") as view:
            os.mkdir(os.path.join(view, "etc"))
            for name in _DB_FILES:
                source = effective_etc_file(image.layer_dirs, name)
                if source is None:
                    continue
                with open(source, "rb") as src, open(os.path.join(view, "etc", name), "wb") as dst:
                    dst.write(src.read(MAX_DB_BYTES))
            resolved = resolve_user(view, request)
        sec = config.security
        groups = process.supplemental_gids(
            resolved.gid,
            resolved.additional_gids,
            sec.supplemental_groups,
            sec.supplemental_groups_policy,
        )
    except (VmcriError, OSError) as exc:
        log.warning("container user for status: %s", exc)
        return None
    return RunAsUser(uid=resolved.uid, gid=resolved.gid, supplemental_groups=tuple(groups))


def stop_signal(config: ContainerConfig, image: ImageInfo) -> str:
    """The signal StopContainer sends first (the CRI value, the image's, or SIGTERM)."""
    return process.stop_signal(config, image.config)
