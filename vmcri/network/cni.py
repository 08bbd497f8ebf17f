"""The CNI verbs on a network configuration list, as SPEC.md section 3 ("Execution protocol").

* ADD runs the plugins in order; each after the first gets the previous one's
  result as ``prevResult``, and the last result is the attachment's.
* DEL runs them in reverse, each with the cached ADD result as ``prevResult``
  (none if ADD never finished: plugins must cope), and goes on past a
  failing plugin so that the others still release what they hold; the first
  error is raised at the end. A plugin binary that is missing is skipped.
* CHECK runs them in order with the cached result; skipped for 0.3.x configs
  and when ``disableCheck`` is set.
* GC and STATUS (spec 1.1) run only for 1.1 configs, per plugin.

Each plugin's stdin is its own object from the list plus ``name`` and
``cniVersion`` of the list, and ``runtimeConfig`` holding exactly the
capability arguments it declared in ``capabilities``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vmcri.errors import NotFound, VmcriError
from vmcri.network.conflist import NetworkConfigList, version_tuple
from vmcri.network.invoke import PluginCall, PluginRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attachment:
    """One pod's attachment to the network: what every verb is called with."""

    container_id: str
    netns: str
    ifname: str
    args: str  # CNI_ARGS
    capabilities: Mapping[str, Any]  # capability name -> its runtimeConfig value


def plugin_stdin(
    net: NetworkConfigList,
    plugin: Mapping[str, Any],
    capabilities: Mapping[str, Any],
    prev_result: Any | None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in capabilities.items() if declared.get(k) is True}
    if runtime:
        conf["runtimeConfig"] = runtime
    else:
        conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if extra:
        conf.update(extra)
    return json.dumps(conf).encode()


class Cni:
    """The verbs, over a :class:`PluginRunner`."""

    def __init__(self, runner: PluginRunner) -> None:
        self.runner = runner

    def _call(
        self, net: NetworkConfigList, plugin: Mapping[str, Any], command: str, att: Attachment,
        prev: Any | None,
    ) -> bytes:  # fmt: skip
        call = PluginCall(
            command=command,
            container_id=att.container_id,
            netns=att.netns,
            ifname=att.ifname,
            args=att.args,
            stdin=plugin_stdin(net, plugin, att.capabilities, prev),
        )
        return self.runner.run(str(plugin["type"]), call)

    def add(self, net: NetworkConfigList, att: Attachment) -> bytes:
        """The final result (JSON). Raises what the runner raises; the caller runs DEL."""
        # Every binary first, so that a missing one fails before anything is set up.
        for plugin in net.plugins:
            self.runner.find(str(plugin["type"]))
        prev: Any | None = None
        out = b"{}"
        for plugin in net.plugins:
            out = self._call(net, plugin, "ADD", att, prev)
            try:
                prev = json.loads(out)
            except ValueError:
                prev = None
        return out

    def delete(self, net: NetworkConfigList, att: Attachment, cached: str) -> None:
        """Raises the first plugin's error after every plugin had its turn."""
        prev = json.loads(cached) if cached else None
        first: VmcriError | None = None
        for plugin in reversed(net.plugins):
            try:
                self._call(net, plugin, "DEL", att, prev)
            except NotFound as exc:
                # A binary that is not there never ran ADD either (ADD looks every one
                # up first), or was removed since: waiting for it would keep the pod forever.
                log.warning("CNI DEL of %s: skipped: %s", att.container_id, exc.message)
            except VmcriError as exc:
                log.warning("CNI DEL of %s: %s", att.container_id, exc.message)
                first = first or exc
        if first is not None:
            raise first

    def check(self, net: NetworkConfigList, att: Attachment, cached: str) -> None:
        """Raises the failing plugin's error; a config that cannot CHECK passes."""
        if net.disable_check or version_tuple(net.cni_version) < (0, 4, 0) or not cached:
            return
        prev = json.loads(cached)
        for plugin in net.plugins:
            self._call(net, plugin, "CHECK", att, prev)

    def gc(self, net: NetworkConfigList, valid: Sequence[tuple[str, str]]) -> None:
        """Let plugins release what no listed (container ID, ifname) holds. 1.1 configs only."""
        if net.disable_gc or version_tuple(net.cni_version) < (1, 1, 0):
            return
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        for plugin in net.plugins:
            stdin = plugin_stdin(net, plugin, {}, None, {"cni.dev/valid-attachments": attachments})
            self.runner.run(str(plugin["type"]), PluginCall(command="GC", stdin=stdin))

    def status(self, net: NetworkConfigList) -> None:
        """Raises the first plugin's error when it says it cannot take ADDs. 1.1 configs only."""
        for plugin in net.plugins:
            self.runner.find(str(plugin["type"]))
        if version_tuple(net.cni_version) < (1, 1, 0):
            return
        for plugin in net.plugins:
            stdin = plugin_stdin(net, plugin, {}, None)
            self.runner.run(str(plugin["type"]), PluginCall(command="STATUS", stdin=stdin))
