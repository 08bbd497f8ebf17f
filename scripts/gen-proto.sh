#!/usr/bin/env bash
# Generate the Python gRPC code for proto/*.proto into vmcri/api/ (never edited by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${VMCRI_PYTHON:-.venv/bin/python}
out=vmcri/api
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m grpc_tools.protoc -Iproto --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" proto/*.proto
# protoc writes flat imports ("import api_pb2"); make them package-relative.
for f in "$tmp"/*_pb2_grpc.py "$tmp"/*_pb2.py; do
    sed -i -E 's/^import ([a-z_]+_pb2) as /from vmcri.api import \1 as /' "$f"
done
echo '"""Generated from proto/ by scripts/gen-proto.sh; do not edit."""' > "$tmp/__init__.py"
rm -rf "$out.new" && mv "$tmp" "$out.new" && rm -rf "$out" && mv "$out.new" "$out"
trap - EXIT
