"""The dataset loader and verl's row schema: rows from a parquet file, a jsonl file or a Hugging Face `save_to_disk` folder.

    from core.data import load_rows
    rows = load_rows("data/synthetic/math/train.parquet")
    rows = load_rows("data/hf_dataset_dict", split="test")

Every format comes back as plain Python: dicts, lists, str, int, float, bool, None. Parquet and Hugging
Face data are read through pyarrow's `to_pylist` (never pandas), so no numpy arrays or numpy scalars reach
the caller, and nested `prompt` / `reward_model` / `extra_info` values compare equal to the rows written.

With `validate=True` (the default) each row is checked against the schema below and the first bad row
raises `DataError` naming the file, the row and the problem. Rows are numbered as a user would look them
up: jsonl by 1-based line number ("line 7"; blank lines are skipped but still counted), parquet and
Hugging Face data by 0-based row index ("row 6 (0-based)").

Schema (verl's RL dataset format):
    data_source: str
    prompt: non-empty list of {"role": "system" | "user" | "assistant", "content": str}
    ability: str
    reward_model: {"ground_truth": str, "style": str (optional)}  — structured answers are JSON strings
    extra_info: dict (optional)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

ROLES = ("system", "user", "assistant")
REQUIRED_KEYS = ("data_source", "prompt", "ability", "reward_model")
_BATCH_ROWS = 1024


class DataError(ValueError):
    """A dataset row or file that does not fit the schema; the message names file, row and problem."""


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def row_problem(row: Any) -> str | None:
    """What is wrong with one row, or None if it fits the schema.

    >>> row_problem({"data_source": "d", "ability": "math", "reward_model": {"ground_truth": "1"},
    ...              "prompt": [{"role": "user", "content": "1?"}]}) is None
    True
    >>> row_problem({"data_source": "d", "ability": "math", "reward_model": {"ground_truth": "1"}})
    "missing key 'prompt'"
    """
    if not isinstance(row, dict):
        return f"expected an object with keys {list(REQUIRED_KEYS)}, got {_type(row)}"
    for key in REQUIRED_KEYS:
        if key not in row:
            return f"missing key {key!r}"
    for key in ("data_source", "ability"):
        if not isinstance(row[key], str):
            return f"{key!r} must be a string, got {_type(row[key])}"
    problem = _prompt_problem(row["prompt"])
    if problem:
        return problem
    rm = row["reward_model"]
    if not isinstance(rm, dict):
        return f"'reward_model' must be an object with a 'ground_truth', got {_type(rm)}"
    if "ground_truth" not in rm:
        return "'reward_model' has no 'ground_truth'"
    if not isinstance(rm["ground_truth"], str):
        return (f"'reward_model.ground_truth' must be a string (JSON-encode structured answers), "
                f"got {_type(rm['ground_truth'])}")
    if rm.get("style") is not None and not isinstance(rm["style"], str):
        return f"'reward_model.style' must be a string, got {_type(rm['style'])}"
    extra = row.get("extra_info")
    if extra is not None and not isinstance(extra, dict):
        return f"'extra_info' must be an object, got {_type(extra)}"
    return None


def _prompt_problem(prompt: Any) -> str | None:
    if not isinstance(prompt, list) or not prompt:
        shown = "an empty list" if isinstance(prompt, list) else _type(prompt)
        return f"'prompt' must be a non-empty list of {{role, content}} messages, got {shown}"
    for i, msg in enumerate(prompt):
        if not isinstance(msg, dict):
            return f"'prompt[{i}]' must be a {{role, content}} message, got {_type(msg)}"
        for key in ("role", "content"):
            if key not in msg:
                return f"'prompt[{i}]' has no {key!r}"
        if msg["role"] not in ROLES:
            return f"'prompt[{i}].role' is {msg['role']!r}; valid roles: {', '.join(ROLES)}"
        if not isinstance(msg["content"], str):
            return f"'prompt[{i}].content' must be a string, got {_type(msg['content'])}"
    return None


def validate_row(row: Any, where: str) -> None:
    """Raise DataError(f"{where}: {problem}") if the row does not fit the schema."""
    problem = row_problem(row)
    if problem:
        raise DataError(f"{where}: {problem}")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}: line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line.rstrip("\r\n"))  # so the column is on this line
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None


def _table_rows(batches: Iterator[pa.RecordBatch | pa.Table], where: str) -> Iterator[tuple[str, Any]]:
    index = 0
    for batch in batches:
        # pandas writes a non-trivial index as a column; it is not part of the row
        keep = [name for name in batch.schema.names if not name.startswith("__index_level_")]
        for row in batch.select(keep).to_pylist():
            yield f"{where}: row {index} (0-based)", row
            index += 1


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    return _table_rows(reader.iter_batches(batch_size=_BATCH_ROWS), str(path))


def _hf_rows(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    import datasets  # heavy import, only when a folder is read

    loaded = datasets.load_from_disk(str(path))
    where = str(path)
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None:
            raise DataError(f"{path}: a DatasetDict with splits {splits}; pass split= to choose one")
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r}; available splits: {splits}")
        loaded, where = loaded[split], f"{path} [split {split!r}]"
    elif split is not None:
        raise DataError(f"{path}: a single Dataset has no splits, but split={split!r} was given")
    # the arrow format respects any indices mapping and skips feature decoding: rows as stored
    return _table_rows(loaded.with_format("arrow").iter(batch_size=_BATCH_ROWS), where)


def iter_rows(path: str | Path, *, validate: bool = True, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Stream rows from a `.parquet` file, a `.jsonl` file or a `save_to_disk` folder (`split=` for a
    DatasetDict), checking each against the schema when `validate`. Problems with the path, the format or
    the split raise at once; a bad row raises when it is reached."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk "
                            "(no dataset_dict.json or state.json)")
        source = _hf_rows(path, split)
    elif path.suffix not in (".jsonl", ".parquet"):
        raise DataError(f"{path}: unsupported format {path.suffix!r}; expected .parquet, .jsonl or a folder "
                        "written by datasets' save_to_disk")
    elif split is not None:
        raise DataError(f"{path}: split={split!r} was given, but a {path.suffix} file has no splits")
    else:
        source = _jsonl_rows(path) if path.suffix == ".jsonl" else _parquet_rows(path)
    return _checked(source, validate)


def _checked(source: Iterator[tuple[str, Any]], validate: bool) -> Iterator[dict[str, Any]]:
    for where, row in source:
        if validate:
            validate_row(row, where)
        yield row


def load_rows(path: str | Path, *, validate: bool = True, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of one dataset as plain Python dicts (see `iter_rows`)."""
    return list(iter_rows(path, validate=validate, split=split))
