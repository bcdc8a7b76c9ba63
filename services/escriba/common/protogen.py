"""Generate the protobuf/gRPC stubs from ``proto/`` into ``services/escriba/v1``.

One generator, one output place: every service imports ``escriba.v1.*_pb2``. ``--check`` regenerates
into a temporary directory and fails when the committed stubs differ, so a proto edit without
``make proto`` is caught by the tests and CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "services" / "escriba" / "v1"
_INIT = '"""Generated protobuf and gRPC stubs (``make proto``); do not edit."""\n'


class ProtogenError(RuntimeError):
    """The generator failed or the stubs are stale."""


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "escriba" / "v1").glob("*.proto"))


def _plugin(name: str) -> str:
    found = Path(sys.executable).parent / name
    if not found.exists():
        found_any = shutil.which(name)
        if found_any is None:
            raise ProtogenError(f"{name} not found: install the dev extra (make setup)")
        return found_any
    return str(found)


def generate(out_root: Path) -> Path:
    """Run protoc into ``out_root`` (a directory standing for ``services/``); return the package dir."""
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if not files:
        raise ProtogenError(f"no .proto files under {PROTO_ROOT}")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *files,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProtogenError(f"protoc failed:\n{result.stderr}")
    package = out_root / "escriba" / "v1"
    (package / "__init__.py").write_text(_INIT)
    (package / "py.typed").write_text("")
    return package


def _differences(expected: Path, actual: Path) -> list[str]:
    want = {p.name for p in expected.iterdir() if p.is_file()}
    have = {p.name for p in actual.iterdir() if p.is_file()} if actual.exists() else set()
    diffs = sorted(f"missing: {n}" for n in want - have)
    diffs += sorted(f"not generated from proto/: {n}" for n in have - want)
    for name in sorted(want & have):
        if not filecmp.cmp(expected / name, actual / name, shallow=False):
            diffs.append(f"stale: {name}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        diffs = _differences(fresh, OUT_PACKAGE)
        if args.check:
            if diffs:
                print("generated stubs are stale; run `make proto`:", *diffs, sep="\n  ", file=sys.stderr)
                return 1
            print(f"stubs up to date ({len(proto_files())} proto files)")
            return 0
        if OUT_PACKAGE.exists():
            shutil.rmtree(OUT_PACKAGE)
        shutil.copytree(fresh, OUT_PACKAGE)
        print(f"generated {OUT_PACKAGE.relative_to(ROOT)} from {len(proto_files())} proto files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
