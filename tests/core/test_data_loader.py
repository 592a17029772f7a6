"""core.data: round trips through every format, and errors that name file, row and problem.

Run: .venv/bin/pytest tests/sft/test_data_loader.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.data import DataError, iter_rows, load_rows
from mixrl.data.synthetic import DOMAINS, write_jsonl, write_parquet


@pytest.fixture(scope="module", params=sorted(DOMAINS))
def rows(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """One domain's rows (one file holds one domain: parquet gives a file one extra_info struct type)."""
    return DOMAINS[request.param](30, "train", 0)


def good_row() -> dict[str, Any]:
    return {
        "data_source": "mixrl/synthetic_math",
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "4"},
        "extra_info": {"split": "train", "index": 0, "difficulty": 1, "reasoning": "2 + 2 = 4",
                       "response": "The answer is \\boxed{4}."},
    }


def _plain_python(value: Any) -> bool:
    """True if only dict/list/str/int/float/bool/None occur (no numpy arrays or scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_python(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_python(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


# ---- round trips --------------------------------------------------------------------------------------


def test_parquet_round_trip_is_exact(tmp_path: Path, rows: list) -> None:
    write_parquet(rows, tmp_path / "d.parquet")
    back = load_rows(tmp_path / "d.parquet")
    assert back == rows
    assert all(_plain_python(r) for r in back)


def test_jsonl_round_trip_is_exact(tmp_path: Path, rows: list) -> None:
    write_jsonl(rows, tmp_path / "d.jsonl")
    assert load_rows(tmp_path / "d.jsonl") == rows


def test_hf_dataset_and_dataset_dict_round_trip(tmp_path: Path, rows: list) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    back = load_rows(tmp_path / "ds")
    assert back == rows and all(_plain_python(r) for r in back)

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:20]),
                               "test": datasets.Dataset.from_list(rows[20:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_rows(tmp_path / "dd", split="test") == rows[20:]
    with pytest.raises(DataError, match=r"dd: a DatasetDict with splits \['test', 'train'\]; pass split="):
        load_rows(tmp_path / "dd")
    with pytest.raises(DataError, match=r"no split 'validation'; available splits: \['test', 'train'\]"):
        iter_rows(tmp_path / "dd", split="validation")  # raised at the call, before any iteration
    with pytest.raises(DataError, match="a single Dataset has no splits"):
        load_rows(tmp_path / "ds", split="train")


def test_hf_dataset_after_select_keeps_the_selected_rows(tmp_path: Path, rows: list) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(rows).select([5, 2, 9])  # an indices mapping over the table
    ds.save_to_disk(str(tmp_path / "sel"))
    assert load_rows(tmp_path / "sel") == [rows[5], rows[2], rows[9]]


def test_pandas_written_parquet_reads_as_plain_python(tmp_path: Path, rows: list) -> None:
    """verl's own preprocessing writes parquet with pandas; nested columns come back as lists and dicts,
    and a non-default index column is not mistaken for a field."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(rows)
    df.index = [f"r{i}" for i in range(len(df))]  # not a RangeIndex: pandas writes it as a column
    df.to_parquet(tmp_path / "pd.parquet")
    assert "__index_level_0__" in pq.read_schema(tmp_path / "pd.parquet").names
    back = load_rows(tmp_path / "pd.parquet")
    assert back == rows and all(_plain_python(r) for r in back)


