"""Write the synthetic datasets of every domain to disk, as parquet (for verl) and jsonl (for reading).

Run:
    python -m mixrl.data.synthetic --out data/synthetic --train-rows 2000 --test-rows 200 --seed 0
    python -m mixrl.data.synthetic --out data/synthetic --domains math code

Layout: `<out>/<domain>/{train,test}.{parquet,jsonl}` for each domain in `DOMAINS`. Every file is
re-validated by `core.data` after writing, so a generator producing a bad row fails here, not in
the trainer.

>>> sorted(DOMAINS)
['chat', 'code', 'ifeval', 'math', 'stem', 'summary']
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from core.data import load_rows
from core.sections import SyntheticDataConfig
from mixrl.data.chat_prompts import generate_chat
from mixrl.data.code_problems import generate_code
from mixrl.data.ifeval_prompts import generate_ifeval
from mixrl.data.math_problems import generate_math
from mixrl.data.stem_problems import generate_stem
from mixrl.data.summary_tasks import generate_summary

Generator = Callable[[int, str, int], list[dict[str, Any]]]  # (num_rows, split, seed) -> rows

DOMAINS: dict[str, Generator] = {
    "math": generate_math,
    "code": generate_code,
    "ifeval": generate_ifeval,
    "chat": generate_chat,
    "stem": generate_stem,
    "summary": generate_summary,
}


def generator_fingerprint(seed: int, rows: int = 16) -> dict[str, str]:
    """Each domain's generator, as the SHA-256 (16 hex digits) of its first `rows` train and test rows for `seed`:
    recorded with a trained checkpoint, it tells whether today's generators still write the data that model saw
    (a changed generator moves prompts between the splits, so held-out prompts could be ones it trained on).

    >>> generator_fingerprint(0) == generator_fingerprint(0) and sorted(generator_fingerprint(0)) == sorted(DOMAINS)
    True
    """
    return {
        name: hashlib.sha256(json.dumps([generate(rows, split, seed) for split in ("train", "test")],
                                        sort_keys=True).encode()).hexdigest()[:16]
        for name, generate in DOMAINS.items()
    }


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows -> one parquet file (nested dicts/lists become structs/lists)."""
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows -> one JSON object per line, UTF-8."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_datasets(
    out_dir: str | Path,
    train_rows_per_domain: int,
    test_rows_per_domain: int,
    seed: int = 0,
    domains: Sequence[str] | None = None,
) -> dict[str, dict[str, Path]]:
    """Generate and write each domain's splits; returns {domain: {"train_parquet": path, "train_jsonl": ...,
    "test_parquet": ..., "test_jsonl": ...}}."""
    names = list(DOMAINS) if domains is None else list(domains)
    unknown = [d for d in names if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; valid: {sorted(DOMAINS)}")
    out: dict[str, dict[str, Path]] = {}
    for name in names:
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for split, n in (("train", train_rows_per_domain), ("test", test_rows_per_domain)):
            rows = DOMAINS[name](n, split, seed)
            paths[f"{split}_parquet"] = folder / f"{split}.parquet"
            paths[f"{split}_jsonl"] = folder / f"{split}.jsonl"
            write_parquet(rows, paths[f"{split}_parquet"])
            write_jsonl(rows, paths[f"{split}_jsonl"])
            for fmt in ("parquet", "jsonl"):  # read back through the validating loader
                if load_rows(paths[f"{split}_{fmt}"]) != rows:
                    raise RuntimeError(f"{paths[f'{split}_{fmt}']}: rows read back differ from rows written")
        out[name] = paths
    return out


def ensure_datasets(cfg: SyntheticDataConfig) -> Path:
    """Generate the synthetic datasets into `cfg.out_dir` unless every requested file is already there."""
    out = Path(cfg.out_dir)
    unknown = sorted(set(cfg.test_rows) - set(cfg.train_rows))
    if unknown:
        raise ValueError(f"data.test_rows: {unknown} are not generated domains (data.train_rows has {sorted(cfg.train_rows)})")
    wanted = [out / d / f"{s}.parquet" for d in cfg.train_rows for s in ("train", "test")]
    stamp = out / "generated_with.json"
    spec = asdict(cfg)
    if all(p.exists() for p in wanted) and stamp.exists() and json.loads(stamp.read_text()) == spec:
        return out
    t0 = time.perf_counter()
    for domain, rows in cfg.train_rows.items():
        generate_datasets(out, rows, cfg.test_rows.get(domain, cfg.test_rows_per_domain), seed=cfg.seed, domains=[domain])
    stamp.write_text(json.dumps(spec))
    print(f"[data] generated {dict(cfg.train_rows)} train rows into {out} in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def ensure_quickstart_data(paths: Sequence[str | Path]) -> None:
    """Make the quickstart's synthetic datasets for any of `paths` that is missing and names one of them
    (`DIR/DOMAIN/{train,test}.parquet`, DOMAIN a synthetic domain): GRPO recipes point at the quickstart's data.
    Other missing paths are left for the loader to report."""
    from mixrl.config import QuickstartConfig

    for path in map(Path, paths):
        if path.exists() or path.suffix != ".parquet" or path.stem not in ("train", "test") or path.parent.name not in DOMAINS:
            continue
        ensure_datasets(replace(QuickstartConfig().pretrain.data, out_dir=str(path.parent.parent)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train-rows", type=int, default=2000, help="train rows per domain")
    parser.add_argument("--test-rows", type=int, default=200, help="test rows per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domains", nargs="+", choices=sorted(DOMAINS), default=None)
    args = parser.parse_args(argv)
    paths = generate_datasets(args.out, args.train_rows, args.test_rows, args.seed, args.domains)
    print(json.dumps({d: {k: str(v) for k, v in p.items()} for d, p in paths.items()}, indent=2))


if __name__ == "__main__":
    main()
