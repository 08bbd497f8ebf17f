"""A runc pod's containers run below kubelet's cgroup_parent, spelled per cgroup driver.

The VM handler's QEMU goes into the same pod cgroup (tests/integration/vm/
test_vm_cgroup.py); both get its path from ``vmcri.host.cgroups.pod_cgroup``.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest

from tests.integration.runc.runc_itest_helpers import (
    RECORDS,
    container_record,
    sandbox_record,
    stop,
)
from tests.support.host_cgroups import misplaced_threads, remove_tree
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.model import ImageInfo, Metadata, PodConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_containers_run_in_kubelet_s_pod_cgroup(
    driver: str, image: ImageInfo, workdir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    if driver == "systemd":
        parent, top = f"vmcritest{run}-podx.slice", f"/vmcritest{run}.slice"
        path = f"{top}/vmcritest{run}-podx.slice"
    else:
        parent = top = path = f"/vmcritest{run}"
    options = RuncOptions(cgroup_parent=f"/vmcri-test-{run}")
    backend = RuncBackend(
        options, Layout(workdir / "state", workdir / "root"), RealHost(), RECORDS,
        cgroup_driver=driver,
    )  # fmt: skip
    config = PodConfig(metadata=Metadata(name="pod", uid=run, namespace="ns"), cgroup_parent=parent)
    sb = sandbox_record(config)
    backend.run_sandbox(sb)
    c = container_record(sb, workdir, command=("sleep", "60"))
    try:
        backend.create_container(sb, c, image)
        backend.supervisor.start(sb, c)
        pid = backend.supervisor.pid(sb, c.id)
        assert pid > 0
        assert misplaced_threads(pid, f"{path}/vmcri-{c.id}") == []
    finally:
        with contextlib.suppress(Exception):
            stop(backend, sb, c, 5)
        with contextlib.suppress(Exception):
            backend.remove_container(sb, c)
        backend.remove_sandbox(sb)
        remove_tree(top)
