"""Generate the Python code for proto/phe_fl/v2/*.proto, or check it is up to date.

    python proto/generate.py          # rewrite phe_fl/v2/*_pb2*.py
    python proto/generate.py --check  # exit 1 if the committed code is stale

Needs grpcio-tools (a dev dependency); the generated files are committed so that users
need only grpcio and protobuf.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
SOURCES = sorted((PROTO_ROOT / "phe_fl" / "v2").glob("*.proto"))
OUT = ROOT / "phe_fl" / "v2"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(s) for s in SOURCES],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "phe_fl" / "v2").glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        if args.check:
            stale = [
                f.name
                for f in fresh
                if not (OUT / f.name).exists() or not filecmp.cmp(f, OUT / f.name, shallow=False)
            ]
            committed = {p.name for p in OUT.glob("*_pb2*.py*")}
            extra = sorted(committed - {f.name for f in fresh})
            if stale or extra:
                print(f"stale generated code: {stale + extra}; run python proto/generate.py")
                return 1
            print("generated code is up to date")
            return 0
        OUT.mkdir(parents=True, exist_ok=True)
        for f in fresh:
            (OUT / f.name).write_bytes(f.read_bytes())
            print(f"wrote {(OUT / f.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
