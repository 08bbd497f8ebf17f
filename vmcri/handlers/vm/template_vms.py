"""The backend's VM templates: a pod's shape, its template, preparing and building them.

``VmTemplateVms`` is the part of ``VmBackend`` (backend.py) that knows what a template VM
is: the shape of a pod (what its saved guest depends on, with a digest of its devices),
the verified template of that shape (``template.py``'s store, which queues a build when
there is none), the start-up sweep, and the build itself: a template VM booted, warmed
up, saved and destroyed. ``boot.py`` restores pods from what it returns.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
import uuid as uuid_module
from pathlib import Path
from typing import TYPE_CHECKING

from vmcri.agent.client import AgentClient
from vmcri.errors import AgentUnavailable, FailedPrecondition, HypervisorError, VmcriError
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.boot import check_guest_version
from vmcri.handlers.vm.designer import Hardware, HostSide, design_domain
from vmcri.handlers.vm.domain import TemplateMemory
from vmcri.handlers.vm.guest_image import GuestImage
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.layout import MAX_SOCKET_PATH
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.render import render_domain
from vmcri.handlers.vm.saved_vm import SavedVm, shape_dict
from vmcri.handlers.vm.sizing import size_vm
from vmcri.handlers.vm.template import Shape, Template, Templates, TemplateStore
from vmcri.model import Resources

log = logging.getLogger(__name__)

TEMPLATE_DOMAIN_PREFIX = "vmcritpl-"  # + daemon pid + key: not a pod's "vmcri-" domain
WARM_UP_TIMEOUT_S = 60.0  # one throwaway container in the template, under emulation
SAVE_TIMEOUT_S = 60.0


class VmTemplateVms:
    """VM templates; a part of ``VmBackend``, which sets what is declared here."""

    _options: VmOptions
    _state: Path
    _hypervisor: Hypervisor
    _vsock: bool
    _share_driver: str
    _templates: Templates | None
    _template_blocker: str
    _template_domain: str  # the template VM being built, destroyed at exit
    _hypervisor_version: str

    if TYPE_CHECKING:

        def _guest(self) -> GuestImage: ...

        def _alive(self, name: str) -> bool: ...

        def _hardware(self, memory_mib: int, vcpus: int, pod_limited: bool = False) -> Hardware: ...

    def _init_templates(self, context: BackendContext) -> None:
        """Templates on when this backend can use them, and the default one prepared in
        the background."""
        options = self._options
        self._hypervisor_version = ""
        self._templates = None
        self._template_blocker = template_blocker(options, self._vsock, self._share_driver)
        if options.template == "auto" and self._template_blocker:
            log.warning("vm backend: VM templates are off: %s", self._template_blocker)
        elif not self._template_blocker:
            directory = Path(options.template_dir) if options.template_dir else None
            store = TemplateStore(directory or context.root / "templates")
            self._templates = Templates(store, self._build_template)
            self._template_domain = ""
            atexit.register(self._stop_template_build)
            threading.Thread(
                target=self._prepare_templates, name="vm-templates-init", daemon=True
            ).start()

    def _saved_shape(
        self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool
    ) -> dict[str, object]:
        """The shape a checkpoint of a pod of these sizes records (``saved_vm.py``)."""
        return shape_dict(self._shape(guest, memory_mib, vcpus, pod_limited))

    def _check_saved_shape(
        self, saved: SavedVm, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool
    ) -> None:
        """The new pod designs the machine the checkpoint's stream was saved from, or
        FailedPrecondition names what differs (its sizes, the guest image, QEMU...)."""
        here = self._saved_shape(guest, memory_mib, vcpus, pod_limited)
        differ = sorted(
            k for k in here.keys() | saved.shape.keys() if here.get(k) != saved.shape.get(k)
        )
        if differ:
            said = ", ".join(
                f"{k} {saved.shape.get(k)!r} there, {here.get(k)!r} here" for k in differ
            )
            raise FailedPrecondition(
                f"path: the checkpoint's VM cannot be loaded into this pod's: {said}"
            )

    def _shape(
        self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
    ) -> Shape:
        """``pod_limited``: a pod-level memory limit, which the VM boots at and never
        outgrows (no virtio-mem region: a shape of its own)."""
        if not self._hypervisor_version:
            self._hypervisor_version = self._hypervisor.version()
        hardware = self._hardware(memory_mib, vcpus, pod_limited)  # clones grow as cold boots do
        shape = Shape(
            guest_version=guest.version,
            hypervisor=self._hypervisor_version,
            **dataclasses.asdict(hardware),
        )
        # What the saved guest saw: the domain with every per-VM value a placeholder
        # (a change of templates/ or of the device policy makes a new template).
        placeholder = Path("/")
        spec = design_domain(
            hardware,
            guest,
            HostSide("n", "u", agent_socket=placeholder, console_log=placeholder,
                     share=placeholder),
            oci_runtime=self._options.oci_runtime,
            template_memory=TemplateMemory("m", shared=False, incoming=False),
        )  # fmt: skip
        devices = hashlib.sha256(render_domain(spec).encode()).hexdigest()[:16]
        return dataclasses.replace(shape, devices=devices)

    def _template_for(
        self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
    ) -> Template | None:
        """The verified template of the pod's shape; None: cold boot (a build is queued)."""
        if self._templates is None:
            return None
        try:
            return self._templates.get(self._shape(guest, memory_mib, vcpus, pod_limited))
        except HypervisorError as exc:
            log.warning("VM templates: %s", exc.message)
            return None

    def _prepare_templates(self) -> None:
        """At start-up: clear what builds of dead daemons left, then build the template of
        the default shape (a pod with no limits)."""
        assert self._templates is not None
        try:
            for name in self._hypervisor.names(TEMPLATE_DOMAIN_PREFIX):
                pid = name.removeprefix(TEMPLATE_DOMAIN_PREFIX).split("-", 1)[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    log.info("VM templates: destroying %s, left by a dead daemon", name)
                    self._hypervisor.destroy(name)
            guest = self._guest()
            self._templates.store.sweep(
                lambda shape: (
                    shape
                    in (
                        self._shape(guest, shape.memory_mib, shape.vcpus),
                        self._shape(guest, shape.memory_mib, shape.vcpus, pod_limited=True),
                    )
                )
            )
            memory_mib, vcpus = size_vm([], Resources(), self._options)
            self._template_for(guest, memory_mib, vcpus)
        except (VmcriError, OSError) as exc:
            log.warning("VM templates: cannot prepare the default template: %s", exc)

    def _stop_template_build(self) -> None:
        """At exit: a template VM still booting would outlive the daemon."""
        if self._template_domain:
            with contextlib.suppress(VmcriError):
                self._hypervisor.destroy(self._template_domain)

    def _build_template(self, shape: Shape, staging: Path) -> None:
        """Boot a template VM of ``shape`` with its RAM in ``staging/memory``, wait for its
        agent, save its device state to ``staging/state``; nothing is left running.

        Raises HypervisorError, AgentUnavailable, FailedPrecondition (agent of another image).
        """
        guest = self._guest()
        if guest.version != shape.guest_version:
            raise FailedPrecondition(f"the guest image is now {guest.version[:12]}")
        tag = f"{os.getpid()}-{shape.key()[:8]}"
        name = f"{TEMPLATE_DOMAIN_PREFIX}{tag}"
        sockets = staging  # the build's sockets go with it, unless the path is too long
        if len(str(staging / f"tpl-{tag}.agent")) > MAX_SOCKET_PATH:
            sockets = self._state / "sockets"
            sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        agent_socket = sockets / f"tpl-{tag}.agent"
        share = staging / "share"  # empty, never mounted by the template's guest
        share.mkdir()
        jail = staging / "jail"
        jail.mkdir()
        (staging / "memory").touch(mode=0o600)  # QEMU sizes it; its jail holds only this file
        spec = design_domain(
            shape.hardware(),
            guest,
            HostSide(
                name=name,
                uuid=str(uuid_module.uuid4()),
                agent_socket=agent_socket,
                console_log=staging / "console.log",
                share=share,
                jail_root=jail,
            ),
            oci_runtime=self._options.oci_runtime,
            template_memory=TemplateMemory(str(staging / "memory"), shared=True, incoming=False),
        )
        client = AgentClient(
            f"unix://{agent_socket}", connect_timeout=2.0, call_timeout=30.0, reconnect=False
        )
        try:
            self._template_domain = name
            self._hypervisor.start(name, render_domain(spec))
            # The agent says nothing until asked, and libvirt reports no guest channel
            # coming up but qemu-guest-agent's: asking is the only way to know it is up.
            deadline = time.monotonic() + self._options.boot_timeout_s
            while True:
                if not self._alive(name):
                    raise HypervisorError(f"template VM {name} stopped while booting")
                try:
                    info = client.ping()
                    break
                except (AgentUnavailable, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise AgentUnavailable(f"template VM {name}: no agent ({exc})") from exc
                    time.sleep(0.2)
            check_guest_version(info.agent_version, guest)
            try:
                client.warm_up(timeout=WARM_UP_TIMEOUT_S)
            except VmcriError as exc:
                # Pods restored from it load these themselves; their containers would fail
                # the same way in a cold-booted pod, with the error where it belongs.
                log.warning("VM template %s: warm-up failed: %s", shape.label(), exc.message)
            client.close()  # the template's agent waits for a next connection: a pod's
            self._hypervisor.save_state(name, staging / "state", SAVE_TIMEOUT_S)
        finally:
            client.close()
            self._hypervisor.destroy(name)
            self._template_domain = ""
            agent_socket.unlink(missing_ok=True)
        (staging / "console.log").unlink(missing_ok=True)
        share.rmdir()
        jail.rmdir()


def template_blocker(options: VmOptions, vsock: bool, share_driver: str) -> str:
    """Why this backend cannot use VM templates, or "" when it can."""
    if options.template == "off":
        return "options.template is off"
    if vsock:
        return "the agent uses vsock (its CID is fixed in a saved guest)"
    if share_driver != "9p":
        return "options.shared_fs is virtiofs (a vhost-user-fs device cannot be saved)"
    return ""
