"""`mixrl curate` end to end: the shipped tiny model as teacher through the real vLLM engine on a handful of
synthetic math queries, one of them a planted near-duplicate of a test question; and bad recipes refused before
any engine starts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.data import load_rows
from mixrl.cli import main
from mixrl.data.math_problems import generate_math
from mixrl.data.synthetic import write_jsonl
from sft.config import CurateConfig, DedupConfig
from sft.curate import run_curate
from sft.finetune import check_sft_rows

MODEL = str(Path(__file__).resolve().parents[2] / "mixrl/assets/base_tiny")


def _with_question(row: dict, question: str) -> dict:
    return {**row, "prompt": [{"role": "user", "content": question}]}


def test_a_bad_key_or_value_is_refused_before_any_engine_starts(tmp_path, capsys):
    recipe = tmp_path / "curate_bad.yaml"
    recipe.write_text("dedup:\n  cosine_treshold: 0.9\n")
    assert main(["curate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "dedup.cosine_treshold" in err and "dedup.cosine_threshold" in err
    recipe.write_text(f"filters:\n  disabled: [garbeld]\nteacher_model_path: {MODEL}\n")
    assert main(["curate", str(recipe)]) == 2
    assert "filters.disabled: unknown filter(s) ['garbeld']" in capsys.readouterr().err
    recipe.write_text(f"teacher_model_path: {tmp_path}\nqueries_path: {tmp_path / 'q.jsonl'}\n")
    assert main(["curate", str(recipe)]) == 2
    assert f"teacher_model_path: '{tmp_path}' is not a Hugging Face model folder" in capsys.readouterr().err


@pytest.mark.vllm
def test_curation_through_vllm_keeps_the_shortest_correct_candidate_and_drops_the_planted_duplicate(tmp_path):
    tests = [r for r in generate_math(40, "test", 0) if r["extra_info"]["difficulty"] == 1][:5]
    queries = [r for r in generate_math(24, "train", 0) if r["extra_info"]["difficulty"] in (1, 2)][:6]
    planted = _with_question(tests[0], "Please " + tests[0]["prompt"][0]["content"])  # a near-duplicate of a test question
    queries.insert(2, planted)
    write_jsonl(queries, tmp_path / "queries.jsonl")
    (tmp_path / "math").mkdir()
    write_jsonl(tests, tmp_path / "math" / "test.jsonl")
    cfg = replace(CurateConfig(), run_dir=str(tmp_path / "run"), teacher_model_path=MODEL, max_model_len=256,
                  queries_path=str(tmp_path / "queries.jsonl"),
                  sampling=replace(CurateConfig().sampling, samples_per_prompt=8, max_response_tokens=64),
                  dedup=replace(DedupConfig(), test_paths=[str(tmp_path / "*" / "test.jsonl")], embedding_model_path=MODEL))

    report = run_curate(cfg)

    run = Path(cfg.run_dir)
    duplicates = [json.loads(line) for line in (run / "duplicates.jsonl").read_text().splitlines()]
    assert planted["prompt"][0]["content"] in {d["query"] for d in duplicates}
    assert report["duplicates_removed"]["total"] == len(duplicates) >= 1
    candidates = [json.loads(line) for line in (run / "candidates.jsonl").read_text().splitlines()]
    assert planted["prompt"][0]["content"] not in {c["query"] for c in candidates}
    assert report["queries_sampled"] == 7 - len(duplicates) and report["candidates"] == 8 * report["queries_sampled"] == len(candidates)
    assert report["stages"][-1]["remaining"] == report["correct_candidates"] == sum(c["verdict"] == "correct" for c in candidates)
    assert sum(s["dropped"] for s in report["stages"]) == report["candidates"] - report["correct_candidates"]
    # the kept candidate of each query is its shortest correct one
    assert report["kept"] >= 1, "the shipped teacher answers some level-1/2 arithmetic correctly within 8 samples"
    for query in {c["query"] for c in candidates}:
        group = [c for c in candidates if c["query"] == query]
        correct = [c for c in group if c["verdict"] == "correct"]
        kept = [c for c in group if c["kept"]]
        assert len(kept) == (1 if correct else 0)
        if correct:
            assert kept[0]["tokens"] == min(c["tokens"] for c in correct)
    rows = load_rows(run / "sft.parquet")
    assert len(rows) == report["kept"]
    check_sft_rows(rows, str(run / "sft.parquet"), "think")  # what `mixrl sft` requires of its rows
    assert report["mean_tokens"]["kept"] <= report["mean_tokens"]["correct_per_query"]
