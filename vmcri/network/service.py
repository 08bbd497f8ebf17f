"""The pod network layer both backends share: netns, CNI ADD/DEL/CHECK/GC, readiness.

The pod service (:mod:`vmcri.runtime.pods`) drives it and keeps what it returns
in the sandbox record; backends only read ``SandboxRecord.network``. The
steps of a pod, each recorded before the next so that a daemon killed at any
point still finds what to undo::

    create_netns ──▶ plan (record.network: config, no result) ──▶ add (result) ──▶ guard_pod
         ▲                                                                           │
    remove_netns ◀── release (guard removed, DEL; released=True) ◀────────────────────┘

DEL is safe to repeat and also works when the namespace is already gone
(plugins release IPAM and host rules without it), so the IP is always freed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from vmcri.config import NetworkConfig
from vmcri.errors import FailedPrecondition, VmcriError
from vmcri.model import Condition
from vmcri.network import netstats
from vmcri.network.capabilities import capability_args, cni_args
from vmcri.network.cni import Attachment, Cni
from vmcri.network.conflist import ConfDirState, ConfError, NetworkConfigList, load_conf_dir
from vmcri.network.invoke import ExecRunner, PluginRunner, env_args
from vmcri.network.netns import NetnsHost, PinnedNetns
from vmcri.network.netstats import CounterReader, InterfaceCounters
from vmcri.network.result import parse_result
from vmcri.network.spoofguard import NftSpoofGuard, SpoofGuard
from vmcri.store.pod_network import PodNetwork
from vmcri.store.records import SandboxRecord

log = logging.getLogger(__name__)

NOT_READY = "NetworkPluginNotReady"


class PodNetworking:
    def __init__(
        self,
        config: NetworkConfig,
        state_dir: Path,
        pod_cidr: Callable[[], str],
        runner: PluginRunner | None = None,
        netns: NetnsHost | None = None,
        read_counters: CounterReader = netstats.read_counters,
        guard: SpoofGuard | None = None,
    ) -> None:
        self.config = config
        self.netns_dir = state_dir / "netns"
        self._pod_cidr = pod_cidr
        self.cni = Cni(runner or ExecRunner(config.cni_bin_dirs, config.plugin_timeout_s))
        self.netns: NetnsHost = netns or PinnedNetns()
        self._read_counters = read_counters
        self.guard: SpoofGuard = guard or NftSpoofGuard()

    # ---- readiness ---------------------------------------------------------------

    def conf_state(self) -> ConfDirState:
        """The config dir as it is now: read on every call, so edits apply without a restart."""
        if not self.config.enabled:
            return ConfDirState(None, "pod networking is disabled ([network] enabled = false)")
        return load_conf_dir(Path(self.config.cni_conf_dir))

    def condition(self) -> Condition:
        state = self.conf_state()
        if state.network is None:
            return Condition("NetworkReady", False, NOT_READY, state.reason)
        try:
            self.cni.status(state.network)
        except VmcriError as exc:
            return Condition("NetworkReady", False, NOT_READY, exc.message)
        return Condition("NetworkReady", True)

    # ---- one pod -----------------------------------------------------------------

    def netns_path(self, sandbox_id: str) -> Path:
        return self.netns_dir / sandbox_id

    def create_netns(self, sandbox_id: str) -> str:
        """A pinned namespace for the pod with loopback up. Raises HostCommandError."""
        path = self.netns_path(sandbox_id)
        self.netns.create(path)
        return str(path)

    def plan(self, sandbox: SandboxRecord, netns_path: str) -> PodNetwork:
        """What ADD will be called with, to record before it runs.

        Networking disabled: the namespace alone (loopback). Raises
        FailedPrecondition when no valid config exists, InvalidArgument for bad
        annotations.
        """
        if not self.config.enabled:
            return PodNetwork(netns_path=netns_path)
        state = self.conf_state()
        if state.network is None:
            raise FailedPrecondition(f"pod network is not ready: {state.reason}")
        caps = capability_args(sandbox.config, self._pod_cidr())
        return PodNetwork(
            netns_path=netns_path,
            network_name=state.network.name,
            cni_version=state.network.cni_version,
            config=state.network.to_json(),
            ifname=self.config.interface,
            runtime_config=json.dumps(caps, sort_keys=True),
        )

    def add(self, sandbox: SandboxRecord, planned: PodNetwork) -> PodNetwork:
        """Run ADD; the planned network with the result in it. The caller undoes a failure."""
        if not planned.config:
            return planned
        net = NetworkConfigList.from_json(planned.config)
        raw = self.cni.add(net, self._attachment(sandbox, planned))
        parsed = parse_result(raw, planned.netns_path)
        return dataclasses.replace(
            planned,
            interfaces=parsed.interfaces,
            ips=parsed.ips,
            routes=parsed.routes,
            dns=parsed.dns,
            result=parsed.result,
            cni_version=parsed.cni_version or planned.cni_version,
        )

    def guard_pod(self, sandbox: SandboxRecord) -> None:
        """Let the pod send only from its own MAC and IPs (``spoofguard.py``); run once
        ADD's result is recorded, so that a failure here is undone by DEL like any other.

        Raises FailedPrecondition (no ``nft``), NotFound, HostCommandError.
        """
        network = sandbox.network
        if network is None or not network.config or network.released or not network.result:
            return
        self.guard.install(sandbox.id, network, sandbox.config.sysctls)

    def check(self, sandbox: SandboxRecord) -> None:
        """CHECK a READY pod after a restart; raises the plugin's error."""
        network = sandbox.network
        if network is None or not network.config or network.released or not network.result:
            return
        net = NetworkConfigList.from_json(network.config)
        self.cni.check(net, self._attachment(sandbox, network), network.result)

    def release(self, sandbox: SandboxRecord) -> PodNetwork | None:
        """DEL (again, if asked: idempotent); the network marked released. Raises on failure."""
        network = sandbox.network
        if network is None or not network.config or network.released:
            return network
        try:
            net = NetworkConfigList.from_json(network.config)
        except ConfError as exc:
            raise FailedPrecondition(f"sandbox {sandbox.id}: stored network config: {exc}") from exc
        # Before DEL, which may free the pod's IP for the next pod: the table goes with it.
        self.guard.remove(sandbox.id)
        alive = self.netns.exists(Path(network.netns_path))
        attachment = self._attachment(sandbox, network)
        if not alive:
            # Plugins release IPs and host rules without the namespace; an empty
            # CNI_NETNS tells them there is nothing inside to clean.
            attachment = dataclasses.replace(attachment, netns="")
        self.cni.delete(net, attachment, network.result)
        return dataclasses.replace(network, released=True)

    def counters(self, sandbox: SandboxRecord) -> tuple[InterfaceCounters, ...]:
        """Traffic of the pod's CNI interfaces (none for host-network pods); never raises."""
        network = sandbox.network
        if network is None or network.released or not network.netns_path:
            return ()
        names = [i.name for i in network.interfaces if i.sandbox] or [network.ifname or "eth0"]
        return self._read_counters(network.netns_path, names)

    def remove_netns(self, sandbox_id: str) -> None:
        """Unpin the pod's namespace if vmcri made one; idempotent."""
        self.netns.remove(self.netns_path(sandbox_id))

    def gc(self, sandboxes: Iterable[SandboxRecord]) -> None:
        """Tell 1.1 plugins which attachments are still in use, so they free the rest."""
        state = self.conf_state()
        if state.network is None:
            return
        valid = [
            (s.id, s.network.ifname or self.config.interface)
            for s in sandboxes
            if s.network is not None and s.network.config and not s.network.released
        ]
        try:
            self.cni.gc(state.network, valid)
        except VmcriError as exc:
            log.warning("CNI GC: %s", exc.message)

    def _attachment(self, sandbox: SandboxRecord, network: PodNetwork) -> Attachment:
        caps = json.loads(network.runtime_config) if network.runtime_config else {}
        return Attachment(
            container_id=sandbox.id,
            netns=network.netns_path,
            ifname=network.ifname or self.config.interface,
            args=env_args(cni_args(sandbox.config, sandbox.id)),
            capabilities=caps,
        )
