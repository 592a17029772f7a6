"""Domain content: math traces are right, code tests pass, IFEval responses comply, chat pairs differ.

The checks here are written independently of the generators (the IFEval ones follow lm-eval's
check_following directly), so a generator bug shows up as a failure instead of agreeing with itself.

Run: .venv/bin/pytest tests/sft/test_data_domains.py
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any, Callable

import pytest

from mixrl.data.chat_prompts import REJECTED_KINDS, chat_preference_pairs, generate_chat, hard_negatives
from mixrl.data.code_problems import FAMILIES, generate_code
from mixrl.data.ifeval_prompts import SUPPORTED, describe, follows_instruction, generate_ifeval
from mixrl.data.math_problems import generate_math

N = 400


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    return generate_math(N, "train", 0) + generate_math(N // 4, "test", 0)


@pytest.fixture(scope="module")
def code_rows() -> list[dict]:
    return generate_code(N, "train", 0) + generate_code(N // 4, "test", 0)


@pytest.fixture(scope="module")
def ifeval_rows() -> list[dict]:
    return generate_ifeval(3 * N, "train", 0) + generate_ifeval(N // 2, "test", 0)


@pytest.fixture(scope="module")
def chat_rows() -> list[dict]:
    return generate_chat(N, "train", 0) + generate_chat(N // 4, "test", 0)


# ---- math ---------------------------------------------------------------------------------------------

TRACE_LINE = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


def check_math_row(row: dict) -> None:
    """Every trace line is true arithmetic, uses only numbers from the question or earlier lines, and the
    last result is the ground truth and the boxed answer."""
    question = row["prompt"][0]["content"]
    given = {int(x) for x in re.findall(r"\d+", question)}
    known: set[int] = set()
    result = None
    for line in row["extra_info"]["reasoning"].split("\n"):
        m = TRACE_LINE.match(line)
        assert m, f"not an 'a op b = c' line: {line!r}"
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        assert expected == c, f"wrong step {line!r} in {question!r}"
        assert {a, b} <= given | known, f"{line!r} uses a number from nowhere in {question!r}"
        known.add(c)
        result = c
    truth = row["reward_model"]["ground_truth"]
    assert str(result) == truth
    assert row["extra_info"]["response"] == f"The answer is \\boxed{{{truth}}}."


def test_math_traces_are_correct(math_rows: list) -> None:
    for row in math_rows:
        check_math_row(row)


def test_math_checker_catches_a_wrong_step(math_rows: list) -> None:
    row = json.loads(json.dumps(math_rows[1]))  # difficulty 2: two lines
    lines = row["extra_info"]["reasoning"].split("\n")
    a, rest = lines[0].split(" = ")
    lines[0] = f"{a} = {int(rest) + 1}"
    row["extra_info"]["reasoning"] = "\n".join(lines)
    with pytest.raises(AssertionError, match="wrong step"):
        check_math_row(row)


def test_math_expressions_evaluate_to_the_ground_truth(math_rows: list) -> None:
    """Levels 1, 2 and the expression part of 4: Python's own precedence agrees with the trace."""
    checked = 0
    for row in math_rows:
        q = row["prompt"][0]["content"]
        m = re.fullmatch(r"(?:What is|Compute|Calculate) ([\d+\-*/() ]+)[?.]", q)
        if m:
            assert eval(m[1]) == int(row["reward_model"]["ground_truth"]), q  # our own arithmetic text
            checked += 1
    assert checked > len(math_rows) // 2


def test_math_levels_have_their_shape(math_rows: list) -> None:
    steps = collections.defaultdict(set)
    for row in math_rows:
        level = row["extra_info"]["difficulty"]
        steps[level].add(row["extra_info"]["num_steps"])
        assert len(row["extra_info"]["reasoning"].split("\n")) == row["extra_info"]["num_steps"]
        assert 0 <= int(row["reward_model"]["ground_truth"]) < 1000
        if level == 3:  # word problems
            question = row["prompt"][0]["content"]
            assert question.endswith("?") and "How many" in question, question
        if level == 4:
            ops = {line.split(" ")[1] for line in row["extra_info"]["reasoning"].split("\n")}
            assert ops & {"*", "/"}
    assert dict(steps) == {1: {1}, 2: {2}, 3: {2}, 4: {3, 4}}
    assert any(" / " in r["extra_info"]["reasoning"] for r in math_rows if r["extra_info"]["difficulty"] == 4)


