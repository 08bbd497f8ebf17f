"""Pre-installed plugins: found in plugin_path, started by vmcri with a socket of their own.

NRI's convention (pkg/adaptation): an executable named ``NN-name`` (NN its two-digit
index) is started with one end of a socketpair inherited, and told about it in its
environment: NRI_PLUGIN_NAME=name, NRI_PLUGIN_IDX=NN, NRI_PLUGIN_SOCKET=<fd>. Its
configuration is ``NN-name.conf``, else ``name.conf``, in plugin_config_path.

vmcri runs them as root, so a file another user could have written is refused: the
executable and its directory must be root's and writable by no one else.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NAME = re.compile(r"^([0-9]{2})-([A-Za-z0-9_.-]{1,64})$")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Found:
    idx: str
    base: str
    path: Path
    config: str


def _safe(path: Path) -> bool:
    st = path.stat()
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def discover(plugin_path: str, config_path: str) -> list[Found]:
    """The plugins to start, by index; unsafe or unreadable ones are logged and skipped."""
    directory = Path(plugin_path)
    if not directory.is_dir():
        return []
    if not _safe(directory):
        log.error(
            "NRI plugin_path %s: not root's or writable by others; no plugin started", directory
        )
        return []
    found = []
    for entry in sorted(directory.iterdir()):
        match = NAME.match(entry.name)
        if match is None or not entry.is_file() or not os.access(entry, os.X_OK):
            continue
        if entry.is_symlink() or not _safe(entry):
            log.error("NRI plugin %s: not root's, writable by others or a symlink; skipped", entry)
            continue
        idx, base = match.groups()
        found.append(Found(idx, base, entry, _config(Path(config_path), idx, base)))
    return found


def _config(directory: Path, idx: str, base: str) -> str:
    for name in (f"{idx}-{base}.conf", f"{base}.conf"):
        path = directory / name
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            continue
        if len(data) > MAX_CONFIG_BYTES:
            log.error("NRI plugin config %s: over %d bytes; not used", path, MAX_CONFIG_BYTES)
            return ""
        return data.decode(errors="replace")
    return ""


def launch(found: Found) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """Start it with its end of a socketpair; returns our end and the process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NRI_PLUGIN_NAME": found.base,
            "NRI_PLUGIN_IDX": found.idx,
            "NRI_PLUGIN_SOCKET": str(theirs.fileno()),
        }
        process = subprocess.Popen(
            [str(found.path)],
            env=env,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours, process
