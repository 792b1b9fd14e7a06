"""The generated code matches the .proto files (it is rebuilt by `make proto`, never edited)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[3]


def test_generated_descriptors_match_the_proto_files(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    out = tmp_path / "descriptors.pb"
    include = str(Path(protoc.__file__).parent / "_proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            *protos,
        ],
        check=True,
    )
    from google.protobuf import descriptor_pb2

    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for file in fresh.file:  # CopyToProto leaves json_name out; compare like with like
        for message in file.message_type:
            _clear_json_names(message)
    fresh_by_name = {f.name: f for f in fresh.file}
    generated = {}
    for name in fresh_by_name:
        module = importlib.import_module(
            "services.common.gen." + name.removesuffix(".proto").replace("/", ".") + "_pb2"
        )
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        generated[proto.name] = proto
    gen_dir = ROOT / "services/common/gen/baycast/v1"
    for name in fresh_by_name:
        module_file = gen_dir / (Path(name).stem + "_pb2.py")
        assert module_file.exists(), f"{name} has no generated module: run `make proto`"
    for name, proto in generated.items():
        assert fresh_by_name[name] == proto, (
            f"{name} drifted from its generated code: run `make proto`"
        )


def _clear_json_names(message) -> None:  # type: ignore[no-untyped-def]
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _clear_json_names(nested)
