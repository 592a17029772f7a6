r"""Instruction following: the 25 IFEval instruction types, with lm-eval's instruction ids and kwargs.

Ground truth (our dataset convention, lm-eval's field names)::

    json.dumps({"instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
                "kwargs": [{}, {"keywords": ["apple"]}]})

Strict checking tests the response as is; loose checking (lm-eval's ``test_instruction_following_loose``) also
accepts it when any of 8 variants follows the instruction (first line removed, last line removed, both, and each
of those with ``*`` removed). The reward is 1/0 "all followed" or the fraction followed (``mode``).

Fully offline and deterministic. Departures from lm-eval, named:
- sentences are counted with lm-eval's own regex splitter (``split_into_sentences``), not NLTK punkt (no NLTK
  data can be downloaded); capital words use a regex tokenizer in place of ``nltk.word_tokenize``;
- language detection is ``langdetect`` with ``DetectorFactory.seed = 0`` (deterministic), and a detection failure
  counts as NOT followed (lm-eval counts it as followed, which rewards empty or symbol-only answers);
- keywords are matched literally (``re.escape``); lm-eval interpolates them into a regex unescaped;
- a kwarg set to ``None`` is dropped (lm-eval drops every falsy value and then draws a random one); a missing
  required kwarg is an error (the reward is ``None``), never a random instruction.
"""

from __future__ import annotations

import collections
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_RELATIONS = ("less than", "at least")
_CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


class InstructionError(ValueError):
    """A malformed instruction (unknown id, missing or invalid kwarg): a data problem, never a 0 reward."""


def _compare(count: int, threshold: int, relation: str) -> bool:
    if relation == "less than":
        return count < threshold
    if relation == "at least":
        return count >= threshold
    raise InstructionError(f"relation must be one of {_RELATIONS}, got {relation!r}")


def _need(kwargs: Mapping[str, Any], key: str) -> Any:
    value = kwargs.get(key)
    if value is None:
        raise InstructionError(f"missing kwarg {key!r}")
    return value


# ---------------------------------------------------------------- text utilities (offline NLTK replacements)

_ALPHABETS = "([A-Za-z])"
_PREFIXES = "(Mr|St|Mrs|Ms|Dr)[.]"
_SUFFIXES = "(Inc|Ltd|Jr|Sr|Co)"
_STARTERS = r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|That\s|This\s|Wherever)"
_ACRONYMS = "([A-Z][.][A-Z][.](?:[A-Z][.])?)"
_WEBSITES = "[.](com|net|org|io|gov|edu|me)"
_DIGITS = "([0-9])"
_MULTIPLE_DOTS = r"\.{2,}"


def split_into_sentences(text: str) -> list[str]:
    """lm-eval's regex sentence splitter (``instructions_util.split_into_sentences``).

    >>> split_into_sentences("Mr. Smith went home. He slept! Did he? Yes.")
    ['Mr. Smith went home.', 'He slept!', 'Did he?', 'Yes.']
    """
    text = " " + text + "  "
    text = text.replace("\n", " ")
    text = re.sub(_PREFIXES, "\\1<prd>", text)
    text = re.sub(_WEBSITES, "<prd>\\1", text)
    text = re.sub(_DIGITS + "[.]" + _DIGITS, "\\1<prd>\\2", text)
    text = re.sub(_MULTIPLE_DOTS, lambda match: "<prd>" * len(match.group(0)) + "<stop>", text)
    if "Ph.D" in text:
        text = text.replace("Ph.D.", "Ph<prd>D<prd>")
    text = re.sub(r"\s" + _ALPHABETS + "[.] ", " \\1<prd> ", text)
    text = re.sub(_ACRONYMS + " " + _STARTERS, "\\1<stop> \\2", text)
    text = re.sub(_ALPHABETS + "[.]" + _ALPHABETS + "[.]" + _ALPHABETS + "[.]", "\\1<prd>\\2<prd>\\3<prd>", text)
    text = re.sub(_ALPHABETS + "[.]" + _ALPHABETS + "[.]", "\\1<prd>\\2<prd>", text)
    text = re.sub(" " + _SUFFIXES + "[.] " + _STARTERS, " \\1<stop> \\2", text)
    text = re.sub(" " + _SUFFIXES + "[.]", " \\1<prd>", text)
    text = re.sub(" " + _ALPHABETS + "[.]", " \\1<prd>", text)
    if "”" in text:
        text = text.replace(".”", "”.")
    if '"' in text:
        text = text.replace('."', '".')
    if "!" in text:
        text = text.replace('!"', '"!')
    if "?" in text:
        text = text.replace('?"', '"?')
    text = text.replace(".", ".<stop>").replace("?", "?<stop>").replace("!", "!<stop>")
    text = text.replace("<prd>", ".")
    sentences = [s.strip() for s in text.split("<stop>")]
    sentences = [s for s in sentences if s]
    return sentences


