#!/usr/bin/env bash
# Set up this machine, then run lint, type checks and the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
source "$(dirname "$0")/lib.sh"
need_root
cd "$VMCRI_TOP"
scripts/setup.sh
say "ruff"
"$VMCRI_VENV/bin/ruff" check vmcri tests bench scripts
"$VMCRI_VENV/bin/ruff" format --check vmcri tests bench scripts
say "mypy"
"$VMCRI_VENV/bin/mypy" vmcri
say "pytest"
exec "$VMCRI_VENV/bin/pytest" -ra "$@"
