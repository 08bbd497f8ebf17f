"""The runc handler's options: refused at start-up, naming the key."""

from __future__ import annotations

import pytest

from vmcri.errors import ConfigError
from vmcri.handlers.runc.options import RuncOptions
from vmcri.supervisor.containers import EXEC_OUTPUT_LIMIT


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="cgroup_parent"):
        RuncOptions(cgroup_parent="relative")
    with pytest.raises(ConfigError, match="pids_limit"):
        RuncOptions(pids_limit=-1)


def test_exec_output_limit_default_is_what_is_kept_and_more_is_refused() -> None:
    # The agent answers ExecSync in one frame: a limit above what fits was cut silently.
    assert RuncOptions().exec_output_limit == EXEC_OUTPUT_LIMIT
    assert RuncOptions(exec_output_limit=1024).exec_output_limit == 1024
    for bad in (1023, EXEC_OUTPUT_LIMIT + 1, 16 * 1024 * 1024):
        with pytest.raises(ConfigError, match=r"options\.exec_output_limit: .*between 1024"):
            RuncOptions(exec_output_limit=bad)