def count_sentences(text: str) -> int:
    return len(split_into_sentences(text))


def count_words(text: str) -> int:
    r"""Words as lm-eval counts them (``RegexpTokenizer(r"\w+")``).

    >>> count_words("Hello, world! It's 2024.")
    5
    """
    return len(re.findall(r"\w+", text))


_WORD_TOKENS = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """A regex stand-in for ``nltk.word_tokenize`` (hyphenated words are one token, as lm-eval notes)."""
    return _WORD_TOKENS.findall(text)


_LANGDETECT_LOCK = threading.Lock()
_langdetect_ready = False


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text`` by langdetect with a fixed seed; ``None`` when detection fails.

    >>> detect_language("This is clearly an English sentence about the weather today.")
    'en'
    """
    global _langdetect_ready
    import langdetect  # imported lazily: only the language instructions need it
    from langdetect.lang_detect_exception import LangDetectException

    if not _langdetect_ready:
        with _LANGDETECT_LOCK:  # the profile load is a shared global; do it once, under a lock
            if not _langdetect_ready:
                langdetect.DetectorFactory.seed = 0
                langdetect.detector_factory.init_factory()
                _langdetect_ready = True
    try:
        return langdetect.detect(text)
    except LangDetectException:
        return None


# ---------------------------------------------------------------- the 25 checkers: check(response, kwargs) -> bool


def _keywords_existence(response: str, kw: Mapping[str, Any]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in _need(kw, "keywords"))


def _keywords_frequency(response: str, kw: Mapping[str, Any]) -> bool:
    keyword = str(_need(kw, "keyword")).strip()
    count = len(re.findall(re.escape(keyword), response, flags=re.IGNORECASE))
    return _compare(count, int(_need(kw, "frequency")), _need(kw, "relation"))


def _keywords_forbidden_words(response: str, kw: Mapping[str, Any]) -> bool:
    words = _need(kw, "forbidden_words")
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in words)


def _keywords_letter_frequency(response: str, kw: Mapping[str, Any]) -> bool:
    letter = str(_need(kw, "letter")).strip().lower()
    if len(letter) != 1:
        raise InstructionError(f"letter must be one character, got {letter!r}")
    count = collections.Counter(response.lower())[letter]
    return _compare(count, int(_need(kw, "let_frequency")), _need(kw, "let_relation"))


def _language_response_language(response: str, kw: Mapping[str, Any]) -> bool:
    return detect_language(response) == _need(kw, "language")


def _length_number_sentences(response: str, kw: Mapping[str, Any]) -> bool:
    return _compare(count_sentences(response), int(_need(kw, "num_sentences")), _need(kw, "relation"))


def _length_number_paragraphs(response: str, kw: Mapping[str, Any]) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index == 0 or index == len(paragraphs) - 1:
                count -= 1
            else:
                return False
    return count == int(_need(kw, "num_paragraphs"))


def _length_number_words(response: str, kw: Mapping[str, Any]) -> bool:
    return _compare(count_words(response), int(_need(kw, "num_words")), _need(kw, "relation"))


def _length_nth_paragraph_first_word(response: str, kw: Mapping[str, Any]) -> bool:
    num_paragraphs = int(_need(kw, "num_paragraphs"))
    nth = int(_need(kw, "nth_paragraph"))
    expected = str(_need(kw, "first_word")).lower()
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for p in paragraphs if p.strip())
    if nth > count or nth < 1:
        return False
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for letter in word:
        if letter in {".", ",", "?", "!", "'", '"'}:
            break
        first += letter.lower()
    return count == num_paragraphs and first == expected


def _content_number_placeholders(response: str, kw: Mapping[str, Any]) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= int(_need(kw, "num_placeholders"))


def _content_postscript(response: str, kw: Mapping[str, Any]) -> bool:
    marker = str(_need(kw, "postscript_marker")).strip()
    value = response.lower()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, value, flags=re.MULTILINE))


def _format_number_bullet_lists(response: str, kw: Mapping[str, Any]) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(_need(kw, "num_bullets"))


def _format_constrained_response(response: str, kw: Mapping[str, Any]) -> bool:
    value = response.strip()
    return any(option in value for option in _CONSTRAINED_RESPONSE_OPTIONS)


def _format_number_highlighted_sections(response: str, kw: Mapping[str, Any]) -> bool:
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip())
    count += sum(
        1 for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h.removeprefix("**").removesuffix("**").strip()
    )
    return count >= int(_need(kw, "num_highlights"))


def _format_multiple_sections(response: str, kw: Mapping[str, Any]) -> bool:
    splitter = str(_need(kw, "section_spliter")).strip()
    sections = re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", response)
    return len(sections) - 1 >= int(_need(kw, "num_sections"))


def _format_json_format(response: str, kw: Mapping[str, Any]) -> bool:
    value = (
        response.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _format_title(response: str, kw: Mapping[str, Any]) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


def _combination_two_responses(response: str, kw: Mapping[str, Any]) -> bool:
    valid = []
    parts = response.split("******")
    for index, part in enumerate(parts):
        if not part.strip():
            if index != 0 and index != len(parts) - 1:
                return False
        else:
            valid.append(part)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _combination_repeat_prompt(response: str, kw: Mapping[str, Any]) -> bool:
    prompt = str(_need(kw, "prompt_to_repeat"))
    return response.strip().lower().startswith(prompt.strip().lower())


def _startend_end_checker(response: str, kw: Mapping[str, Any]) -> bool:
    phrase = str(_need(kw, "end_phrase")).strip().lower()
    return response.strip().strip('"').lower().endswith(phrase)


def _case_capital_word_frequency(response: str, kw: Mapping[str, Any]) -> bool:
    capital = sum(1 for w in word_tokens(response) if w.isupper())
    return _compare(capital, int(_need(kw, "capital_frequency")), _need(kw, "capital_relation"))


def _case_english_capital(response: str, kw: Mapping[str, Any]) -> bool:
    return response.isupper() and detect_language(response) == "en"


def _case_english_lowercase(response: str, kw: Mapping[str, Any]) -> bool:
    return response.islower() and detect_language(response) == "en"


def _punctuation_no_comma(response: str, kw: Mapping[str, Any]) -> bool:
    return "," not in response


def _startend_quotation(response: str, kw: Mapping[str, Any]) -> bool:
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


# lm-eval's INSTRUCTION_DICT ids; every entry has the signature check(response, kwargs) -> bool (STYLE.md 7).
INSTRUCTIONS: dict[str, Callable[[str, Mapping[str, Any]], bool]] = {
    "keywords:existence": _keywords_existence,
    "keywords:frequency": _keywords_frequency,
    "keywords:forbidden_words": _keywords_forbidden_words,
    "keywords:letter_frequency": _keywords_letter_frequency,
    "language:response_language": _language_response_language,
    "length_constraints:number_sentences": _length_number_sentences,
    "length_constraints:number_paragraphs": _length_number_paragraphs,
    "length_constraints:number_words": _length_number_words,
    "length_constraints:nth_paragraph_first_word": _length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": _content_number_placeholders,
    "detectable_content:postscript": _content_postscript,
    "detectable_format:number_bullet_lists": _format_number_bullet_lists,
    "detectable_format:constrained_response": _format_constrained_response,
    "detectable_format:number_highlighted_sections": _format_number_highlighted_sections,
    "detectable_format:multiple_sections": _format_multiple_sections,
    "detectable_format:json_format": _format_json_format,
    "detectable_format:title": _format_title,
    "combination:two_responses": _combination_two_responses,
    "combination:repeat_prompt": _combination_repeat_prompt,
    "startend:end_checker": _startend_end_checker,
    "change_case:capital_word_frequency": _case_capital_word_frequency,
    "change_case:english_capital": _case_english_capital,
    "change_case:english_lowercase": _case_english_lowercase,
    "punctuation:no_comma": _punctuation_no_comma,
    "startend:quotation": _startend_quotation,
}


def loose_variants(response: str) -> list[str]:
    """The 8 responses lm-eval's loose mode tries (original, first/last/both lines removed, each without ``*``)."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def check_instruction(response: str, instruction_id: str, kwargs: Mapping[str, Any] | None, loose: bool = False) -> bool:
    """Whether ``response`` follows one instruction. Raises `InstructionError` for an unknown id or bad kwargs.

    >>> check_instruction("no commas here", "punctuation:no_comma", {})
    True
    >>> check_instruction("**Title**\\nhello, world", "punctuation:no_comma", {}, loose=True)  # last line removed
    True
    """
    try:
        check = INSTRUCTIONS[instruction_id]
    except KeyError:
        raise InstructionError(f"unknown instruction id {instruction_id!r}; valid: {sorted(INSTRUCTIONS)}") from None
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    candidates = loose_variants(response) if loose else [response]
    return any(c.strip() and check(c, kw) for c in candidates)


