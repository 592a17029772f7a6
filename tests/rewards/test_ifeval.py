"""IFEval: every one of the 25 instruction types, followed and not followed; strict vs loose; the reward."""

import json

import pytest

from rewards.ifeval import (
    INSTRUCTIONS,
    InstructionError,
    check_instruction,
    count_sentences,
    ifeval_reward,
    parse_ifeval_ground_truth,
)

EN = "The weather today is sunny and warm, and everybody in the village is going to the beach."

# instruction id -> (kwargs, a response that follows it, a response that does not)
CASES = {
    "keywords:existence": ({"keywords": ["beach", "sunny"]}, EN, "It rains."),
    "keywords:frequency": (
        {"keyword": "cat", "frequency": 2, "relation": "at least"},
        "A cat and another Cat.",
        "One cat only.",
    ),
    "keywords:forbidden_words": ({"forbidden_words": ["rain"]}, "Rainbow colors.", "The rain falls."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 3, "let_relation": "less than"}, "zz top", "zzz"),
    "language:response_language": ({"language": "fr"}, "Bonjour, je suis très heureux de vous voir aujourd'hui.", EN),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        "One. Two.",
        "One. Two. Three.",
    ),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First.\n***\nSecond.", "Only one."),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"}, "one two three four five", "one two"),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "First para.\n\nThen, second.",
        "First para.\n\nAfter that, second.",
    ),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name] at [address]", "Dear [name]"),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hello.\nP.S. bye", "Hello. Bye."),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n* two", "* one\n* two\n- three"),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes, definitely."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*one* and **two**", "*one* only"),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nA\nSection 2\nB",
        "Section 1\nA",
    ),
    "detectable_format:json_format": ({}, '```json\n{"a": 1}\n```', "{a: 1}"),
    "detectable_format:title": ({}, "<<My Poem>>\nRoses.", "My Poem\nRoses."),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a haiku."},
        "Write a haiku. Leaves fall.",
        "Leaves fall. Write a haiku.",
    ),
    "startend:end_checker": ({"end_phrase": "Any other questions?"}, "Done. Any other questions?", "Any other questions? Done."),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        "The NASA and ESA teams.",
        "The NASA team.",
    ),
    "change_case:english_capital": ({}, EN.upper(), EN),
    "change_case:english_lowercase": ({}, EN.lower(), EN),
    "punctuation:no_comma": ({}, "No commas here.", "A comma, here."),
    "startend:quotation": ({}, '"Quoted answer."', "Not quoted."),
}


def test_all_25_lm_eval_ids_are_covered():
    assert len(INSTRUCTIONS) == 25
    assert set(CASES) == set(INSTRUCTIONS)


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_followed_and_not_followed(instruction_id):
    kwargs, yes, no = CASES[instruction_id]
    assert check_instruction(yes, instruction_id, kwargs) is True
    assert check_instruction(no, instruction_id, kwargs) is False


def test_language_detection_failure_is_not_followed():
    # langdetect cannot detect digits-only text; lm-eval would count this as followed, we do not.
    assert check_instruction("12345 678", "language:response_language", {"language": "en"}) is False
    assert check_instruction("12345", "change_case:english_lowercase", {}) is False


def test_language_detection_is_deterministic():
    text = "Ciao, come stai? Spero che tu stia bene oggi."
    results = {check_instruction(text, "language:response_language", {"language": "it"}) for _ in range(5)}
    assert results == {True}


def test_loose_accepts_what_strict_rejects():
    # An intro line with a comma: strict fails; loose removes the first line.
    response = "Sure, here it is:\nNo commas in this part."
    assert check_instruction(response, "punctuation:no_comma", {}) is False
    assert check_instruction(response, "punctuation:no_comma", {}, loose=True) is True
    # Markdown asterisks around a quote: loose strips '*'.
    assert check_instruction('**"Quoted."**', "startend:quotation", {}) is False
    assert check_instruction('**"Quoted."**', "startend:quotation", {}, loose=True) is True


def test_empty_response_follows_nothing():
    assert check_instruction("   ", "punctuation:no_comma", {}) is False


def test_none_kwargs_are_dropped_and_missing_required_raise():
    # lm-eval rows carry every kwarg key, most of them None.
    assert check_instruction("no commas", "punctuation:no_comma", {"keywords": None, "num_words": None}) is True
    with pytest.raises(InstructionError, match="missing kwarg 'num_words'"):
        check_instruction("a b c", "length_constraints:number_words", {"num_words": None, "relation": "at least"})
    with pytest.raises(InstructionError, match="relation"):
        check_instruction("a b c", "length_constraints:number_words", {"num_words": 2, "relation": "at most"})
    with pytest.raises(InstructionError, match="unknown instruction id"):
        check_instruction("x", "keywords:nope", {})


def test_sentence_counting_offline():
    assert count_sentences("Dr. Who arrived at 3.45 p.m. today. He left! Why? Nobody knows...") == 4


def test_reward_modes_and_ground_truth_json():
    gt = json.dumps(
        {
            "instruction_id_list": ["punctuation:no_comma", "keywords:existence", "startend:quotation"],
            "kwargs": [{}, {"keywords": ["moon"]}, {}],
        }
    )
    ids, kwargs = parse_ifeval_ground_truth(gt)
    response = '"The moon is bright tonight"'
    assert ifeval_reward(response, ids, kwargs).reward == 1.0
    partial = "The moon, bright."  # comma (fail), moon (ok), not quoted (fail)
    assert ifeval_reward(partial, ids, kwargs).followed == (False, True, False)
    assert ifeval_reward(partial, ids, kwargs, mode="all").reward == 0.0
    assert ifeval_reward(partial, ids, kwargs, mode="fraction").reward == pytest.approx(1 / 3)


def test_bad_ground_truth_raises():
    with pytest.raises(InstructionError):
        parse_ifeval_ground_truth(json.dumps({"instruction_id_list": ["a", "b"], "kwargs": [{}]}))
    with pytest.raises(InstructionError):
        parse_ifeval_ground_truth(json.dumps({"kwargs": []}))
