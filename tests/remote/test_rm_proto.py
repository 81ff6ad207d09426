"""The service definition: versioned, and the checked-in modules are exactly what it generates."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

from remote_testlib import ROOT

GENERATED = ["immudoc_pb2.py", "immudoc_pb2_grpc.py", "health_pb2.py"]


def test_generated_modules_are_reproducible(tmp_path):
    pytest.importorskip("grpc_tools")
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / name).read_bytes()
        checked_in = (ROOT / "docstore" / "rpc" / name).read_bytes()
        assert fresh == checked_in, f"docstore/rpc/{name} is stale: run scripts/gen_proto.sh and commit it"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GENERATED)


def test_grpcio_tools_is_pinned_to_grpcio():
    pytest.importorskip("grpc_tools")
    assert metadata.version("grpcio-tools") == metadata.version("grpcio")
    from docstore.rpc import immudoc_pb2_grpc

    assert immudoc_pb2_grpc.GRPC_GENERATED_VERSION == metadata.version("grpcio-tools")


def test_service_is_versioned():
    from docstore.rpc import codec, health_pb2, immudoc_pb2

    assert immudoc_pb2.DESCRIPTOR.package == "immudoc.v1"
    assert immudoc_pb2.DESCRIPTOR.name == "immudoc/v1/immudoc.proto"
    service = immudoc_pb2.DESCRIPTOR.services_by_name["Docstore"]
    assert service.full_name == codec.SERVICE == "immudoc.v1.Docstore"
    streaming = {m.name for m in service.methods if m.server_streaming}
    assert streaming == {"Find", "History"}
    assert {m.name for m in service.methods if m.client_streaming} == {"Insert", "Commit"}
    # the health messages are wire-compatible with grpc.health.v1 (field numbers, types, enum)
    req = health_pb2.HealthCheckRequest.DESCRIPTOR.fields_by_name["service"]
    assert (req.number, req.type) == (1, req.TYPE_STRING)
    status = health_pb2.HealthCheckResponse.DESCRIPTOR.fields_by_name["status"]
    assert status.number == 1
    assert {v.name: v.number for v in health_pb2.HealthCheckResponse.ServingStatus.DESCRIPTOR.values} == {
        "UNKNOWN": 0,
        "SERVING": 1,
        "NOT_SERVING": 2,
        "SERVICE_UNKNOWN": 3,
    }
    text = (ROOT / "proto" / "immudoc" / "v1" / "immudoc.proto").read_text()
    assert "package immudoc.v1;" in text


def test_importing_docstore_does_not_import_grpc():
    code = "import sys, docstore; docstore.connect; assert 'grpc' not in sys.modules, 'grpc imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
