#!/usr/bin/env bash
# The fast check for contributors: lint (ruff), format (ruff format --check), types
# (mypy --strict over vmcri and tests) and the unit tests. Seconds, and no root: it needs
# only the virtualenv .venv, which scripts/setup.sh makes (once, as root).
# Unit tests that need root (mknod, trusted.* xattrs) skip without it, saying so.
# Extra arguments go to pytest (e.g. scripts/check.sh -x -k store).
source "$(dirname "$0")/lib.sh"
cd "$VMCRI_TOP"
if [ ! -x "$VMCRI_VENV/bin/python" ]; then
    echo "$0: no virtualenv at $VMCRI_VENV; run scripts/setup.sh once (as root)" >&2
    exit 1
fi
# The generated gRPC code is not in git; make it when missing or older than proto/.
if [ ! -f vmcri/api/api_pb2.py ] || [ -n "$(find proto -name '*.proto' -newer vmcri/api/api_pb2.py)" ]; then
    say "generating gRPC code from proto/"
    VMCRI_PYTHON="$VMCRI_VENV/bin/python" scripts/gen-proto.sh
fi
say "ruff"
"$VMCRI_VENV/bin/ruff" check vmcri tests bench scripts
"$VMCRI_VENV/bin/ruff" format --check vmcri tests bench scripts
say "mypy"
"$VMCRI_VENV/bin/mypy" vmcri tests
say "unit tests"
exec "$VMCRI_VENV/bin/pytest" -q -rs tests/unit "$@"
