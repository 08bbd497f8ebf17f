"""A container's termination message, carried back from where its agent kept it.

kubelet reads a container's termination message from the host file it mounted at the
container's ``terminationMessagePath`` (CRI ContainerStatus.mounts), after the container
ends. A VM pod keeps that file in its guest (``vmcri/handlers/vm/guest_volumes.py``), so
the agent sends the file's last 4096 bytes in its ContainerExited event, and the exit's
handling writes them here into kubelet's file, before the exit is published. A runc pod's
agent sends none: its containers write kubelet's file themselves.

The file is kubelet's (the guest never sees it): opened without following a symlink and
without blocking, written only if it is a regular file.
"""

from __future__ import annotations

import logging
import os
import stat

from vmcri.model import ContainerConfig

log = logging.getLogger(__name__)

PATH_ANNOTATION = "io.kubernetes.container.terminationMessagePath"
DEFAULT_PATH = "/dev/termination-log"


def host_file(config: ContainerConfig) -> str:
    """The host path kubelet mounted at the container's termination message path, or ""."""
    wanted = config.annotations.get(PATH_ANNOTATION) or DEFAULT_PATH
    for mount in config.mounts:
        if mount.container_path == wanted and not mount.image and not mount.readonly:
            return mount.host_path
    return ""


def write_message(config: ContainerConfig, message: bytes) -> None:
    """Write ``message`` (bounded by the agent's channel: 4096 bytes) to kubelet's file;
    a failure is logged, never raised (the exit must still be recorded)."""
    path = host_file(config)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("termination message for %s not written: %s", path, exc)
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.warning("termination message for %s not written: not a regular file", path)
            return
        os.ftruncate(fd, 0)
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        log.warning("termination message for %s not written: %s", path, exc)
    finally:
        os.close(fd)
