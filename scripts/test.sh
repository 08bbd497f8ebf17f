#!/usr/bin/env bash
# Set up this machine, then run the fast check (scripts/check.sh: ruff, format, mypy, the
# unit tests) and every other test tier.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/integration/images -x); without
# any, pytest runs every tier but tests/unit, which the fast check has run.
source "$(dirname "$0")/lib.sh"
need_root
cd "$VMCRI_TOP"
scripts/setup.sh
scripts/check.sh
say "pytest"
[ $# -gt 0 ] || set -- --ignore=tests/unit
exec "$VMCRI_VENV/bin/pytest" -ra "$@"
