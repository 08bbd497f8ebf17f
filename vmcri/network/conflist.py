"""The CNI network configuration list: found in the config dir, checked, as the spec defines.

``<conf_dir>`` is read in lexical order of file names, as libcni does; the first
file that is a valid ``.conflist`` (or a single-plugin ``.conf``/``.json``, which
the spec turns into a list of one) is the pod network. Files that do not load
are skipped, and their reasons kept so that Status and RunPodSandbox can say
why no network is ready.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSIONS = (".conf", ".conflist", ".json")
# Versions whose configs and results vmcri speaks (SPEC.md 1.1, and the 0.3/0.4 results).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
MAX_CONFIG_BYTES = 1 << 20
# SPEC.md: network names must match this.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PLUGIN_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ConfError(ValueError):
    """A configuration file is not a usable network configuration."""


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str  # the file it came from
    disable_check: bool = False
    disable_gc: bool = False

    def to_json(self) -> str:
        """The list as a conflist, kept with a pod so that DEL sees what ADD saw."""
        return json.dumps(
            {
                "cniVersion": self.cni_version,
                "name": self.name,
                "disableCheck": self.disable_check,
                "disableGC": self.disable_gc,
                "plugins": list(self.plugins),
                "vmcri.source": self.source,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> NetworkConfigList:
        """Raises ConfError."""
        data = _parse(text.encode(), "stored network config")
        return _list_from(data, str(data.get("vmcri.source", "")))


@dataclass(frozen=True)
class ConfDirState:
    """What the config dir holds now: the network, or why there is none."""

    network: NetworkConfigList | None
    reason: str  # "" when network is set


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def load_conf_dir(conf_dir: Path) -> ConfDirState:
    """The first valid network in ``conf_dir``; never raises."""
    try:
        names = sorted(p.name for p in conf_dir.iterdir() if p.suffix in EXTENSIONS and p.is_file())
    except FileNotFoundError:
        return ConfDirState(None, f"no CNI configuration directory {conf_dir}")
    except OSError as exc:
        return ConfDirState(None, f"cannot read CNI configuration directory {conf_dir}: {exc}")
    skipped: list[str] = []
    for name in names:
        path = conf_dir / name
        try:
            return ConfDirState(load_file(path), "")
        except ConfError as exc:
            skipped.append(f"{path}: {exc}")
    if not skipped:
        return ConfDirState(
            None, f"no CNI network configuration (*.conflist, *.conf) in {conf_dir}"
        )
    return ConfDirState(None, "no valid CNI network configuration: " + "; ".join(skipped))


def load_file(path: Path) -> NetworkConfigList:
    """One file as a network list; raises ConfError saying what is wrong."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfError(f"cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfError(f"larger than {MAX_CONFIG_BYTES} bytes")
    data = _parse(raw, "file")
    if path.suffix == ".conflist" or "plugins" in data:
        return _list_from(data, str(path))
    # A single plugin's config (.conf): the spec's list of one, named like the plugin.
    plugin = dict(data)
    wrapped = {
        "cniVersion": plugin.get("cniVersion", ""),
        "name": plugin.get("name", ""),
        "plugins": [plugin],
    }
    return _list_from(wrapped, str(path))


def _parse(raw: bytes, what: str) -> dict[str, Any]:
    if not raw.strip():
        raise ConfError(f"{what} is empty")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfError("must be a JSON object")
    return data


def _list_from(data: dict[str, Any], source: str) -> NetworkConfigList:
    version = data.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise ConfError("cniVersion: missing")
    if version not in SUPPORTED_VERSIONS:
        raise ConfError(
            f"cniVersion: {version!r} is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfError(f"name: {name!r} is not a valid network name")
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfError("plugins: must be a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise ConfError(f"plugins[{i}]: must be an object")
        kind = plugin.get("type")
        if not isinstance(kind, str) or not _PLUGIN_TYPE.match(kind):
            # The type names a binary in the plugin path: no path separators, ever.
            raise ConfError(f"plugins[{i}].type: {kind!r} is not a plugin name")
        caps = plugin.get("capabilities", {})
        if not isinstance(caps, dict):
            raise ConfError(f"plugins[{i}].capabilities: must be an object")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(dict(p) for p in plugins),
        source=source,
        disable_check=_flag(data, "disableCheck"),
        disable_gc=_flag(data, "disableGC"),
    )


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    # Old configs wrote the flag as a string.
    if isinstance(value, str):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ConfError(f"{key}: must be true or false")
    return value
