"""OCI runtime spec generation shared by the host ``runc`` backend and the guest agent.

:mod:`vmcri.oci.spec` is pure: every host fact it needs arrives in a
:class:`~vmcri.oci.context.SpecContext`, so the VM backend can build the same
spec with paths in the guest's terms. The few functions that must read the
host or a rootfs (user names, device nodes, mount sources) live in
:mod:`vmcri.oci.users` and :mod:`vmcri.oci.hostpaths`.
"""
