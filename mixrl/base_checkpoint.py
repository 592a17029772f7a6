"""The shipped base checkpoint: the quickstart's default starting policy, built by the project's own recipes.

`make base-checkpoint` runs the quickstart's from-scratch path (synthetic data -> `mixrl pretrain` -> `mixrl sft`
with thinking-mode fusion) with fixed step counts and fp32 — no time box and no measured-precision choice, so every
machine trains the same model — and packs its SFT checkpoint into `mixrl/assets/base_tiny/` with a manifest: the
exact command, the resolved recipe, the data config the model saw, a fingerprint of the generators that wrote
that data, each stage's summary and the SHA-256 of every file. `mixrl quickstart` starts from it unless
`from_scratch=true`, after `verify` has checked every hash and that today's generators write the same data.

Run: `python -m mixrl.base_checkpoint verify` (prints the manifest's figures) or
`python -m mixrl.base_checkpoint pack RUN_ROOT` (after a from-scratch quickstart into RUN_ROOT).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

SHIPPED_BASE = Path(__file__).resolve().parent / "assets" / "base_tiny"
MANIFEST = "manifest.json"
# The build: the quickstart's from-scratch defaults (fixed steps, fp32), without its evaluation-only stages.
BUILD_COMMAND = ("make base-checkpoint: mixrl quickstart --recipe recipes/quickstart.yaml from_scratch=true run_root=runs/base_build "
                 "grpo.max_steps=0 reward_model.instances=0 && python -m mixrl.base_checkpoint pack runs/base_build")
# Data keys that do not change the rows (where they are written)
_DATA_KEYS_IGNORED = ("out_dir",)


class BaseCheckpointError(ValueError):
    """The shipped base checkpoint is missing, altered, or does not fit the requested data."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | Path = SHIPPED_BASE) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BaseCheckpointError(f"{path}: no manifest; the shipped base checkpoint is missing (rebuild it with "
                                  f"`make base-checkpoint`, or run the quickstart with from_scratch=true)")
    return json.loads(path.read_text())


def verify(folder: str | Path = SHIPPED_BASE) -> dict[str, Any]:
    """Check every file of the checkpoint against the manifest's SHA-256; returns the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, expected in manifest["sha256"].items():
        path = folder / name
        if not path.is_file():
            raise BaseCheckpointError(f"{path}: missing (listed in {folder / MANIFEST})")
        actual = sha256_file(path)
        if actual != expected:
            hint = " (a Git LFS pointer? fetch the real file)" if path.stat().st_size < 1024 else ""
            raise BaseCheckpointError(f"{path}: SHA-256 {actual} does not match the manifest's {expected}{hint}; "
                                      f"rebuild with `make base-checkpoint`")
    return manifest


def data_mismatch(manifest: dict[str, Any], data_cfg: Any) -> list[str]:
    """Keys of the synthetic-data config that differ from the data the checkpoint was trained on, as
    "key: shipped X, requested Y", then the generators whose rows changed since (held-out prompts are only
    guaranteed disjoint from training for the same data)."""
    requested = dataclasses.asdict(data_cfg) if dataclasses.is_dataclass(data_cfg) else dict(data_cfg)
    shipped = manifest["data"]
    diffs = []
    for key in sorted(set(shipped) | set(requested)):
        if key in _DATA_KEYS_IGNORED:
            continue
        if shipped.get(key) != requested.get(key):
            diffs.append(f"{key}: shipped {shipped.get(key)!r}, requested {requested.get(key)!r}")
    if "generators" in manifest and not diffs:
        from mixrl.data.synthetic import generator_fingerprint

        now = generator_fingerprint(requested["seed"])
        shipped_generators = manifest["generators"]
        changed = sorted(d for d in set(now) | set(shipped_generators) if now.get(d) != shipped_generators.get(d))
        if changed:
            diffs.append(f"generators: {', '.join(changed)} now write other rows than the checkpoint was trained on "
                         f"(rebuild it with `make base-checkpoint`)")
    return diffs


def pack(run_root: str | Path, out: str | Path = SHIPPED_BASE, command: str = BUILD_COMMAND) -> dict[str, Any]:
    """Copy RUN_ROOT/sft/final into OUT with a manifest (command, recipe, data config, stage summaries, hashes)."""
    run_root, out = Path(run_root), Path(out)
    final = run_root / "sft" / "final"
    if not (final / "config.json").is_file():
        raise BaseCheckpointError(f"{final}: no SFT checkpoint (run the from-scratch quickstart into {run_root} first)")
    recipe = yaml.safe_load((run_root / "config.yaml").read_text())
    for stage in ("pretrain", "sft"):
        train = recipe[stage]["train"]
        if train.get("max_minutes") or train.get("dtype") == "auto":
            raise BaseCheckpointError(f"{run_root / 'config.yaml'}: {stage}.train has max_minutes={train.get('max_minutes')} "
                                      f"dtype={train.get('dtype')}; the shipped base must be trained by step count in a "
                                      f"fixed precision so every machine builds the same model")
    from mixrl.data.synthetic import generator_fingerprint

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    hashes = {}
    for path in sorted(final.iterdir()):
        if path.is_file():
            shutil.copy2(path, out / path.name)
            hashes[path.name] = sha256_file(out / path.name)
    summaries = {stage: json.loads((run_root / stage / "summary.json").read_text()) for stage in ("pretrain", "sft")}
    for summary in summaries.values():
        for key in ("checkpoint", "tensorboard"):
            summary.pop(key, None)
    manifest = {
        "command": command,
        "recipe": recipe,
        "data": recipe["pretrain"]["data"],
        "generators": generator_fingerprint(recipe["pretrain"]["data"]["seed"]),
        "summaries": summaries,
        "sha256": hashes,
        "bytes": sum((out / name).stat().st_size for name in hashes),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixrl.base_checkpoint", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check the shipped checkpoint's hashes and print its figures")
    p = sub.add_parser("pack", help="pack RUN_ROOT/sft/final (a from-scratch quickstart) as the shipped checkpoint")
    p.add_argument("run_root")
    p.add_argument("--out", default=str(SHIPPED_BASE))
    args = parser.parse_args(argv)
    try:
        manifest = verify() if args.command == "verify" else pack(args.run_root, args.out)
    except BaseCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    figures = {stage: {k: s.get(k) for k in ("steps", "final_loss", "heldout_math_accuracy") if k in s}
               for stage, s in manifest["summaries"].items()}
    print(json.dumps({"bytes": manifest["bytes"], "sha256": manifest["sha256"], "stages": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
