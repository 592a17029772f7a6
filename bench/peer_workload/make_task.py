# Copied from shared/peers/make_task.py (the project's peer-baseline harness, documented in shared/peers/README.md),
# so that bench/vs_trl.py runs in a clone without ../shared. Changes from the original are marked 'bench:'.
"""Make the synthetic arithmetic task in verl's RL dataset schema (JSONL always, parquet when pyarrow exists).

    python3 peers/make_task.py --out $PEERS_HOME/data                  # train.jsonl/test.jsonl (+ .parquet)
    $TRL_VENV/bin/python peers/make_task.py --out $PEERS_HOME/data  # this venv has pyarrow -> parquet too

One row (verl schema; `ability` and `extra_info` are the optional verl fields, kept for drop-in use):
  {"data_source": "synthetic/arith",
   "prompt": [{"role": "user", "content": "Compute 37+48. Put the final answer in \\boxed{}."}],
   "ability": "math",
   "reward_model": {"style": "rule", "ground_truth": "85"},
   "extra_info": {"split": "train", "index": 0, "a": 37, "b": 48, "op": "+"}}

Operands are uniform in [0, --max-operand] (default 99); ops default to "+-*"; the ground truth is the exact
integer as a string (negative for some subtractions). Seeded: the same arguments give byte-identical files.
Standard library only (pyarrow optional).
"""

from __future__ import annotations

import argparse
import json
import os
import random
PEERS_HOME = os.environ.get("PEERS_HOME", os.path.abspath(".peers"))  # models, data, outputs, caches

PROMPT_TEMPLATE = "Compute {a}{op}{b}. Put the final answer in \\boxed{{}}."


def make_rows(n: int, split: str, rng: random.Random, ops: str, max_operand: int) -> list[dict]:
    rows = []
    for i in range(n):
        op = rng.choice(ops)
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        c = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append(
            {
                "data_source": "synthetic/arith",
                "prompt": [{"role": "user", "content": PROMPT_TEMPLATE.format(a=a, op=op, b=b)}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(c)},
                "extra_info": {"split": split, "index": i, "a": a, "b": b, "op": op},
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(PEERS_HOME, "data"))
    ap.add_argument("--n-train", type=int, default=4096)
    ap.add_argument("--n-test", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ops", default="+-*", help="characters from '+-*'")
    ap.add_argument("--max-operand", type=int, default=99)
    ap.add_argument("--no-parquet", action="store_true")
    args = ap.parse_args()
    if not args.ops or set(args.ops) - set("+-*"):
        ap.error(f"--ops must use only '+', '-', '*', got {args.ops!r}")

    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    splits = {"train": make_rows(args.n_train, "train", rng, args.ops, args.max_operand),
              "test": make_rows(args.n_test, "test", rng, args.ops, args.max_operand)}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pa = None
    for split, rows in splits.items():
        path = os.path.join(args.out, f"{split}.jsonl")
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        written = [path]
        if pa is not None and not args.no_parquet:
            ppath = os.path.join(args.out, f"{split}.parquet")
            pq.write_table(pa.Table.from_pylist(rows), ppath)
            written.append(ppath)
        print(json.dumps({"split": split, "rows": len(rows), "files": written}))
    if pa is None and not args.no_parquet:
        print(json.dumps({"note": "pyarrow not importable in this interpreter: wrote JSONL only"}))


if __name__ == "__main__":
    main()
