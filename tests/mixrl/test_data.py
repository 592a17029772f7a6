"""Synthetic generators, all domains: determinism, split disjointness, schema, difficulty spread, writing.

Run: .venv/bin/pytest tests/sft/test_data.py tests/sft/test_data_loader.py tests/sft/test_data_domains.py
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mixrl.data import rows as rows_mod
from core.data import load_rows, row_problem
from mixrl.data.synthetic import DOMAINS, generate_datasets, main

REPO = Path(__file__).resolve().parents[2]
TRAIN, TEST = 400, 120
LEVELS = {"math": {1, 2, 3, 4}, "code": {1, 2, 3}, "ifeval": {1, 2, 3}, "chat": {1, 2, 3}, "stem": {1, 2, 3},
          "summary": {1, 2, 3}}
COMMON_EXTRA = {"split", "index", "difficulty", "reasoning", "response"}


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, list[dict]]]:
    return {name: {"train": gen(TRAIN, "train", 0), "test": gen(TEST, "test", 0)} for name, gen in DOMAINS.items()}


def _prompt(row: dict) -> str:
    return row["prompt"][0]["content"]


def _digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_same_arguments_give_identical_rows(domain: str, generated: dict) -> None:
    again = DOMAINS[domain](TRAIN, "train", 0)
    assert again == generated[domain]["train"]
    assert DOMAINS[domain](TRAIN, "train", 1) != again  # the seed matters
    # rows are drawn in order: a shorter request is a prefix of a longer one
    assert DOMAINS[domain](50, "train", 0) == again[:50]


def test_rows_are_identical_in_another_process(generated: dict) -> None:
    """No reliance on the per-process salted hash(): a child with another PYTHONHASHSEED agrees."""
    code = (
        "import hashlib, json, sys\n"
        "from mixrl.data.synthetic import DOMAINS\n"
        f"out = {{n: hashlib.sha256(json.dumps(g({TRAIN}, 'train', 0), sort_keys=True).encode()).hexdigest() "
        "for n, g in DOMAINS.items()}\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                           check=True, timeout=60)
    expected = {name: _digest(splits["train"]) for name, splits in generated.items()}
    assert json.loads(child.stdout) == expected


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_train_and_test_prompts_are_disjoint(domain: str, generated: dict) -> None:
    train = {_prompt(r) for r in generated[domain]["train"]}
    test = [_prompt(r) for r in generated[domain]["test"]]
    assert len(test) == TEST
    assert not train.intersection(test)
    # the partition is a property of the prompt, not of the seed: other seeds' train sets stay clear too
    other_train = {_prompt(r) for r in DOMAINS[domain](TRAIN, "train", 7)}
    assert not other_train.intersection(test)


def test_code_test_split_holds_unseen_parameters_of_every_trained_task() -> None:
    """A task with parameters is split on its statement (prompt minus its example): test states parameters train
    never states. A task without parameters (one statement ever) is split on the prompt, so no task is test-only,
    and every family is as frequent in test as in train. Both fail on the old split by statement with the family
    redrawn: `total` was test-only and 30% of level-1 test rows, `multiply_all` 28% against 4% in train."""
    from mixrl.data.code_problems import FAMILIES, generate_code, parameterised_tasks

    train, test = generate_code(1500, "train", 0), generate_code(600, "test", 0)

    def statement(row: dict) -> str:
        return _prompt(row).split("\nExample:")[0]

    def name(row: dict) -> str:
        return row["extra_info"]["fn_name"]

    params = parameterised_tasks()
    assert {"count_char", "repeat_join", "fizzbuzz"} <= params and not {"total", "is_prime"} & params
    assert not {statement(r) for r in train if name(r) in params} & {statement(r) for r in test if name(r) in params}
    assert {name(r) for r in test if name(r) not in params} <= {name(r) for r in train}
    assert {name(r) for r in train if name(r) not in params} <= {name(r) for r in test}

    family_of = {}  # fn_name -> its family, from each family's own draws
    for level, families in FAMILIES.items():
        for family in families:
            rng = random.Random(family.__name__)
            family_of.update({family(rng).fn_name: family.__name__ for _ in range(200)})
    for level in LEVELS["code"]:
        shares = []
        for rows in (train, test):
            counts = collections.Counter(family_of[name(r)] for r in rows if r["extra_info"]["difficulty"] == level)
            shares.append({f: n / sum(counts.values()) for f, n in counts.items()})
        for family in shares[0]:  # 200 test rows a level: a share's sampling error is about 0.03
            assert abs(shares[1].get(family, 0) - shares[0][family]) < 0.1, (level, family, shares)


def test_split_partition_is_what_keeps_splits_apart() -> None:
    """The guard works: a sample of the wrong part is never accepted, so disjointness cannot be luck."""
    from mixrl.data.rows import Sample, generate_rows, split_of

    keys = [f"q{i}" for i in range(50)]
    parts = {k: split_of(k) for k in keys}
    assert set(parts.values()) == {"train", "test"}  # both parts are reachable
    sample = lambda rng, d: Sample(prompt=rng.choice(keys), difficulty=d, reasoning="", response="", ground_truth="")
    test_rows = generate_rows("toy", "toy", "rule", sample, (1,), 30, "test", 0)
    assert all(parts[r["prompt"][0]["content"]] == "test" for r in test_rows)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_row_fits_the_schema(domain: str, generated: dict) -> None:
    for split, rows in generated[domain].items():
        for i, row in enumerate(rows):
            assert row_problem(row) is None, (domain, split, i, row_problem(row))
            assert row["data_source"] == f"mixrl/synthetic_{domain}"
            assert row["ability"] == domain
            assert row["prompt"][0]["role"] == "user" and _prompt(row).strip()
            assert row["reward_model"]["style"] == ("model" if domain == "chat" else "rule")
            extra = row["extra_info"]
            assert extra["split"] == split and extra["index"] == i
            assert isinstance(extra["difficulty"], int) and extra["difficulty"] >= 1
            assert isinstance(extra["response"], str) and extra["response"].strip()
            assert isinstance(extra["reasoning"], str)
            if domain != "chat":
                assert extra["reasoning"].strip()
        # parquet stores extra_info as one struct: the same keys on every row of a domain
        keys = {frozenset(r["extra_info"]) for r in rows}
        assert len(keys) == 1 and COMMON_EXTRA <= next(iter(keys))


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_difficulty_is_spread_over_the_levels(domain: str, generated: dict) -> None:
    counts = collections.Counter(r["extra_info"]["difficulty"] for r in generated[domain]["train"])
    assert set(counts) == LEVELS[domain]
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_prompts_within_a_split_are_unique(domain: str, generated: dict) -> None:
    for rows in generated[domain].values():
        assert len({_prompt(r) for r in rows}) == len(rows)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        DOMAINS["math"](3, "validation", 0)
    with pytest.raises(ValueError, match="num_rows"):
        DOMAINS["math"](-1, "train", 0)
    assert DOMAINS["chat"](0, "test", 0) == []


def test_generate_datasets_writes_every_split_and_format(tmp_path: Path, generated: dict) -> None:
    paths = generate_datasets(tmp_path, TRAIN, TEST, seed=0)
    assert sorted(paths) == sorted(DOMAINS)
    for domain, files in paths.items():
        assert sorted(files) == ["test_jsonl", "test_parquet", "train_jsonl", "train_parquet"]
        for split in ("train", "test"):
            assert files[f"{split}_parquet"] == tmp_path / domain / f"{split}.parquet"
            assert load_rows(files[f"{split}_parquet"]) == generated[domain][split]
            assert load_rows(files[f"{split}_jsonl"]) == generated[domain][split]
            text = files[f"{split}_jsonl"].read_text(encoding="utf-8")
            assert len(text.splitlines()) == len(generated[domain][split])


def test_generate_datasets_subset_and_unknown_domain(tmp_path: Path) -> None:
    paths = generate_datasets(tmp_path, 8, 4, seed=3, domains=["math"])
    assert list(paths) == ["math"] and not (tmp_path / "code").exists()
    valid = r"valid: \['chat', 'code', 'ifeval', 'math', 'stem', 'summary'\]"
    with pytest.raises(ValueError, match=r"unknown domain\(s\) \['poetry'\]; " + valid):
        generate_datasets(tmp_path, 8, 4, domains=["math", "poetry"])


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["--out", str(tmp_path), "--train-rows", "6", "--test-rows", "3", "--domains", "code", "chat"])
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed) == ["chat", "code"]
    assert len(load_rows(tmp_path / "chat" / "test.parquet")) == 3


def test_rng_streams_differ_per_domain_and_split() -> None:
    draws = {(d, s): rows_mod.rng_stream(d, s, 0).random() for d in DOMAINS for s in ("train", "test")}
    assert len(set(draws.values())) == len(draws)


def test_verbose_trace_checks_every_step_and_keeps_the_answer(generated: dict) -> None:
    """The long-winded traces of bench/length_penalty.py's verbose start: every row's trace parses back into its steps,
    each check line (the inverse operation) is true arithmetic, the trace ends on the row's answer, and it is about
    three times as long. A line that is not "a op b = c" is refused, naming it."""
    from mixrl.data.math_problems import INVERSE, apply, parse_trace, verbose_trace

    for row in generated["math"]["train"][:400]:
        steps = parse_trace(row["extra_info"]["reasoning"])
        assert steps and all(apply(a, op, b) == c for a, op, b, c in steps)
        text = verbose_trace(steps)
        lines = text.splitlines()
        assert len(lines) == 3 * len(steps)
        for (a, op, b, c), check in zip(steps, lines[1::3]):
            assert check == f"Check: {c} {INVERSE[op]} {b} = {a}" and apply(c, INVERSE[op], b) == a
        assert lines[-1].endswith(f"= {row['reward_model']['ground_truth']}")
        assert len(text) >= 2.5 * len(row["extra_info"]["reasoning"])
    with pytest.raises(ValueError, match="not a trace line.*'so 7 is the answer'"):
        parse_trace("3 + 4 = 7\nso 7 is the answer")
