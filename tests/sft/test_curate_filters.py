"""The candidate filters of long-CoT curation on planted responses (real strings, token ids from the shipped
tokenizer): each planted bad candidate is dropped by its own filter, with the right reason, and the shortest
correct candidate of a group is the one kept."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import sft.curation_filters
import sft.dedup
from sft.config import CurateConfig, CurationFilterConfig
from sft.curate import curated_row, curation_report, format_report, judge_group
from sft.curation_filters import Candidate, first_failure, token_loop
from sft.dedup import Duplicate
from sft.finetune import check_sft_rows, render_row

TEACHER = str(Path(__file__).resolve().parents[2] / "mixrl/assets/base_tiny")
ROW = {"data_source": "mixrl/synthetic_math", "prompt": [{"role": "user", "content": "Calculate 3 * 6 - 4."}],
       "ability": "math", "reward_model": {"style": "rule", "ground_truth": "14"},
       "extra_info": {"split": "train", "index": 0, "difficulty": 2, "reasoning": "3 * 6 = 18\n18 - 4 = 14",
                      "response": "The answer is \\boxed{14}."}}
ANSWER = "\n</think>\n\nThe answer is \\boxed{14}."


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TEACHER)


def make(tokenizer, text: str, finish_reason: str = "stop") -> Candidate:
    return Candidate(text, tuple(tokenizer.encode(text, add_special_tokens=False)), finish_reason)


GOOD = "<think>\n3 * 6 = 18\n18 - 4 = 14" + ANSWER
# planted bad candidates: each carries the right final answer, so only its own filter can reject it
PLANTED = {
    "truncated": ("incomplete", "truncated", "<think>\n3 * 6 = 18\n18 - 4 = 14" + ANSWER, "length"),
    "no_closed_think": ("incomplete", "no_closed_think", "<think>\n3 * 6 = 18\n18 - 4 = 14\nThe answer is \\boxed{14}.", "stop"),
    "no_final_answer": ("incomplete", "no_final_answer", "<think>\n3 * 6 = 18\n18 - 4 = 14\n</think>\n\nThe answer is 14.", "stop"),
    "invalid_utf8": ("garbled", "invalid_utf8", "<think>\n3 * 6 = 18\n18 - 4 = \ufffd14" + ANSWER, "stop"),
    "control_chars": ("garbled", "control_chars", "<think>\n3 * 6 = 18\x07\n18 - 4 = 14" + ANSWER, "stop"),
    "token_loop": ("garbled", "token_loop", "<think>\n3 * 6 = 18\n" + "!" * 24 + "\n18 - 4 = 14" + ANSWER, "stop"),
    "mixed_language": ("mixed_language", "mixed_language:en+fr",
                       "<think>\nFirst multiply three by six, which gives eighteen in total.\n3 * 6 = 18\n"
                       "Ensuite on soustrait quatre de dix-huit, et il reste quatorze.\n18 - 4 = 14" + ANSWER, "stop"),
    "repetitive": ("repetitive", "ngram_repetition",
                   "<think>\n3 * 6 = 18\n18 - 4 = 14\n" + "Wait, let me check the subtraction once more. " * 8 + ANSWER,
                   "stop"),
}


def test_doctests():
    assert doctest.testmod(sft.curation_filters).failed == 0
    assert doctest.testmod(sft.dedup).failed == 0


def test_a_clean_correct_response_passes_every_filter(tokenizer):
    assert first_failure(make(tokenizer, GOOD), CurationFilterConfig()) is None


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_each_planted_bad_candidate_is_dropped_by_its_own_filter(tokenizer, name):
    stage, reason, text, finish = PLANTED[name]
    assert first_failure(make(tokenizer, text, finish), CurationFilterConfig()) == (stage, reason)


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_with_its_filter_disabled_the_planted_candidate_passes(tokenizer, name):
    """The planted candidate is bad in one way only: the other filters do not catch it (so the test above
    fails when that filter is missing)."""
    stage, _, text, finish = PLANTED[name]
    assert first_failure(make(tokenizer, text, finish), CurationFilterConfig(disabled=[stage])) is None


def test_the_token_loop_is_found_in_token_ids_not_characters(tokenizer):
    ids = make(tokenizer, PLANTED["token_loop"][2]).response_ids
    assert token_loop(ids, max_period=8, min_repeats=8) is not None
    # a reasoning trace of distinct steps has no loop, and a short repeat stays under min_repeats
    assert token_loop(make(tokenizer, GOOD).response_ids, 8, 8) is None
    assert token_loop(make(tokenizer, "<think>\nhmm hmm hmm\n" + ANSWER).response_ids, 8, 8) is None


def test_a_response_in_one_other_language_fails_with_language_en_and_passes_with_agreement_only(tokenizer):
    text = ("<think>\nOn multiplie trois par six, ce qui donne dix-huit au total.\n3 * 6 = 18\n"
            "Ensuite on soustrait quatre de dix-huit, et il reste quatorze.\n18 - 4 = 14" + ANSWER)
    assert first_failure(make(tokenizer, text), CurationFilterConfig(language="en")) == ("mixed_language", "mixed_language:fr")
    assert first_failure(make(tokenizer, text), CurationFilterConfig(language="")) is None
    mixed = PLANTED["mixed_language"][2]
    assert first_failure(make(tokenizer, mixed), CurationFilterConfig(language="")) == ("mixed_language", "mixed_language:en+fr")


def test_the_shortest_correct_candidate_is_kept(tokenizer):
    longer = "<think>\n3 * 6 = 18\nso the product is 18\n18 - 4 = 14" + ANSWER
    wrong_but_shortest = "<think>\n3 * 6 = 18\n18 - 4 = 4\n</think>\n\nThe answer is \\boxed{4}."
    group = [make(tokenizer, longer), make(tokenizer, wrong_but_shortest), make(tokenizer, PLANTED["repetitive"][2]),
             make(tokenizer, GOOD), make(tokenizer, GOOD)]
    assert group[1].num_tokens < group[3].num_tokens < group[0].num_tokens
    verdict = judge_group(ROW, group, CurateConfig())
    assert verdict.verdicts == [None, ("answer", "incorrect"), ("repetitive", "ngram_repetition"), None, None]
    assert verdict.chosen == 3  # the shortest correct one; the earlier of two equal ones


def test_no_correct_candidate_keeps_nothing(tokenizer):
    wrong = make(tokenizer, "<think>\n3 * 6 = 18\n18 - 4 = 4\n</think>\n\nThe answer is \\boxed{4}.")
    assert judge_group(ROW, [wrong, wrong], CurateConfig()).chosen is None


def test_the_kept_candidate_becomes_a_row_mixrl_sft_renders(tokenizer):
    row = curated_row(ROW, make(tokenizer, GOOD), teacher="t", correct=2, candidates=8)
    assert row["extra_info"]["reasoning"] == "3 * 6 = 18\n18 - 4 = 14"
    assert row["extra_info"]["response"] == "The answer is \\boxed{14}."
    assert row["extra_info"]["curation"]["correct_candidates"] == 2 and row["prompt"] == ROW["prompt"]
    check_sft_rows([row], "curated", "think")
    (chat,) = render_row(row, "think")
    assert chat[-1]["content"].startswith("<think>\n3 * 6 = 18") and chat[-1]["content"].endswith("\\boxed{14}.")


def test_the_report_counts_each_candidate_once_and_compares_lengths(tokenizer):
    good, longer = make(tokenizer, GOOD), make(tokenizer, "<think>\n3 * 6 = 18\nso the product is 18\n18 - 4 = 14" + ANSWER)
    truncated = make(tokenizer, PLANTED["truncated"][2], "length")
    # garbled and no closed think: charged to incomplete (first in order), counted by both as firing alone
    both = make(tokenizer, "<think>\n3 * 6 = 18\x1e\nThe answer is \\boxed{14}.")
    wrong = make(tokenizer, "<think>\n3 * 6 = 18\n18 - 4 = 4\n</think>\n\nThe answer is \\boxed{4}.")
    groups = [[truncated, both, good, longer], [wrong, wrong]]
    judged = [judge_group(ROW, g, CurateConfig()) for g in groups]
    report = curation_report(groups, judged, queries=3, duplicates=[Duplicate(2, 0, "minhash", 0.8)], skipped_long_prompts=0)
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["incomplete"]["dropped"] == 2 and stages["incomplete"]["fires_alone"] == 2
    assert stages["incomplete"]["reasons"] == {"no_closed_think": 1, "truncated": 1}
    assert stages["garbled"]["dropped"] == 0 and stages["garbled"]["fires_alone"] == 1
    assert stages["answer"] == {"stage": "answer", "dropped": 2, "remaining": 2, "reasons": {"incorrect": 2}}
    assert (report["candidates"], report["correct_candidates"], report["kept"]) == (6, 2, 1)
    assert report["duplicates_removed"] == {"total": 1, "minhash": 1, "semantic": 0}
    tokens = [c.num_tokens for g in groups for c in g]
    assert report["mean_tokens"] == {"all_candidates": round(sum(tokens) / 6, 2),
                                     "all_correct": round((good.num_tokens + longer.num_tokens) / 2, 2),
                                     "correct_per_query": round((good.num_tokens + longer.num_tokens) / 2, 2),
                                     "kept": good.num_tokens}
    assert "kept 1 rows" in format_report(report)
