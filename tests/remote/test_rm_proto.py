"""The service definition: versioned, and the checked-in modules are exactly what it generates."""

from __future__ import annotations

import os
import importlib.util
import subprocess
import sys
from importlib import metadata

import pytest

from remote_testlib import ROOT

GENERATED = ["immudoc_pb2.py", "immudoc_pb2_grpc.py", "health_pb2.py", "immudoc_pb2.pyi", "immudoc_pb2_grpc.pyi", "health_pb2.pyi"]


def test_generated_modules_are_reproducible(tmp_path):
    pytest.importorskip("grpc_tools")
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / name).read_bytes()
        checked_in = (ROOT / "docstore" / "rpc" / name).read_bytes()
        assert fresh == checked_in, f"docstore/rpc/{name} is stale: run scripts/gen_proto.sh and commit it"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GENERATED)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_generator_is_pinned_and_made_the_checked_in_code():
    """What matters: the checked-in modules come from the pinned generator, and the runtimes
    installed can run them (grpcio and protobuf at least the versions the code was made for).
    grpcio itself may be any later release (the generated code only needs >= its generator)."""
    from google.protobuf import __version__ as protobuf_version
    from grpc._utilities import first_version_is_lower

    from docstore.rpc import immudoc_pb2_grpc

    pins = _pins()
    generated = immudoc_pb2_grpc.GRPC_GENERATED_VERSION
    assert pins["grpcio-tools"] == generated, "constraints.txt pins another generator than made docstore/rpc"
    assert not first_version_is_lower(pins["grpcio"], generated), "the pinned grpcio cannot run the generated code"
    assert not first_version_is_lower(metadata.version("grpcio"), generated)
    header = (ROOT / "docstore" / "rpc" / "immudoc_pb2.py").read_text()
    gencode = header.split("Protobuf Python Version: ", 1)[1].split()[0]
    major = gencode.split(".")[0]
    for runtime in (pins["protobuf"], protobuf_version):
        assert runtime.split(".")[0] == major and not first_version_is_lower(runtime, gencode)
    if importlib.util.find_spec("grpc_tools") is not None:  # the test extra installs the pinned generator
        assert metadata.version("grpcio-tools") == pins["grpcio-tools"]


def test_the_test_extra_pins_the_same_generator():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"grpcio-tools=={_pins()["grpcio-tools"]}"' in text


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
