"""Answer extraction, table-driven."""

import pytest

from rewards.extract import answer_part, choice_answer, code_block, count_boxes, extract_answer, gsm8k_answer, last_boxed

LAST_BOXED = [
    (r"The answer is \boxed{33}.", "33"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\frac12}", r"\frac12"),
    (r"nested \boxed{\sqrt{\frac{a^{2}}{b}}} end", r"\sqrt{\frac{a^{2}}{b}}"),
    (r"escaped \boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"escaped close only \boxed{a\}b}", r"a\}b"),
    (r"\boxed 5", "5"),
    (r"so $\boxed 5$.", "5"),
    (r"\fbox{12}", "12"),
    (r"two boxes \boxed{1} and \boxed{2}", "2"),
    (r"truncated \boxed{1} then \boxed{\frac{3}{", None),
    (r"truncated only \boxed{12", None),
    (r"empty \boxed{}", None),
    (r"\boxed{x=3}", "x=3"),
    (r"\boxed{10\text{ cm}}", r"10\text{ cm}"),
    (r"\boxed{[1,2)}", "[1,2)"),
    (r"\boxedfoo{3}", None),  # not a \boxed command
    ("no box at all", None),
]


@pytest.mark.parametrize("text,expected", LAST_BOXED)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answer_part_ignores_boxes_in_reasoning():
    response = "<think>\ntry \\boxed{2}\n</think>\n\nThe answer is \\boxed{33}."
    assert extract_answer(response) == "33"
    assert count_boxes(answer_part(response)) == 1
    # An unclosed reasoning block has no answer, even with a drafted box in it.
    assert extract_answer("<think>\n... \\boxed{2}") is None


@pytest.mark.parametrize(
    "text,expected",
    [("so 72\n#### 72", "72"), ("#### 1,234", "1234"), ("#### -5\n#### 6", "6"), ("#### 3.50.", "3.50"), ("72", None)],
)
def test_gsm8k(text, expected):
    assert gsm8k_answer(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"\boxed{B}", "B"),
        (r"\boxed{(C)}", "C"),
        (r"\boxed{\text{D}}", "D"),
        (r"\boxed{A) 42}", "A"),
        ("The answer is (B).", "B"),
        ("answer: C", "C"),
        ("**Answer:** D", None),  # markdown between the word and the letter: not claimed
        (r"\boxed{42}", None),
        ("I think it is A or B", None),
    ],
)
def test_choice(text, expected):
    assert choice_answer(text) == expected


def test_code_block_prefers_python():
    text = "```text\nnot code\n```\n```python\ndef f():\n    return 1\n```\n```\nplain\n```"
    assert code_block(text) == "def f():\n    return 1\n"


def test_extractor_order_and_unknown():
    assert extract_answer("#### 5 and \\boxed{6}", ("gsm8k", "boxed")) == "5"
    assert extract_answer("#### 5 and \\boxed{6}", ("boxed", "gsm8k")) == "6"
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        extract_answer("x", ("nope",))
