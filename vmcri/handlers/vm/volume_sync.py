"""Keeps the copied volumes of every VM pod in step with kubelet's host files.

kubelet updates a configMap, secret, projected or downwardAPI volume on the host within
about a minute of the API change, by writing a new directory and swapping the ``..data``
symlink. One thread polls every pod's copied volumes each :data:`INTERVAL_S` (the update
reaches the guest at most that much later, plus one agent call), reads each through
``guest_volumes.read_volume`` (bounded; never follows a symlink out of the volume), and
when a volume's digest changed, hands the new files to the guest in a thread of that
pod's own: a pod whose agent is slow or never answers has at most one call in flight,
is skipped until it ends (bounded by :data:`CALL_TIMEOUT_S`), and delays no other pod;
after a failed call the pod is tried again later and later (up to :data:`MAX_BACKOFF_S`).
A tick reads at most :data:`VOLUMES_PER_TICK` volumes; the rest are read on the next
ticks, round-robin.

What a pod's volumes are is kept in ``guest-volumes.json`` in the pod's host-only state
directory too, so a restarted daemon goes on syncing them (``load``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vmcri.agent.types import VolumeKind
from vmcri.errors import VmcriError
from vmcri.handlers.vm.guest_volumes import GuestVolume, Snapshot, TooBig, read_volume

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
CALL_TIMEOUT_S = 10.0
VOLUMES_PER_TICK = 256
MAX_VOLUMES_PER_POD = 64
MAX_BACKOFF_S = 30.0

Push = Callable[[GuestVolume, Snapshot], str]
"""Sends one volume's files to the pod's guest, returns its guest path; raises VmcriError."""


@dataclass
class _Pod:
    push: Push
    record: Path | None
    volumes: dict[str, GuestVolume] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    busy: bool = False
    failures: int = 0
    retry_at: float = 0.0


class VolumeSync:
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self._interval = interval_s
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}
        self._cursor = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        sandbox_id: str,
        volume: GuestVolume,
        push: Push,
        digest: str | None,
        record: Path | None = None,
    ) -> None:
        """Watch ``volume`` of the pod (``digest``: of what the guest has, None: unknown,
        so the next tick sends it); ``record``: the pod's file that keeps the list."""
        with self._lock:
            pod = self._pods.setdefault(sandbox_id, _Pod(push, record))
            pod.push = push
            if volume.name not in pod.volumes and len(pod.volumes) >= MAX_VOLUMES_PER_POD:
                log.warning("sandbox %s: too many volumes to sync; %s is not", sandbox_id,
                            volume.name)  # fmt: skip
                return
            pod.volumes[volume.name] = volume
            if digest is not None:
                pod.digests[volume.name] = digest
            else:
                pod.digests.pop(volume.name, None)
            wanted = [v.__dict__ | {"kind": v.kind.name} for v in pod.volumes.values()]
        if record is not None:
            _write_record(record, wanted)
        self._ensure_thread()

    def fits(self, sandbox_id: str, volume: GuestVolume) -> bool:
        """Whether the pod can keep ``volume`` in its guest: not when the pod's name for it
        stands for another host path already, or the pod has too many."""
        with self._lock:
            pod = self._pods.get(sandbox_id)
            if pod is None:
                return True
            known = pod.volumes.get(volume.name)
            if known is not None:
                return known == volume
            return len(pod.volumes) < MAX_VOLUMES_PER_POD

    def has(self, sandbox_id: str, host_path: str) -> bool:
        path = os.path.normpath(host_path)
        with self._lock:
            pod = self._pods.get(sandbox_id)
            return pod is not None and any(v.host_path == path for v in pod.volumes.values())

    def load(self, sandbox_id: str, record: Path, push: Push) -> None:
        """After a daemon restart: watch what ``record`` names (digests unknown: resent)."""
        with self._lock:
            if sandbox_id in self._pods:
                return
        try:
            wanted = json.loads(record.read_bytes()[: 1 << 20])
            volumes = [
                GuestVolume(str(v["name"]), VolumeKind[str(v["kind"])], str(v["host_path"]))
                for v in wanted[:MAX_VOLUMES_PER_POD]
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sandbox %s: cannot read %s: %s", sandbox_id, record, exc)
            return
        for volume in volumes:
            self.add(sandbox_id, volume, push, None, record)

    def forget(self, sandbox_id: str) -> None:
        with self._lock:
            self._pods.pop(sandbox_id, None)

    def close(self) -> None:
        self._stop.set()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="vm-volume-sync", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:
                log.exception("volume sync tick failed")

    def tick(self) -> None:
        """One round: read up to VOLUMES_PER_TICK volumes of pods without a call in
        flight, and push the changed ones, each pod in a thread of its own."""
        now = time.monotonic()
        with self._lock:
            work = [
                (sandbox_id, pod, volume)
                for sandbox_id, pod in self._pods.items()
                if not pod.busy and pod.retry_at <= now
                for volume in pod.volumes.values()
                if volume.kind is VolumeKind.COPY
            ]
            if not work:
                return
            start = self._cursor % len(work)
            work = (work[start:] + work[:start])[:VOLUMES_PER_TICK]
            self._cursor = start + len(work)
        changed: dict[str, list[tuple[GuestVolume, Snapshot]]] = {}
        for sandbox_id, pod, volume in work:
            try:
                snapshot = read_volume(volume)
            except TooBig as exc:
                log.warning("sandbox %s: volume %s grew too big to copy (%s); the guest "
                            "keeps its last copy", sandbox_id, volume.name, exc)  # fmt: skip
                continue
            except OSError as exc:
                log.debug("sandbox %s: volume %s unreadable: %s", sandbox_id, volume.name, exc)
                continue
            if pod.digests.get(volume.name) != snapshot.digest:
                changed.setdefault(sandbox_id, []).append((volume, snapshot))
        for sandbox_id, updates in changed.items():
            with self._lock:
                pod_now = self._pods.get(sandbox_id)
                if pod_now is None or pod_now.busy:
                    continue
                pod_now.busy = True
            threading.Thread(
                target=self._push, args=(sandbox_id, pod_now, updates),
                name=f"volume-sync-{sandbox_id[:12]}", daemon=True,
            ).start()  # fmt: skip

    def _push(
        self, sandbox_id: str, pod: _Pod, updates: list[tuple[GuestVolume, Snapshot]]
    ) -> None:
        try:
            for volume, snapshot in updates:
                try:
                    pod.push(volume, snapshot)
                except VmcriError as exc:
                    log.warning("sandbox %s: volume %s not synced: %s", sandbox_id,
                                volume.name, exc.message)  # fmt: skip
                    with self._lock:
                        pod.failures += 1
                        wait = min(MAX_BACKOFF_S, self._interval * 2**pod.failures)
                        pod.retry_at = time.monotonic() + wait
                    return
                with self._lock:
                    pod.digests[volume.name] = snapshot.digest
                    pod.failures = 0
        finally:
            with self._lock:
                pod.busy = False


def _write_record(path: Path, wanted: list[dict[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(wanted, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot record the pod's guest volumes in %s: %s", path, exc)
