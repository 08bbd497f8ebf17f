"""The guest has only Python's standard library, google.protobuf and vmcri: prove the agent
starts with exactly that (as the guest image's /opt/vmcri lays it out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import google.protobuf

import vmcri

CHECK = """
import sys
import vmcri.agent.main, vmcri.agent.guest.server, vmcri.agent.client
# what the agent runs for a pod's shared PID namespace (agent/guest/pod_pid.py)
import vmcri.agent.guest.pod_pid, vmcri.host.pause, vmcri.host.namespaces
roots = {m.split('.')[0] for m in sys.modules}
bad = sorted(roots & {'grpc', 'jinja2', 'libvirt', 'zstandard'})
assert not bad, bad
"""


def test_agent_imports_only_what_the_guest_has(tmp_path: Path) -> None:
    (tmp_path / "google").mkdir()
    (tmp_path / "google" / "protobuf").symlink_to(Path(google.protobuf.__file__).parent)
    (tmp_path / "vmcri").symlink_to(Path(vmcri.__file__).parent)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
         + CHECK],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