# ---- code ---------------------------------------------------------------------------------------------


def _solution(row: dict) -> str:
    response = row["extra_info"]["response"]
    assert response.startswith("```python\n") and response.endswith("\n```")
    return response[len("```python\n"):-len("\n```")]


def _run_cases(code: str, ground_truth: str) -> list[bool]:
    """Call the function like verl's prime_code does: one JSON argument per input line."""
    tests = json.loads(ground_truth)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    fn = namespace[tests["fn_name"]]
    results = []
    for inputs, output in zip(tests["inputs"], tests["outputs"], strict=True):
        args = [json.loads(line) for line in inputs.split("\n")]
        try:
            results.append(fn(*args) == json.loads(output))
        except Exception:
            results.append(False)
    return results


def test_code_reference_solutions_pass_their_tests(code_rows: list) -> None:
    for row in code_rows:
        tests = json.loads(row["reward_model"]["ground_truth"])
        assert tests["fn_name"] == row["extra_info"]["fn_name"]
        assert f"`{tests['fn_name']}(" in row["prompt"][0]["content"]
        assert len(tests["inputs"]) == len(tests["outputs"]) >= 3
        assert all(isinstance(x, str) for x in tests["inputs"] + tests["outputs"])
        assert all(_run_cases(_solution(row), row["reward_model"]["ground_truth"]))
        namespace: dict[str, Any] = {}
        exec(_solution(row), namespace)
        exec(row["extra_info"]["test_code"], namespace)  # the assert form passes too
        assert row["extra_info"]["test_code"].count("assert ") == len(tests["inputs"])


def test_code_tests_reject_wrong_solutions(code_rows: list) -> None:
    """Tests that a constant or an off-by-one answer passes would teach nothing."""
    for row in code_rows:
        tests = json.loads(row["reward_model"]["ground_truth"])
        fn = tests["fn_name"]
        first = json.loads(tests["outputs"][0])
        constant = f"def {fn}(*args):\n    return {first!r}"
        assert not all(_run_cases(constant, row["reward_model"]["ground_truth"])), row["prompt"]
    broken = code_rows[0]
    assert not all(_run_cases("def %s(*a):\n    return None" % broken["extra_info"]["fn_name"],
                              broken["reward_model"]["ground_truth"]))


def test_code_covers_at_least_twelve_families_and_three_levels(code_rows: list) -> None:
    assert sum(len(f) for f in FAMILIES.values()) >= 12
    names = {r["extra_info"]["fn_name"] for r in code_rows}
    assert len(names) >= 20
    assert {r["extra_info"]["difficulty"] for r in code_rows} == {1, 2, 3}


def test_code_rows_score_in_verl_prime_code(code_rows: list) -> None:
    """The ground truth drops into verl's own code reward (it runs each case in a subprocess)."""
    prime_code = pytest.importorskip("verl.utils.reward_score.prime_code")
    for level in (1, 2, 3):
        row = next(r for r in code_rows if r["extra_info"]["difficulty"] == level)
        ok, _ = prime_code.compute_score(row["extra_info"]["response"], row["reward_model"]["ground_truth"])
        assert ok is True, row["prompt"]
    wrong = "```python\ndef %s(*a):\n    return None\n```" % row["extra_info"]["fn_name"]
    score, _ = prime_code.compute_score(wrong, row["reward_model"]["ground_truth"], continuous=True)
    assert score == 0


# ---- instruction following ----------------------------------------------------------------------------