@dataclass(frozen=True)
class IFEvalResult:
    """followed: one bool per instruction; reward: 1/0 all-followed or the fraction (per ``mode``)."""

    reward: float
    followed: tuple[bool, ...]
    instruction_ids: tuple[str, ...]


def parse_ifeval_ground_truth(ground_truth: str | Mapping[str, Any]) -> tuple[list[str], list[dict]]:
    """``(instruction_id_list, kwargs)`` from our ground-truth JSON (or an already-decoded dict)."""
    data = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    try:
        ids = list(data["instruction_id_list"])
        kwargs = list(data.get("kwargs") or [{} for _ in ids])
    except (KeyError, TypeError) as e:
        raise InstructionError(f"ifeval ground truth needs 'instruction_id_list' and 'kwargs': {e}") from None
    if len(kwargs) != len(ids):
        raise InstructionError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs")
    return ids, [dict(k or {}) for k in kwargs]


def ifeval_reward(
    response: str,
    instruction_ids: Sequence[str],
    kwargs_list: Sequence[Mapping[str, Any] | None],
    loose: bool = False,
    mode: str = "all",
) -> IFEvalResult:
    """Instruction-following reward of one response: ``mode="all"`` (1/0) or ``"fraction"``.

    >>> r = ifeval_reward("hello world", ["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["moon"]}])
    >>> r.reward, r.followed
    (0.0, (True, False))
    >>> ifeval_reward("hello world", ["punctuation:no_comma", "keywords:existence"],
    ...               [{}, {"keywords": ["moon"]}], mode="fraction").reward
    0.5
    """
    if mode not in ("all", "fraction"):
        raise ValueError(f"mode must be 'all' or 'fraction', got {mode!r}")
    followed = tuple(check_instruction(response, i, k, loose) for i, k in zip(instruction_ids, kwargs_list))
    if not followed:
        raise InstructionError("no instructions to check")
    reward = float(all(followed)) if mode == "all" else sum(followed) / len(followed)
    return IFEvalResult(reward=reward, followed=followed, instruction_ids=tuple(instruction_ids))
