"""A container that makes its own user namespace inside namespaces it does not own. Pure.

A VM pod's containers share the guest's network, IPC and UTS namespaces, which the
guest's initial user namespace owns (the NIC is configured there before any container
exists). runc 1.1 joins a user namespace given by path before the others, and could
not then join those; given only the mappings, it joins the pod's namespaces first, as
the guest's root, and then unshares a user namespace of the container's own with the
pod's mappings. Every container of the pod has the same mappings, so they agree on
every file's owner, as one shared namespace would.

What such a container's root cannot do, because the namespaces are not its user
namespace's (the kernel checks the owner's capabilities):

* mount ``sysfs`` (network namespace) or ``mqueue`` (IPC namespace): both become
  recursive binds of the guest's own mounts, read-only as sysfs is;
* set the host name (UTS namespace): the guest's name is the pod's already, so the
  spec names none;
* mount ``proc`` for a PID namespace another user namespace owns: the pod's shared
  one (the guest's) or another container's, so those modes are refused.
"""

from __future__ import annotations

from vmcri.errors import Unimplemented
from vmcri.model import NamespaceMode, NamespaceOptions

Spec = dict[str, object]

_FIELD = "security_context.namespace_options"
_BINDS = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}


def check_own_userns(opts: NamespaceOptions) -> None:
    """Refuse a PID namespace the container's own user namespace would not own.

    Raises Unimplemented naming ``...namespace_options.pid``.
    """
    if opts.pid in (NamespaceMode.POD, NamespaceMode.TARGET):
        raise Unimplemented(
            f"{_FIELD}.pid: {opts.pid.name} is not available with userns_options mode POD "
            "in a VM pod (each container's user namespace is its own, and /proc cannot be "
            "mounted for a PID namespace another one owns); use CONTAINER"
        )


def own_userns_mounts(mounts: list[Spec], own_ipc: bool) -> list[Spec]:
    """``mounts`` with the sysfs and mqueue mounts turned into binds of the runtime's own;
    mqueue stays itself with ``own_ipc`` (an IPC namespace made after the user namespace
    is the container's)."""
    out: list[Spec] = []
    for mount in mounts:
        kind = str(mount.get("type"))
        source = None if own_ipc and kind == "mqueue" else _BINDS.get(kind)
        if source is None:
            out.append(mount)
            continue
        raw = mount.get("options", [])
        options = [str(o) for o in raw] if isinstance(raw, list) else []
        out.append(
            {
                "destination": mount["destination"],
                "type": "bind",
                "source": source,
                "options": ["rbind", *options],
            }
        )
    return out
