"""Generate the Python code for `proto/gated/v1/*.proto` into `gated/rpc/v1/`.

`make proto` runs this; `tests/rpc/test_codegen.py` runs it into a temporary
directory and compares, so committed code that no longer matches the
contract fails the tests.

grpc_tools writes imports as the .proto paths read (`from gated.v1 import
registry_pb2`); the generated package lives at `gated.rpc.v1`, so those
imports are rewritten. The lines that only stamp the generator's version are
ignored when comparing (`normalized`): a newer grpcio-tools on a fresh clone
must not make the tests fail when the contract itself has not changed.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PROTO_PACKAGE = "gated/v1"
OUTPUT = REPO / "gated" / "rpc" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")

_INIT = '"""Generated from proto/gated/v1 by gated/rpc/codegen.py (`make proto`). Do not edit."""\n'
_IMPORT_RE = re.compile(r"^from gated\.v1 import ", re.MULTILINE)
_VERSION_STAMPS = (
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
    re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)"),
)


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules for every .proto into `out_dir`; returns their paths."""
    from grpc_tools import protoc  # a build dependency only: the daemon never imports this module

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        status = protoc.main(args)
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status} (see its message above)")
        written = []
        for src in sorted((Path(tmp) / PROTO_PACKAGE).iterdir()):
            if not src.name.endswith(GENERATED_SUFFIXES):
                continue
            dest = out_dir / src.name
            dest.write_text(_IMPORT_RE.sub("from gated.rpc.v1 import ", src.read_text()))
            written.append(dest)
    init = out_dir / "__init__.py"
    init.write_text(_INIT)
    written.append(init)
    return written


def normalized(text: str) -> str:
    """The text without the lines that only name the generator's version."""
    for stamp in _VERSION_STAMPS:
        text = stamp.sub("<version>", text)
    return text


def stale_files(committed: Path = OUTPUT) -> list[str]:
    """Names of generated files that differ from what the .proto files give now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        names = set(fresh) | {p.name for p in committed.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = []
        for name in sorted(names):
            ours = committed / name
            if name not in fresh or not ours.exists():
                stale.append(name)
            elif normalized(ours.read_text()) != normalized(fresh[name].read_text()):
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        stale = stale_files()
        if stale:
            print(f"stale generated code in {OUTPUT}: {', '.join(stale)}; run: make proto", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    if argv:
        print("usage: python -m gated.rpc.codegen [--check]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        for old in OUTPUT.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        for path in fresh:
            shutil.copyfile(path, OUTPUT / path.name)
    print(f"generated {len(fresh)} files in {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
