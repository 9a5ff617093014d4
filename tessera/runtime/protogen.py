"""Generate the Python stubs of protos/ into tessera/v1/ (``make protos``).

The stubs are checked in so that services start without a build step; CI runs
``--check``, which regenerates into a scratch folder and fails when the
checked-in files differ (someone edited a .proto and forgot ``make protos``).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("tessera") / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every .proto; return the files written."""
    import importlib.resources

    from grpc_tools import protoc  # dev dependency, imported only here

    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_dir / PACKAGE_DIR
    init = pkg / "__init__.py"
    init.write_text('"""Generated protobuf/gRPC stubs of protos/tessera/v1 (make protos). Do not edit."""\n')
    return sorted(p for p in pkg.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in stubs are stale")
    args = parser.parse_args()
    if not args.check:
        written = generate(ROOT)
        print(f"wrote {len(written)} files to {PACKAGE_DIR}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for f in fresh:
            current = ROOT / PACKAGE_DIR / f.name
            if not current.exists() or not filecmp.cmp(f, current, shallow=False):
                stale.append(f.name)
        extra = {p.name for p in (ROOT / PACKAGE_DIR).glob("*_pb2*.py*")} - {f.name for f in fresh}
        stale.extend(sorted(extra))
    if stale:
        print(f"stale protobuf stubs: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    print("protobuf stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
