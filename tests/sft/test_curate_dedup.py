"""Query decontamination on planted near-duplicates of test questions: MinHash LSH catches light rewordings, the
semantic pass (embeddings of the shipped model) catches a rewording with other words and the same numbers, and
neither drops a question with other numbers or another problem."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.config import ConfigError
from sft.config import CurateConfig, DedupConfig
from sft.curate import check_curate_paths, check_curate_settings, decontaminate, protected_test_files
from sft.dedup import embed_texts, minhash_duplicates, semantic_duplicates

MODEL = str(Path(__file__).resolve().parents[2] / "mixrl/assets/base_tiny")
TESTS = ["Tom has 12 apples. He buys 5 more bags with 3 apples each. How many apples does Tom have now?",
         "Compute 93 + 76.",
         "Write a function that returns the reverse of a list."]
LIGHT_REWORDING = "Tom has 12 apples. He buys 5 more bags with 3 apples each. How many apples does Tom have?"
OTHER_WORDS = "Calculate 93 + 76."  # shares one word trigram of three with "Compute 93 + 76."
OTHER_NUMBERS = "Compute 93 + 77."
OTHER_PROBLEM = "Sara reads 14 pages a day for 6 days. How many pages does she read?"


def _row(question: str) -> dict:
    return {"data_source": "mixrl/synthetic_math", "prompt": [{"role": "user", "content": question}],
            "ability": "math", "reward_model": {"ground_truth": "0"}}


def test_minhash_catches_the_light_rewording_only():
    found = minhash_duplicates([OTHER_PROBLEM, LIGHT_REWORDING, OTHER_WORDS, OTHER_NUMBERS], TESTS,
                               ngram_words=3, threshold=0.7)
    assert [(d.query_index, d.test_index, d.method) for d in found] == [(1, 0, "minhash")]
    assert 0.7 <= found[0].similarity < 1.0


def test_semantic_pass_catches_other_words_with_the_same_numbers():
    queries = [OTHER_PROBLEM, OTHER_WORDS, OTHER_NUMBERS]
    vecs = embed_texts(MODEL, queries + TESTS)
    found = semantic_duplicates(queries, TESTS, vecs[:3], vecs[3:], threshold=0.9)
    assert [(d.query_index, d.test_index) for d in found] == [(1, 1)]
    # the number guard is what spares "93 + 77": the tiny model's embeddings barely see numbers
    unguarded = semantic_duplicates(queries, TESTS, vecs[:3], vecs[3:], threshold=0.9, require_same_numbers=False)
    assert {d.query_index for d in unguarded} == {1, 2}


def test_decontaminate_removes_the_planted_near_duplicates_and_keeps_the_rest():
    rows = [_row(q) for q in (OTHER_PROBLEM, LIGHT_REWORDING, OTHER_NUMBERS, OTHER_WORDS)]
    cfg = replace(CurateConfig(), dedup=replace(DedupConfig(), embedding_model_path=MODEL))
    kept, found = decontaminate(cfg, rows, TESTS)
    assert [r["prompt"][0]["content"] for r in kept] == [OTHER_PROBLEM, OTHER_NUMBERS]
    assert [(d.query_index, d.method) for d in found] == [(1, "minhash"), (3, "semantic")]
    without_semantic = replace(cfg, dedup=replace(cfg.dedup, embedding_model_path=""))
    assert len(decontaminate(without_semantic, rows, TESTS)[0]) == 3


def test_bad_recipe_values_name_their_key(tmp_path):
    cases = {"filters.disabled": dict(filters=replace(CurateConfig().filters, disabled=["garbeld"])),
             "filters.language": dict(filters=replace(CurateConfig().filters, language="english")),
             "dedup.cosine_threshold": dict(dedup=replace(DedupConfig(), cosine_threshold=1.5)),
             "sampling.max_response_tokens": dict(max_model_len=128)}
    for key, change in cases.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_curate_settings(replace(CurateConfig(), **change))
    queries = tmp_path / "q.jsonl"
    queries.write_text("")
    base = replace(CurateConfig(), teacher_model_path=MODEL, queries_path=str(queries),
                   dedup=replace(DedupConfig(), embedding_model_path=MODEL, test_paths=[str(tmp_path / "*/test.parquet")]))
    with pytest.raises(ConfigError, match=r"dedup\.test_paths: .*matches no file"):
        check_curate_paths(base)
    with pytest.raises(ConfigError, match=r"teacher_model_path: .*no config\.json"):
        check_curate_paths(replace(base, teacher_model_path=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"queries_path: .*missing\.parquet does not exist"):
        check_curate_paths(replace(base, queries_path=str(tmp_path / "missing.parquet")))
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "test.parquet").write_bytes(b"")
    assert protected_test_files(base) == [tmp_path / "math" / "test.parquet"]
