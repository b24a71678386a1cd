"""The committed generated code matches the .proto contract, and imports as a package."""

from __future__ import annotations

import shutil
from pathlib import Path

from gated.rpc import codegen


def test_committed_generated_code_matches_the_proto_files():
    stale = codegen.stale_files()
    assert stale == [], f"stale generated code: {stale}; run: make proto"


def test_a_changed_contract_is_detected_as_stale(tmp_path: Path):
    committed = tmp_path / "v1"
    shutil.copytree(codegen.OUTPUT, committed)
    tampered = committed / "registry_pb2.py"
    tampered.write_text(tampered.read_text().replace("up_to_seq", "upto_seq"))
    (committed / "admin_pb2_grpc.py").unlink()
    assert codegen.stale_files(committed) == ["admin_pb2_grpc.py", "registry_pb2.py"]


def test_generated_modules_import_as_gated_rpc_v1():
    from gated.rpc.v1 import admin_pb2_grpc, registry_pb2, registry_pb2_grpc

    assert registry_pb2.DESCRIPTOR.package == "gated.v1"
    assert hasattr(registry_pb2_grpc, "RegistryServiceStub") and hasattr(admin_pb2_grpc, "GateAdminServiceServicer")
    for pyi in ("registry_pb2.pyi", "admin_pb2.pyi"):
        assert (codegen.OUTPUT / pyi).exists()


def test_version_stamps_alone_do_not_make_code_stale():
    text = (codegen.OUTPUT / "registry_pb2.py").read_text()
    bumped = text.replace("# Protobuf Python Version:", "# Protobuf Python Version: 99.0.0 was")
    assert codegen.normalized(bumped) == codegen.normalized(text)
