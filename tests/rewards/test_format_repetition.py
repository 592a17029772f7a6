"""Format and repetition coefficients: which rule fires, with hand-checked inputs."""

import pytest

from rewards.format import FormatConfig, format_coefficient
from rewards.repetition import RepetitionConfig, end_loop, ngram_repeat_fraction, repetition_coefficient

GOOD = "<think>\nI add 30 and 3.\n</think>\n\nThe answer is \\boxed{33}."


@pytest.mark.parametrize(
    "response,thinking,fired",
    [
        (GOOD, True, ()),
        (GOOD, None, ()),  # unknown mode: a well-formed block is fine
        ("The answer is \\boxed{33}.", True, ("think_block",)),  # thinking on, no block
        ("Sure. <think>x</think> \\boxed{33}", True, ("think_block",)),  # block not leading
        ("<think>a</think><think>b</think> \\boxed{33}", True, ("think_block",)),  # two blocks
        ("<think>never closed \\boxed{33}", True, ("think_block", "missing_box")),  # and no answer part
        ("</think> \\boxed{33}", None, ("think_block",)),
        (GOOD, False, ("unexpected_think",)),  # thinking off but reasoned
        ("<think>\n\n</think>\n\nThe answer is \\boxed{33}.", False, ()),  # empty block from a chat template
        ("The answer is \\boxed{33}.", False, ()),
        ("The answer is 33.", False, ("missing_box",)),
        ("Either \\boxed{33} or \\boxed{34}.", False, ("too_many_boxes",)),
        ("<think>maybe \\boxed{1}</think> \\boxed{33}", True, ()),  # drafts inside the reasoning do not count
    ],
)
def test_format_rules(response, thinking, fired):
    result = format_coefficient(response, thinking)
    assert result.fired == fired
    assert result.coefficient == (0.1 if fired else 1.0)


def test_short_reasoning_counts_characters():
    cfg = FormatConfig(min_reasoning_chars=10)
    # "I add 30 and 3." without whitespace: "Iadd30and3." = 11 characters -> passes at 10, fails at 12.
    assert format_coefficient(GOOD, True, cfg).reasoning_chars == 11
    assert format_coefficient(GOOD, True, cfg).fired == ()
    assert format_coefficient(GOOD, True, FormatConfig(min_reasoning_chars=12)).fired == ("short_reasoning",)
    # Chinese: 6 characters of reasoning before the box (no think block).
    zh = "三十加三等于\\boxed{33}"
    assert format_coefficient(zh, False, cfg).reasoning_chars == 6


def test_format_penalty_and_limits_configurable():
    cfg = FormatConfig(max_boxes=2, penalty=0.5)
    assert format_coefficient("\\boxed{1} \\boxed{2}", False, cfg).coefficient == 1.0
    r = format_coefficient("\\boxed{1} \\boxed{2} \\boxed{3}", False, cfg)
    assert (r.coefficient, r.fired, r.boxes) == (0.5, ("too_many_boxes",), 3)


def test_ngram_fraction_hand_derived():
    # "abcabcabc", n=3: 7 trigrams abc bca cab abc bca cab abc -> 3 distinct -> 1 - 3/7
    assert ngram_repeat_fraction("abcabcabc", 3) == pytest.approx(4 / 7)
    assert ngram_repeat_fraction("ab", 3) == 0.0


def test_end_loop_hand_derived():
    # 10 x "ab" = 20 chars of period 2: covered 20 >= 4 repeats and >= min_chars 20.
    assert end_loop("xyz" + "ab" * 10, 10, 4, 20) == (2, 20)
    assert end_loop("xyz" + "ab" * 9, 10, 4, 20) is None  # 18 chars < 20
    # A loop cut mid-unit (token limit) is still found: "abc"*5 + "a".
    assert end_loop("Q: " + "abc" * 5 + "a", 10, 4, 12) == (3, 16)


def test_repetition_detects_chinese_loop():
    text = "首先我们计算面积。" + "让我再检查一下。" * 10
    r = repetition_coefficient(text, RepetitionConfig(min_chars=50))
    assert r.coefficient == 0.1 and "end_loop" in r.detected and r.loop_period == 8


def test_repetition_ignores_whitespace_variation():
    text = "Answer is 4.\n" + "".join("again\n" if i % 2 else "again " for i in range(20))
    assert "end_loop" in repetition_coefficient(text).detected


def test_repetition_clean_long_text_passes():
    text = " ".join(f"Step {i}: multiply {i} by {i + 1} to get {i * (i + 1)}." for i in range(60))
    r = repetition_coefficient(text)
    assert r.coefficient == 1.0, r
    assert r.ngram_repeat_fraction < 0.5


def test_repetition_ngram_threshold_in_config():
    # Repetition in the middle, not at the end: only the n-gram detector can see it.
    text = "Intro. " + "the same sentence again and again. " * 12 + "Finally, the result is 42 and we are done here."
    assert repetition_coefficient(text).detected == ("ngram_repetition",)
    assert repetition_coefficient(text, RepetitionConfig(max_ngram_repeat_fraction=0.95)).detected == ()