def test_blank_lines_are_skipped_and_iter_rows_streams(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    row = good_row()
    path.write_text("\n" + json.dumps(row) + "\n   \n" + json.dumps(row) + "\n\n", encoding="utf-8")
    assert load_rows(path) == [row, row]
    it = iter_rows(path)
    assert next(it) == row


def test_validate_false_skips_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "loose.jsonl"
    path.write_text(json.dumps({"text": "hello"}) + "\n", encoding="utf-8")
    assert load_rows(path, validate=False) == [{"text": "hello"}]
    with pytest.raises(DataError, match="missing key 'data_source'"):
        load_rows(path)


# ---- errors name file, row and problem ----------------------------------------------------------------


def _break(mutate) -> dict[str, Any]:
    row = copy.deepcopy(good_row())
    mutate(row)
    return row


BAD_ROWS = [
    ("missing_prompt", lambda r: r.pop("prompt"), "missing key 'prompt'"),
    ("missing_ability", lambda r: r.pop("ability"), "missing key 'ability'"),
    ("prompt_is_string", lambda r: r.update(prompt="What is 2 + 2?"),
     "'prompt' must be a non-empty list of {role, content} messages, got str"),
    ("prompt_empty", lambda r: r.update(prompt=[]),
     "'prompt' must be a non-empty list of {role, content} messages, got an empty list"),
    ("message_not_object", lambda r: r["prompt"].append("hi"),
     "'prompt[2]' must be a {role, content} message, got str"),
    ("message_without_role", lambda r: r["prompt"][1].pop("role"), "'prompt[1]' has no 'role'"),
    ("bad_role", lambda r: r["prompt"][0].update(role="bot"),
     "'prompt[0].role' is 'bot'; valid roles: system, user, assistant"),
    ("content_not_string", lambda r: r["prompt"][1].update(content=4),
     "'prompt[1].content' must be a string, got int"),
    ("no_ground_truth", lambda r: r["reward_model"].pop("ground_truth"), "'reward_model' has no 'ground_truth'"),
    ("ground_truth_list", lambda r: r["reward_model"].update(ground_truth=["4"]),
     "'reward_model.ground_truth' must be a string (JSON-encode structured answers), got list"),
    ("reward_model_string", lambda r: r.update(reward_model="4"),
     "'reward_model' must be an object with a 'ground_truth', got str"),
    ("data_source_int", lambda r: r.update(data_source=3), "'data_source' must be a string, got int"),
    ("extra_info_list", lambda r: r.update(extra_info=[1]), "'extra_info' must be an object, got list"),
]


@pytest.mark.parametrize("name,mutate,problem", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_jsonl_errors_name_file_line_and_problem(tmp_path: Path, name: str, mutate, problem: str) -> None:
    path = tmp_path / f"{name}.jsonl"
    # the bad row sits on line 4: line 2 is blank and still counts
    lines = [json.dumps(good_row()), "", json.dumps(good_row()), json.dumps(_break(mutate))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_rows(path)
    assert str(err.value) == f"{path}: line 4: {problem}"


# parquet has one type per column and fills a key missing from some rows with null, so its failures
# read "got None"; a column absent from the whole file is a missing key
PARQUET_BAD = [
    ("bad_role", lambda r: r["prompt"][0].update(role="bot"),
     "'prompt[0].role' is 'bot'; valid roles: system, user, assistant"),
    ("prompt_empty", lambda r: r.update(prompt=[]),
     "'prompt' must be a non-empty list of {role, content} messages, got an empty list"),
    ("prompt_null", lambda r: r.pop("prompt"),
     "'prompt' must be a non-empty list of {role, content} messages, got None"),
    ("ability_null", lambda r: r.pop("ability"), "'ability' must be a string, got None"),
    ("ground_truth_null", lambda r: r["reward_model"].pop("ground_truth"),
     "'reward_model.ground_truth' must be a string (JSON-encode structured answers), got None"),
]


@pytest.mark.parametrize("name,mutate,problem", PARQUET_BAD, ids=[b[0] for b in PARQUET_BAD])
def test_parquet_errors_name_file_row_index_and_problem(tmp_path: Path, name: str, mutate, problem: str) -> None:
    path = tmp_path / f"{name}.parquet"
    write_parquet([good_row(), good_row(), _break(mutate)], path)
    with pytest.raises(DataError) as err:
        load_rows(path)
    assert str(err.value) == f"{path}: row 2 (0-based): {problem}"


def test_parquet_without_a_required_column(tmp_path: Path) -> None:
    rows = [_break(lambda r: r.pop("ability")) for _ in range(2)]
    write_parquet(rows, tmp_path / "noab.parquet")
    with pytest.raises(DataError) as err:
        load_rows(tmp_path / "noab.parquet")
    assert str(err.value) == f"{tmp_path / 'noab.parquet'}: row 0 (0-based): missing key 'ability'"


def test_parquet_null_ground_truth_is_named(tmp_path: Path) -> None:
    rows = [good_row(), good_row()]
    rows[1]["reward_model"]["ground_truth"] = None
    write_parquet(rows, tmp_path / "n.parquet")
    with pytest.raises(DataError) as err:
        load_rows(tmp_path / "n.parquet")
    assert str(err.value) == (f"{tmp_path / 'n.parquet'}: row 1 (0-based): 'reward_model.ground_truth' must be a "
                              "string (JSON-encode structured answers), got None")


def test_hf_errors_name_folder_split_and_row(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [good_row(), good_row(), good_row()]
    rows[2]["prompt"][1]["role"] = "narrator"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError) as err:
        load_rows(tmp_path / "dd", split="test")
    assert str(err.value) == (f"{tmp_path / 'dd'} [split 'test']: row 2 (0-based): 'prompt[1].role' is "
                              "'narrator'; valid roles: system, user, assistant")


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(good_row()) + "\n" + '{"data_source": "x", "prompt": [\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2: invalid JSON \(Expecting value at column 33\)"):
        load_rows(path)


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"list\.jsonl: line 1: expected an object with keys .*, got list"):
        load_rows(path)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(good_row()).encode() + b"\n" + b'{"data_source": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: line 2: not valid UTF-8"):
        load_rows(path)


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_rows(tmp_path / "missing.parquet")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported format '\.csv'; expected \.parquet, \.jsonl"):
        load_rows(tmp_path / "rows.csv")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        load_rows(tmp_path / "plain")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable parquet file"):
        load_rows(tmp_path / "fake.parquet")
    write_jsonl([good_row()], tmp_path / "one.jsonl")
    with pytest.raises(DataError, match=r"split='train' was given, but a \.jsonl file has no splits"):
        load_rows(tmp_path / "one.jsonl", split="train")
