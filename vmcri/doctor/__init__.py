"""``vmcri doctor``: what this host offers, and what vmcri will do about it.

The counterpart of ``kata-runtime check``. Each check is one function returning
a :class:`~vmcri.doctor.model.Check`; the checks reuse the probes the backends
decide with (``kvm_usable``, ``find_virtiofsd``, ``load_guest_image``, the runc
host facts), so the doctor reports what the daemon would really do.
"""
