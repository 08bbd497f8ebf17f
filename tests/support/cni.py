"""A CNI plugin runner that runs nothing, and a bridge plugin's config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmcri.errors import NotFound
from vmcri.network.invoke import PluginCall

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}


@dataclass
class FakeRunner:
    fail: dict[tuple[str, str], Exception] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)

    def find(self, plugin_type: str) -> Path:
        if plugin_type in self.missing:
            raise NotFound(f"CNI plugin {plugin_type!r}: not found")
        return Path("/fake") / plugin_type

    def run(self, plugin_type: str, call: PluginCall) -> bytes:
        self.find(plugin_type)
        conf = json.loads(call.stdin)
        self.calls.append((call.command, plugin_type, conf))
        error = self.fail.get((call.command, plugin_type))
        if error is not None:
            raise error
        return json.dumps({"cniVersion": "1.0.0", "ips": [], "by": plugin_type}).encode()
