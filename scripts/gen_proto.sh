#!/usr/bin/env bash
# Regenerate the checked-in gRPC modules from proto/immudoc/v1/*.proto.
#
#   scripts/gen_proto.sh [OUT_DIR]      (default: docstore/rpc)
#
# Uses grpc_tools.protoc from the Python in $PYTHON (default: python3), and mypy-protobuf's
# plugins (protoc-gen-mypy, protoc-gen-mypy_grpc, next to that Python) for the type stubs
# (*.pyi) mypy checks the client and server against; both generators are pinned in
# constraints.txt. tests/remote/test_rm_proto.py runs this into a temporary directory and checks
# the output is byte-identical to the checked-in files, so edit the .proto, run this, and
# commit both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docstore/rpc}"
python="${PYTHON:-python3}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

bindir="$(dirname "$("$python" -c 'import sys; print(sys.executable)')")"
cd "$root/proto"
"$python" -m grpc_tools.protoc -I . --python_out="$tmp" \
    --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" --mypy_out="$tmp" \
    immudoc/v1/immudoc.proto immudoc/v1/health.proto
"$python" -m grpc_tools.protoc -I . --grpc_python_out="$tmp" \
    --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" --mypy_grpc_out="$tmp" \
    immudoc/v1/immudoc.proto

# protoc writes absolute imports mirroring the proto path (from immudoc.v1 import ...); the
# modules live together in one package, so make that import relative.
sed -e 's/^from immudoc\.v1 import /from . import /' \
    "$tmp/immudoc/v1/immudoc_pb2_grpc.py" >"$out/immudoc_pb2_grpc.py"
cp "$tmp/immudoc/v1/immudoc_pb2.py" "$out/immudoc_pb2.py"
cp "$tmp/immudoc/v1/health_pb2.py" "$out/health_pb2.py"
cp "$tmp/immudoc/v1/immudoc_pb2.pyi" "$out/immudoc_pb2.pyi"
cp "$tmp/immudoc/v1/health_pb2.pyi" "$out/health_pb2.pyi"
sed -e 's/^from immudoc\.v1 import /from . import /' \
    "$tmp/immudoc/v1/immudoc_pb2_grpc.pyi" >"$out/immudoc_pb2_grpc.pyi"
