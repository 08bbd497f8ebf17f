"""Which ``runc create`` failures are the image's (or the request's), not the node's.

runc refuses a container whose process cannot be run from its rootfs: the executable is
missing, not in ``$PATH``, not executable, for another machine; or the working directory
is a file. Those are the image's (or the command the request chose), nothing a retry on
this node fixes, so they answer FAILED_PRECONDITION with the cause named, as a missing
image volume or a stopped sandbox do, instead of INTERNAL. Everything else runc refuses
stays HostCommandError (INTERNAL): cgroups, mounts, the kernel are the node's business.

The patterns are runc 1.1's wording (``libcontainer/standard_init_linux.go``,
``init_linux.go``) and crun's, which Debian ships as the other OCI runtime.
"""

from __future__ import annotations

import re

from vmcri.errors import FailedPrecondition

_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    # runc: exec: "nope": executable file not found in $PATH
    (re.compile(r'exec: "(?P<what>[^"]*)": executable file not found in \$PATH'),
     "the image has no executable {what!r} in the container's $PATH"),
    # runc: exec: "/no/such": stat /no/such: no such file or directory
    (re.compile(r'exec: "(?P<what>[^"]*)": stat [^:]*: no such file or directory'),
     "{what!r} does not exist in the image"),
    # runc: exec: "/etc": permission denied; exec format error; is a directory
    (re.compile(r'exec: "(?P<what>[^"]*)": (?P<why>[^;]*)'),
     "{what!r} cannot be executed from the image ({why})"),
    # runc: chdir to cwd ("/x") set in config.json failed: not a directory
    (re.compile(r'chdir to cwd \("(?P<what>[^"]*)"\) set in config\.json failed: (?P<why>[^;]*)'),
     "the working directory {what!r} cannot be entered ({why})"),
    # runc: error during container init: mkdir /etc/passwd: not a directory (the cwd)
    (re.compile(r"container init: mkdir (?P<what>\S+): (?P<why>not a directory)"),
     "{what!r} in the image is a file where a directory is needed ({why})"),
    # crun: executable file `/no/such` not found in $PATH (an absolute path: no $PATH used)
    (re.compile(r"executable file `(?P<what>/[^`]*)` not found"),
     "{what!r} does not exist in the image"),
    # crun: executable file `nope` not found in $PATH
    (re.compile(r"executable file `(?P<what>[^`]*)` not found"),
     "the image has no executable {what!r} in the container's $PATH"),
    # crun: chdir to `/x`: Not a directory
    (re.compile(r"chdir to `(?P<what>[^`]*)`: (?P<why>[^;]*)"),
     "the working directory {what!r} cannot be entered ({why})"),
)  # fmt: skip


def image_refusal(container_id: str, errors: str) -> FailedPrecondition | None:
    """FailedPrecondition naming the cause if runc's ``errors`` say the image (or the
    requested process) cannot run; None when the failure is the node's."""
    for pattern, cause in _CAUSES:
        found = pattern.search(errors)
        if found is not None:
            named = cause.format(**found.groupdict())
            return FailedPrecondition(
                f"container {container_id}: {named}; runc create refused it: {errors}"
            )
    return None
