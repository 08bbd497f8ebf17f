"""Shared test set-up.

Integration tests need root; without it they say so instead of failing obscurely.
A failed test's report ends with the ends of its daemon's log and of its pod VMs' consoles
(tests.support.diagnostics). In CI (``CI=true``) a skipped test is a failure, unless its
reason names a host capability that these machines truly lack: a missing component must
not hide.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.diagnostics import failure_sections

# What CI machines cannot have, whatever the project installs: no vmx/svm for KVM, no
# vhost-vsock or vhost-net devices, and kubectl (no Debian or PyPI package).
ABSENT_IN_CI = ("KVM", "vhost-vsock", "vhost-net", "kubectl")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (namespaces, mounts, libvirt)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        report.sections.extend(failure_sections(funcargs.values()))
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if any(capability in reason for capability in ABSENT_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI, where nothing the project installs may be missing: {reason} "
        f"(only {', '.join(ABSENT_IN_CI)} may be absent)"
    )


PR_GET_CHILD_SUBREAPER = 37


@pytest.fixture(autouse=True)
def _children_are_the_tests_own() -> Iterator[None]:
    """No test leaves the test process a subreaper or with a thread that waits for any
    child: every later test's subprocess would lose its exit status (returncode 0)."""
    yield
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    assert libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
    assert flag.value == 0, "a test left the test process a child subreaper"
    reapers = [t.name for t in threading.enumerate() if t.name == "reaper"]
    assert not reapers, "a test left a reaper thread (waitpid(-1)) in the test process"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory short enough for unix socket paths under it (107 bytes at most), which
    pytest's tmp_path is too deep for; whatever a test mounted below it is unmounted."""
    from vmcri.host.mounts import HostMounter

    path = Path(tempfile.mkdtemp(prefix="vmcri-", dir="/tmp"))
    try:
        yield path
    finally:
        HostMounter().unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)