# lm-eval's get_instruction_args_keys() for each id (None: no arguments)
LM_EVAL_KWARGS = {
    "punctuation:no_comma": set(), "change_case:english_lowercase": set(), "change_case:english_capital": set(),
    "change_case:capital_word_frequency": {"capital_frequency", "capital_relation"},
    "length_constraints:number_words": {"num_words", "relation"},
    "length_constraints:number_sentences": {"num_sentences", "relation"},
    "length_constraints:number_paragraphs": {"num_paragraphs"},
    "detectable_format:number_bullet_lists": {"num_bullets"}, "detectable_format:title": set(),
    "detectable_format:json_format": set(),
    "detectable_format:multiple_sections": {"section_spliter", "num_sections"},
    "detectable_format:number_highlighted_sections": {"num_highlights"},
    "detectable_content:postscript": {"postscript_marker"},
    "detectable_content:number_placeholders": {"num_placeholders"},
    "keywords:existence": {"keywords"}, "keywords:forbidden_words": {"forbidden_words"},
    "keywords:frequency": {"keyword", "frequency", "relation"},
    "keywords:letter_frequency": {"letter", "let_frequency", "let_relation"},
    "startend:end_checker": {"end_phrase"}, "startend:quotation": set(),
    "combination:repeat_prompt": {"prompt_to_repeat"}, "combination:two_responses": set(),
}


def _count(n: int, relation: str, threshold: int) -> bool:
    return n < threshold if relation == "less than" else n >= threshold


def _json_ok(r: str) -> bool:
    body = r.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def _paragraphs_ok(r: str, n: int) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    if any(not p.strip() for p in parts[1:-1]):
        return False
    return len([p for p in parts if p.strip()]) == n


# Independent checks for the constraints that are easy to check exactly (lm-eval's logic, restated).
SIMPLE_CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "punctuation:no_comma": lambda r, k: "," not in r,
    "change_case:english_lowercase": lambda r, k: r == r.lower() and any(c.isalpha() for c in r),
    "change_case:english_capital": lambda r, k: r == r.upper() and any(c.isalpha() for c in r),
    "length_constraints:number_words": lambda r, k: _count(len(re.findall(r"\w+", r)), k["relation"], k["num_words"]),
    "length_constraints:number_paragraphs": lambda r, k: _paragraphs_ok(r, k["num_paragraphs"]),
    "detectable_format:number_bullet_lists": lambda r, k: len(re.findall(r"^\s*\*[^\*].*$", r, re.M))
    + len(re.findall(r"^\s*-.*$", r, re.M)) == k["num_bullets"],
    "detectable_format:title": lambda r, k: re.search(r"<<[^\n]*\w[^\n]*>>", r) is not None,
    "detectable_format:json_format": lambda r, k: _json_ok(r),
    "detectable_format:multiple_sections": lambda r, k: len(re.findall(rf"{k['section_spliter']} \d+", r))
    >= k["num_sections"],
    "detectable_format:number_highlighted_sections": lambda r, k: len(re.findall(r"\*[^\n\*]*\w[^\n\*]*\*", r))
    >= k["num_highlights"],
    "detectable_content:postscript": lambda r, k: re.search(
        r"^\s*p\.\s?p\.\s?s" if k["postscript_marker"] == "P.P.S" else r"^\s*p\.\s?s\.", r.lower(), re.M) is not None,
    "detectable_content:number_placeholders": lambda r, k: len(re.findall(r"\[[^\]]*\]", r)) >= k["num_placeholders"],
    "keywords:existence": lambda r, k: all(w.lower() in r.lower() for w in k["keywords"]),
    "keywords:forbidden_words": lambda r, k: not any(re.search(rf"\b{w}\b", r, re.I) for w in k["forbidden_words"]),
    "keywords:frequency": lambda r, k: _count(r.lower().count(k["keyword"].lower()), k["relation"], k["frequency"]),
    "keywords:letter_frequency": lambda r, k: _count(r.lower().count(k["letter"]), k["let_relation"],
                                                     k["let_frequency"]),
    "startend:end_checker": lambda r, k: r.strip().strip('"').lower().endswith(k["end_phrase"].lower()),
    "startend:quotation": lambda r, k: len(r.strip()) > 1 and r.strip()[0] == r.strip()[-1] == '"',
    "combination:repeat_prompt": lambda r, k: r.strip().lower().startswith(k["prompt_to_repeat"].lower()),
    "combination:two_responses": lambda r, k: len([p for p in r.split("******") if p.strip()]) == 2
    and len({p.strip() for p in r.split("******") if p.strip()}) == 2,
}


