"""Regenerate the `_pb2` modules of this folder from its `.proto` files (grpcio-tools' bundled protoc).

    python -m reward_services.proto.generate            # rewrite the generated modules in place
    python -m reward_services.proto.generate --check    # exit 1 if they are stale (tests run this)

The generated modules are committed, so installing mixrl needs no code generation step.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("reward_service.proto", "grpc_predict_v2.proto")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every proto into `out_dir`; imports in the `_grpc` modules are made package-relative."""
    from grpc_tools import protoc

    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    for proto in PROTOS:
        rc = protoc.main(["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", str(HERE / proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")
    written = []
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        grpc_mod = out_dir / f"{stem}_pb2_grpc.py"
        text = grpc_mod.read_text().replace(f"import {stem}_pb2 as", f"from . import {stem}_pb2 as")
        grpc_mod.write_text(text)
        written += [out_dir / f"{stem}_pb2.py", grpc_mod]
    return written


def is_current() -> bool:
    """Whether the committed modules equal freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return all((HERE / p.name).exists() and filecmp.cmp(p, HERE / p.name, shallow=False) for p in fresh)


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        ok = is_current()
        print("generated modules are current" if ok else "stale: run python -m reward_services.proto.generate")
        sys.exit(0 if ok else 1)
    for path in generate(HERE):
        print(path)
