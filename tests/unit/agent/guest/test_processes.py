"""The guest's processes: exit codes of signals, and a runtime call that hangs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmcri.agent.guest.processes import exit_code_of


def test_exit_codes_of_signals() -> None:
    assert exit_code_of(9) == 137  # killed by SIGKILL
    assert exit_code_of(3 << 8) == 3


HUNG_CREATE = """
import os, sys
from pathlib import Path
from vmcri.agent.guest import runc
from vmcri.agent.guest.processes import Reaper
from vmcri.errors import HostCommandError
tmp = Path(sys.argv[1])
runc.COMMAND_TIMEOUT_S = 0.3
reaper = Reaper()
reaper.start()
runtime = runc.Runc(reaper, binary=str(tmp / "hung-runtime"), root=tmp / "root")
null = os.open(os.devnull, os.O_RDWR)
try:
    runtime.create("c1", tmp, pid_file=tmp / "pid", log=tmp / "log",
                   stdin=null, stdout=null, stderr=null)
except HostCommandError as exc:
    print(exc.message)
"""


def test_a_runtime_create_that_hangs_is_killed_and_named(tmp_path: Path) -> None:
    # In a process of its own: the agent's reaper waits for every child of its process
    hung = tmp_path / "hung-runtime"
    hung.write_text("#!/bin/sh\nexec sleep 1000\n")
    hung.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-c", HUNG_CREATE, str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.startswith("runc create c1 did not finish within 0.3 s"), result