def _constraints(row: dict) -> list[tuple[str, dict]]:
    gt = json.loads(row["reward_model"]["ground_truth"])
    assert sorted(gt) == ["instruction_id_list", "kwargs"]
    assert len(gt["instruction_id_list"]) == len(gt["kwargs"])
    return list(zip(gt["instruction_id_list"], gt["kwargs"]))


def test_ifeval_ground_truth_uses_lm_eval_ids_and_kwargs(ifeval_rows: list) -> None:
    for row in ifeval_rows:
        pairs = _constraints(row)
        assert len(pairs) == row["extra_info"]["difficulty"]
        assert len({i for i, _ in pairs}) == len(pairs)
        for instruction_id, kwargs in pairs:
            assert set(kwargs) == LM_EVAL_KWARGS[instruction_id], instruction_id
            assert describe(instruction_id, kwargs) in row["prompt"][0]["content"]
    used = {i for row in ifeval_rows for i, _ in _constraints(row)}
    assert used == set(SUPPORTED) == set(LM_EVAL_KWARGS)


def test_ifeval_responses_satisfy_the_simple_constraints(ifeval_rows: list) -> None:
    checked = collections.Counter()
    for row in ifeval_rows:
        response = row["extra_info"]["response"]
        for instruction_id, kwargs in _constraints(row):
            if instruction_id in SIMPLE_CHECKS:
                assert SIMPLE_CHECKS[instruction_id](response, kwargs), (instruction_id, kwargs, response)
                checked[instruction_id] += 1
            assert follows_instruction(instruction_id, kwargs, response), (instruction_id, kwargs, response)
    assert set(checked) == set(SIMPLE_CHECKS)  # every simple check ran on some row


def test_ifeval_references_pass_the_project_reward(ifeval_rows: list) -> None:
    """The RL reward (rewards.ifeval, lm-eval's checkers with nltk/langdetect behaviour) scores every
    reference 1, so SFT demonstrations and the RL reward agree."""
    ifeval = pytest.importorskip("rewards.ifeval")
    for row in ifeval_rows:
        ids, kwargs = ifeval.parse_ifeval_ground_truth(row["reward_model"]["ground_truth"])
        result = ifeval.ifeval_reward(row["extra_info"]["response"], ids, kwargs)
        assert result.reward == 1.0, (ids, result.followed, row["extra_info"]["response"])


def test_ifeval_checks_catch_violations() -> None:
    """The independent checks and follows_instruction both reject a response that breaks the rule."""
    cases = [
        ("punctuation:no_comma", {}, "one, two"),
        ("change_case:english_lowercase", {}, "Hello there"),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "too short here"),
        ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three"),
        ("detectable_format:title", {}, "no title"),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "nothing after"),
        ("detectable_format:json_format", {}, "{not json"),
        ("keywords:existence", {"keywords": ["lantern"]}, "a lamp"),
        ("keywords:forbidden_words", {"forbidden_words": ["lamp"]}, "a Lamp"),
        ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Yes."),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\n***\nb"),
        ("combination:two_responses", {}, "same\n******\nsame"),
    ]
    for instruction_id, kwargs, response in cases:
        assert not SIMPLE_CHECKS[instruction_id](response, kwargs), instruction_id
        assert not follows_instruction(instruction_id, kwargs, response), instruction_id


