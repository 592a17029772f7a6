"""The STEM multiple-choice and summarisation domains (issue 17): content checked independently of the generators,
and the recipes that train on them. (Determinism, split disjointness, schema and the difficulty spread are the
every-domain tests of tests/mixrl/test_data.py; scoring through the router is tests/rewards/test_critique_and_domains.py.)
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from mixrl.data.stem_problems import generate_stem
from mixrl.data.summary_tasks import generate_summary

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
OPTION = re.compile(r"^([A-E])\) (.+)$")


@pytest.fixture(scope="module")
def stem_rows():
    return generate_stem(300, "train", 0) + generate_stem(60, "test", 0)


@pytest.fixture(scope="module")
def summary_rows():
    return generate_summary(300, "train", 0) + generate_summary(60, "test", 0)


def test_stem_options_and_answers(stem_rows):
    """4 options at levels 1-2 and 5 at level 3, lettered in order, distinct; the letter's option is the trace's
    last result with its unit (read from the prompt and the trace, not from the generator's values)."""
    letters = collections.Counter()
    for row in stem_rows:
        prompt = row["prompt"][0]["content"]
        options = [OPTION.match(line).groups() for line in prompt.split("\n") if OPTION.match(line)]
        k = {1: 4, 2: 4, 3: 5}[row["extra_info"]["difficulty"]]
        assert [letter for letter, _ in options] == list("ABCDE"[:k]) == list("ABCDE"[:row["extra_info"]["num_options"]])
        assert len({text for _, text in options}) == k
        gt = row["reward_model"]["ground_truth"]
        letters[gt] += 1
        trace = row["extra_info"]["reasoning"].split("\n")
        steps = [line for line in trace if re.fullmatch(r"\d+ [-+*/] \d+ = \d+", line)]
        chosen = dict(options)[gt]
        if steps:  # a computed question: the chosen option's number is the last step's result
            assert chosen.split()[0] == steps[-1].split(" = ")[1]
        assert trace[-1] == f"{chosen} is option {gt}."
        assert row["extra_info"]["response"] == f"The answer is \\boxed{{{gt}}}."
        assert prompt.endswith("Answer with the letter of the correct option.")
    assert set(letters) == set("ABCDE") and min(letters[c] for c in "ABCD") > len(stem_rows) / 10  # no letter bias


def test_stem_questions_have_the_facts_the_answer_needs(stem_rows):
    """Every number a trace step uses comes from the question or an earlier step (or a formula's constant: the 2
    of m·v²/2, the seconds in a minute)."""
    for row in stem_rows:
        question = row["prompt"][0]["content"].split("\nA) ")[0]
        known = {int(x) for x in re.findall(r"\d+", question)} | {2, 60}
        for line in row["extra_info"]["reasoning"].split("\n"):
            m = re.fullmatch(r"(\d+) [-+*/] (\d+) = (\d+)", line)
            if m:
                assert {int(m[1]), int(m[2])} <= known, (line, question)
                known.add(int(m[3]))


def test_summaries_are_one_sentence_made_of_the_text(summary_rows):
    """One sentence, no line break; its names, numbers and times all occur in the text summarised; at level 3
    the superseded proposal is left out."""
    kinds = collections.Counter()
    for row in summary_rows:
        text = row["prompt"][0]["content"].split("\n\n", 1)[1]
        summary = row["reward_model"]["ground_truth"]
        kinds[row["extra_info"]["kind"]] += 1
        assert summary == row["extra_info"]["response"] and "\n" not in summary and summary.endswith(".")
        assert summary.count(". ") == 0
        _, rest = summary.split(" ", 1)  # the sentence's first word is capitalised whatever it is
        for token in re.findall(r"\$?\d+(?:\.\d+)?|[A-Z][a-z]+|\d+ [ap]m|noon", rest):
            assert token in text, (token, summary, text)
        if row["extra_info"]["kind"] == "group":
            superseded = re.search(r"How about (.+?) at", text).group(1)
            assert superseded not in summary
    assert set(kinds) == {"delivery", "payment", "reminder", "flight", "thread", "group"}


@pytest.mark.parametrize("name, sources", [
    ("grpo_stem_tiny.yaml", {"stem"}), ("grpo_summary_tiny.yaml", {"summary"}),
    ("grpo_mixed_tiny.yaml", {"math", "ifeval", "stem", "summary"}),
])
def test_recipes_load_and_route_their_sources(name, sources):
    from core.config import load_config
    from rewards.config import reward_config_from_dict
    from rl.config import GRPOConfig

    cfg = load_config(GRPOConfig, RECIPES / name)
    assert {s.name for s in cfg.sources} == sources
    assert sum(s.proportion for s in cfg.sources) == pytest.approx(1.0)
    rewards = reward_config_from_dict(cfg.rewards)
    for s in cfg.sources:
        assert rewards.resolve(f"mixrl/synthetic_{s.name}") == ("math" if s.name == "math" else s.name)
        assert Path(s.path).parent.name == s.name  # the quickstart data it trains on (generated on demand)
    if name == "grpo_stem_tiny.yaml":
        assert rewards.domains["stem"].critique.mode == "multiply"


def test_quickstart_generates_the_new_domains_without_many_rows():
    from core.sections import SyntheticDataConfig

    rows = SyntheticDataConfig().train_rows
    assert {"stem", "summary"} <= set(rows) and rows["stem"] <= 500 and rows["summary"] <= 500
