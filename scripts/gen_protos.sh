#!/usr/bin/env bash
# Regenerate the checked-in gRPC stubs (mnas/v1/*_pb2*.py and .pyi) from protos/.
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: the repository root)
# Uses grpcio-tools and mypy-protobuf from .venv, pinned in pyproject.toml's dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
mkdir -p "$out/mnas/v1"
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m grpc_tools.protoc -Iprotos \
    --python_out="$out" --grpc_python_out="$out" \
    --mypy_out="$out" --mypy_grpc_out="$out" \
    protos/mnas/v1/*.proto
touch "$out/mnas/v1/__init__.py"