def test_ifeval_never_combines_conflicting_instructions(ifeval_rows: list) -> None:
    """A few of lm-eval's INSTRUCTION_CONFLICTS, restated: these ids never share a prompt."""
    exclusive_except = {
        "detectable_format:json_format": {"keywords:forbidden_words", "keywords:existence"},
        "combination:repeat_prompt": {"keywords:existence", "detectable_format:title", "punctuation:no_comma"},
        "combination:two_responses": {"keywords:forbidden_words", "keywords:existence", "detectable_format:title",
                                      "punctuation:no_comma"},
    }
    pairs = [("change_case:english_lowercase", "change_case:english_capital"),
             ("startend:quotation", "detectable_format:title"),
             ("length_constraints:number_paragraphs", "length_constraints:number_sentences"),
             ("change_case:capital_word_frequency", "change_case:english_lowercase")]
    for row in ifeval_rows:
        ids = {i for i, _ in _constraints(row)}
        for exclusive, allowed in exclusive_except.items():
            if exclusive in ids:
                assert ids - {exclusive} <= allowed, ids
        for a, b in pairs:
            assert not {a, b} <= ids


def test_ifeval_reasoning_lists_each_constraint(ifeval_rows: list) -> None:
    for row in ifeval_rows[:50]:
        lines = [line for line in row["extra_info"]["reasoning"].split("\n") if re.match(r"\d+\. ", line)]
        assert len(lines) == row["extra_info"]["difficulty"]


# ---- chat ---------------------------------------------------------------------------------------------


def test_chat_rows_carry_a_reference_and_a_worse_rejected(chat_rows: list) -> None:
    kinds = collections.Counter()
    for row in chat_rows:
        extra = row["extra_info"]
        assert row["reward_model"]["style"] == "model"
        assert extra["chosen"] == row["reward_model"]["ground_truth"] == extra["response"]
        assert extra["rejected"].strip() and extra["rejected"] != extra["chosen"]
        kind = extra["rejected_kind"]
        kinds[kind] += 1
        if kind == "truncated":
            assert extra["chosen"].startswith(extra["rejected"]) and len(extra["rejected"]) < len(extra["chosen"])
            assert extra["rejected"][-1] not in ".!?"
        if kind == "repetitive":
            sentence = re.split(r"(?<=[.!?:]) ", extra["rejected"])[0]
            assert extra["rejected"].count(sentence) >= 4
        if kind == "off_topic":
            assert extra["rejected"] not in extra["chosen"]
    assert set(kinds) == set(REJECTED_KINDS)
    assert {r["extra_info"]["task"] for r in chat_rows} == {"note", "explain", "advice", "summary"}


def test_chat_hard_negatives_are_the_wrong_request_or_padding(chat_rows: list) -> None:
    pairs = hard_negatives(chat_rows, seed=0)
    assert pairs == hard_negatives(chat_rows, seed=0) and collections.Counter(p["rejected_kind"] for p in pairs) == {
        "wrong_details": len(chat_rows), "padded": len(chat_rows)}
    task_of = {r["extra_info"]["chosen"]: r["extra_info"]["task"] for r in chat_rows}
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"]
        if pair["rejected_kind"] == "wrong_details":  # another request's answer of the same kind
            assert task_of[pair["rejected"]] == task_of[pair["chosen"]]
        else:  # the right answer, made longer with sentences it does not hold
            assert pair["rejected"].startswith(pair["chosen"].rstrip()) and len(pair["rejected"]) > len(pair["chosen"]) + 20
    assert len(chat_preference_pairs(20, "train", 0)) == 60 and len(chat_preference_pairs(20, "train", 0, False)) == 20


def test_chat_summaries_are_one_sentence_about_the_given_text(chat_rows: list) -> None:
    for row in chat_rows:
        if row["extra_info"]["task"] != "summary":
            continue
        text = row["prompt"][0]["content"].split("\n\n", 1)[1]
        summary = row["extra_info"]["chosen"]
        assert summary.endswith(".") and summary.count(". ") == 0
        names = set(re.findall(r"\b[A-Z][a-z]+\b", summary)) - {"After", "Volunteers"}
        assert names <= set(re.findall(r"\b[A-Z][a-z]+\b", text)), (summary, text)
