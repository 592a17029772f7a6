"""Synthetic instruction-following prompts with IFEval's verifiable constraints (`ability="ifeval"`).

Each prompt is a short writing task ("Write a short note about the sea.") followed by 1..3 constraints
(difficulty = number of constraints), rendered with lm-eval's own description sentences
(`lm_eval/tasks/ifeval/instructions.py`, `build_description`). Instruction ids and kwargs names are
lm-eval's exactly, so `reward_model.ground_truth` —
`json.dumps({"instruction_id_list": [...], "kwargs": [{...}, ...]})`, kwargs aligned to ids and holding only
that instruction's arguments — can be scored by lm-eval's checkers unchanged.

`extra_info.response` is a reference response from a template writer; every one is checked with
`follows_instruction` before it is kept (a draw that fails is redrawn), so each row is a compliant
demonstration. `extra_info.reasoning` is a short plan listing the constraints.

Covered (22 ids): punctuation:no_comma, change_case:{english_lowercase, english_capital,
capital_word_frequency}, length_constraints:{number_words, number_sentences, number_paragraphs},
detectable_format:{number_bullet_lists, title, json_format, multiple_sections, number_highlighted_sections},
detectable_content:{postscript, number_placeholders}, keywords:{existence, forbidden_words, frequency,
letter_frequency}, startend:{end_checker, quotation}, combination:{repeat_prompt, two_responses}.
Not covered: language:response_language (needs text in other languages), detectable_format:
constrained_response (needs yes/no questions), length_constraints:nth_paragraph_first_word.

Conflicting constraints are never combined: lm-eval's INSTRUCTION_CONFLICTS (made symmetric), plus
`EXTRA_CONFLICTS` where lm-eval's checkers would make a pair unsatisfiable or unreliable for our writer.

`follows_instruction` is the project's own IFEval reward (`rewards.ifeval.check_instruction`, strict, which
mirrors lm-eval's check_following offline, langdetect included: all-capital English is often misread as German,
and such a draw is redrawn), plus safety margins where offline counting only approximates lm-eval's nltk:
number_sentences keeps one sentence of margin, capital_word_frequency bounds nltk's word count from the safe
side. One checker serves the data and the reward, so the two cannot drift apart.

Run: `python -c "from mixrl.data.ifeval_prompts import generate_ifeval; print(generate_ifeval(3, 'train', 0))"`.

>>> row = generate_ifeval(1, "train", seed=0)[0]
>>> sorted(json.loads(row["reward_model"]["ground_truth"]))
['instruction_id_list', 'kwargs']
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Callable

from rewards.ifeval import check_instruction, count_sentences, count_words
from mixrl.data.rows import Sample, generate_rows

LEVELS = (1, 2, 3)
MAX_DRAWS = 200  # draws per sample before giving up; a failure here is a writer bug, not bad luck

# ---- ids ----------------------------------------------------------------------------------------------

NO_COMMA = "punctuation:no_comma"
LOWERCASE = "change_case:english_lowercase"
CAPITAL = "change_case:english_capital"
CAPITAL_WORDS = "change_case:capital_word_frequency"
NUM_WORDS = "length_constraints:number_words"
NUM_SENTENCES = "length_constraints:number_sentences"
NUM_PARAGRAPHS = "length_constraints:number_paragraphs"
BULLETS = "detectable_format:number_bullet_lists"
TITLE = "detectable_format:title"
JSON_FORMAT = "detectable_format:json_format"
SECTIONS = "detectable_format:multiple_sections"
HIGHLIGHTS = "detectable_format:number_highlighted_sections"
POSTSCRIPT = "detectable_content:postscript"
PLACEHOLDERS = "detectable_content:number_placeholders"
EXISTENCE = "keywords:existence"
FORBIDDEN = "keywords:forbidden_words"
FREQUENCY = "keywords:frequency"
LETTER = "keywords:letter_frequency"
END = "startend:end_checker"
QUOTATION = "startend:quotation"
REPEAT = "combination:repeat_prompt"
TWO_RESPONSES = "combination:two_responses"

SUPPORTED = (
    NO_COMMA, LOWERCASE, CAPITAL, CAPITAL_WORDS, NUM_WORDS, NUM_SENTENCES, NUM_PARAGRAPHS, BULLETS, TITLE,
    JSON_FORMAT, SECTIONS, HIGHLIGHTS, POSTSCRIPT, PLACEHOLDERS, EXISTENCE, FORBIDDEN, FREQUENCY, LETTER, END,
    QUOTATION, REPEAT, TWO_RESPONSES,
)

# lm-eval's INSTRUCTION_CONFLICTS, restricted to the ids above (symmetrised below, as lm-eval's
# conflict_make does). "everything except" entries are spelled out by difference.
_LM_EVAL_CONFLICTS: dict[str, set[str]] = {
    NUM_PARAGRAPHS: {NUM_SENTENCES},
    SECTIONS: {HIGHLIGHTS},
    JSON_FORMAT: set(SUPPORTED) - {FORBIDDEN, EXISTENCE},
    TWO_RESPONSES: set(SUPPORTED) - {FORBIDDEN, EXISTENCE, TITLE, NO_COMMA},
    REPEAT: set(SUPPORTED) - {EXISTENCE, TITLE, NO_COMMA},
    CAPITAL_WORDS: {LOWERCASE, CAPITAL},
    LOWERCASE: {CAPITAL},
    QUOTATION: {TITLE},
}
# Ours, each with its reason:
EXTRA_CONFLICTS: dict[str, set[str]] = {
    # lm-eval splits sections on the exact-case spliter ("Section"/"SECTION"); a case change breaks it.
    SECTIONS: {LOWERCASE, CAPITAL, NUM_PARAGRAPHS},  # paragraphs vs sections: two layouts for one text
    # punkt may or may not end a sentence at "P.S."; we cannot count sentences reliably around it.
    NUM_SENTENCES: {POSTSCRIPT},
}


def _symmetric(*tables: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {i: {i} for i in SUPPORTED}
    for table in tables:
        for a, bs in table.items():
            for b in bs:
                out[a].add(b)
                out[b].add(a)
    return {k: frozenset(v) for k, v in out.items()}


CONFLICTS = _symmetric(_LM_EVAL_CONFLICTS, EXTRA_CONFLICTS)

# ---- text banks (comma-free, no line starting with "*" or "-", no brackets: the checkers count those) --

TOPICS = (
    ("the sea", "The Sea"), ("a rainy afternoon", "A Rainy Afternoon"), ("a city park", "A City Park"),
    ("morning walks", "Morning Walks"), ("an old library", "An Old Library"),
    ("a mountain trail", "A Mountain Trail"), ("a small garden", "A Small Garden"),
    ("a school trip", "A School Trip"), ("a new bicycle", "A New Bicycle"), ("the night sky", "The Night Sky"),
    ("a family dinner", "A Family Dinner"), ("a quiet village", "A Quiet Village"),
    ("a winter morning", "A Winter Morning"), ("a local market", "A Local Market"),
    ("a long train ride", "A Long Train Ride"), ("a summer festival", "A Summer Festival"),
    ("a favourite song", "A Favourite Song"), ("learning to cook", "Learning to Cook"),
    ("a first day at work", "A First Day at Work"), ("a camping weekend", "A Camping Weekend"),
    ("a busy kitchen", "A Busy Kitchen"), ("a snowy forest", "A Snowy Forest"),
    ("a music lesson", "A Music Lesson"), ("a football match", "A Football Match"),
    ("a visit to the zoo", "A Visit to the Zoo"), ("an old photograph", "An Old Photograph"),
    ("a sunny beach", "A Sunny Beach"), ("a neighbourhood bakery", "A Neighbourhood Bakery"),
    ("a museum visit", "A Museum Visit"), ("a road trip", "A Road Trip"),
)
TASKS = (
    "Write a short note about {t}.", "Write a short blog post about {t}.", "Write a short story about {t}.",
    "Describe {t} for a friend.", "Write a letter to a friend about {t}.", "Tell me about {t}.",
    "Write a short essay about {t}.", "Write a diary entry about {t}.",
)
BODY = (
    "{T} is something many people enjoy.", "There is always something new to notice about {t}.",
    "I first learned about {t} when I was young.", "Many people have a story about {t}.",
    "{T} can make an ordinary day feel special.", "It is easy to spend an hour thinking about {t}.",
    "Some people find {t} calm and quiet.", "Others see {t} as a source of new ideas.",
    "A good way to start is to look closely at {t}.", "Talking with friends about {t} is always fun.",
    "{T} teaches us to slow down and pay attention.", "Learning more about {t} takes a little patience.",
    "Every season changes how we see {t}.", "Writing about {t} helps me remember the best moments.",
    "There are many small details to enjoy in {t}.", "In the end {t} is worth our time.",
)
BULLET_POINTS = (
    "Look closely at {t}.", "Ask a friend about {t}.", "Take notes about {t}.", "Read a short book about {t}.",
    "Share a photo of {t}.", "Spend ten minutes with {t} each day.", "Compare {t} with something familiar.",
    "Write down one question about {t}.",
)
PS_LINES = ("Thank you for reading.", "I will write again soon.", "Let me know what you think.",
            "Have a lovely day.")
# lm-eval's own _ENDING_OPTIONS first; no trailing "." (the description appends one after the phrase)
END_PHRASES = ("Any other questions?", "Is there anything else I can help with?",
               "Let me know if you have additional questions!", "Have a great day!", "That is all for today!")
KEYWORDS = (
    "lantern", "compass", "violin", "harbor", "meadow", "pebble", "kettle", "blanket", "ladder", "candle",
    "feather", "puzzle", "rocket", "castle", "pillow", "anchor", "orchard", "tunnel", "bridge", "mirror",
    "basket", "whistle", "jacket", "pepper", "carpet", "engine", "island", "planet", "umbrella", "notebook",
)
FREQUENCY_LINES = ("The {k} is worth a thought.", "I keep thinking about the {k}.", "Every {k} has a story.",
                   "One {k} can change a whole day.")
CAPS_WORDS = ("VERY", "IMPORTANT", "REALLY", "ALWAYS", "NEVER", "TODAY", "GREAT", "SIMPLE", "CLEAR", "BEST")
PLACEHOLDER_NAMES = ("name", "date", "place", "time", "address", "phone")
LETTERS = "aeinorst"

# ---- descriptions (lm-eval's build_description text) and plan lines -----------------------------------


def describe(instruction_id: str, kw: dict[str, Any]) -> str:
    """The sentence lm-eval's `build_description` renders for this instruction.

    >>> describe("punctuation:no_comma", {})
    'In your entire response, refrain from the use of any commas.'
    """
    d = {
        NO_COMMA: lambda: "In your entire response, refrain from the use of any commas.",
        LOWERCASE: lambda: "Your entire response should be in English, and in all lowercase letters. "
                           "No capital letters are allowed.",
        CAPITAL: lambda: "Your entire response should be in English, and in all capital letters.",
        CAPITAL_WORDS: lambda: "In your response, words with all capital letters should appear "
                               f"{kw.get('capital_relation')} {kw.get('capital_frequency')} times.",
        NUM_WORDS: lambda: f"Answer with {kw.get('relation')} {kw.get('num_words')} words.",
        NUM_SENTENCES: lambda: f"Your response should contain {kw.get('relation')} {kw.get('num_sentences')} "
                               "sentences.",
        NUM_PARAGRAPHS: lambda: f"There should be {kw.get('num_paragraphs')} paragraphs. Paragraphs are "
                                "separated with the markdown divider: ***",
        BULLETS: lambda: f"Your answer must contain exactly {kw.get('num_bullets')} bullet points. Use the "
                         "markdown bullet points such as:\n* This is point 1. \n* This is point 2",
        TITLE: lambda: "Your answer must contain a title, wrapped in double angular brackets, such as "
                       "<<poem of joy>>.",
        JSON_FORMAT: lambda: "Entire output should be wrapped in JSON format. You can use markdown ticks such "
                             "as ```.",
        SECTIONS: lambda: f"Your response must have {kw.get('num_sections')} sections. Mark the beginning of "
                          f"each section with {kw.get('section_spliter')} X, such as:\n"
                          f"{kw.get('section_spliter')} 1\n[content of section 1]\n"
                          f"{kw.get('section_spliter')} 2\n[content of section 2]",
        HIGHLIGHTS: lambda: f"Highlight at least {kw.get('num_highlights')} sections in your answer with "
                            "markdown, i.e. *highlighted section*.",
        POSTSCRIPT: lambda: "At the end of your response, please explicitly add a postscript starting with "
                            f"{kw.get('postscript_marker')}",
        PLACEHOLDERS: lambda: f"The response must contain at least {kw.get('num_placeholders')} placeholders "
                              "represented by square brackets, such as [address].",
        EXISTENCE: lambda: f"Include keywords {kw.get('keywords')} in the response.",
        FORBIDDEN: lambda: f"Do not include keywords {kw.get('forbidden_words')} in the response.",
        FREQUENCY: lambda: f"In your response, the word {kw.get('keyword')} should appear {kw.get('relation')} "
                           f"{kw.get('frequency')} times.",
        LETTER: lambda: f"In your response, the letter {kw.get('letter')} should appear "
                        f"{kw.get('let_relation')} {kw.get('let_frequency')} times.",
        END: lambda: f"Finish your response with this exact phrase {kw.get('end_phrase')}. No other words "
                     "should follow this phrase.",
        QUOTATION: lambda: "Wrap your entire response with double quotation marks.",
        REPEAT: lambda: "First repeat the request word for word without change, then give your answer (1. do "
                        "not say any words or characters before repeating the request; 2. the request you "
                        "need to repeat does not include this sentence)",
        TWO_RESPONSES: lambda: "Give two different responses. Responses and only responses should be separated "
                               "by 6 asterisk symbols: ******.",
    }
    return d[instruction_id]()


def plan_line(instruction_id: str, kw: dict[str, Any]) -> str:
    """One line of the reasoning plan, in plain words."""
    d = {
        NO_COMMA: lambda: "Do not use any commas.",
        LOWERCASE: lambda: "Write everything in lowercase letters.",
        CAPITAL: lambda: "Write everything in capital letters.",
        CAPITAL_WORDS: lambda: f"Use {kw['capital_relation']} {kw['capital_frequency']} words in all capital "
                               "letters.",
        NUM_WORDS: lambda: f"Use {kw['relation']} {kw['num_words']} words in total.",
        NUM_SENTENCES: lambda: f"Write {kw['relation']} {kw['num_sentences']} sentences.",
        NUM_PARAGRAPHS: lambda: f"Write {kw['num_paragraphs']} paragraphs separated by ***.",
        BULLETS: lambda: f"Include exactly {kw['num_bullets']} bullet points that start with *.",
        TITLE: lambda: "Start with a title in double angular brackets.",
        JSON_FORMAT: lambda: "Write the whole answer as one JSON object.",
        SECTIONS: lambda: f"Write {kw['num_sections']} sections marked {kw['section_spliter']} 1 to "
                          f"{kw['section_spliter']} {kw['num_sections']}.",
        HIGHLIGHTS: lambda: f"Highlight at least {kw['num_highlights']} words with single asterisks.",
        POSTSCRIPT: lambda: f"Add a postscript at the end that starts with {kw['postscript_marker']}",
        PLACEHOLDERS: lambda: f"Include at least {kw['num_placeholders']} placeholders in square brackets.",
        EXISTENCE: lambda: f"Mention the word{'s' if len(kw['keywords']) > 1 else ''} {' and '.join(kw['keywords'])}.",
        FORBIDDEN: lambda: f"Never use the words {' or '.join(kw['forbidden_words'])}.",
        FREQUENCY: lambda: f"Use the word {kw['keyword']} {kw['relation']} {kw['frequency']} times.",
        LETTER: lambda: f"Use the letter {kw['letter']} {kw['let_relation']} {kw['let_frequency']} times.",
        END: lambda: f"Finish with the exact phrase {kw['end_phrase']}",
        QUOTATION: lambda: "Wrap the whole answer in double quotation marks.",
        REPEAT: lambda: "Repeat the request word for word before answering.",
        TWO_RESPONSES: lambda: "Give two different answers separated by ******.",
    }
    return d[instruction_id]()


# ---- checker: the project's IFEval reward, plus safety margins ------------------------------------------


def capital_words_at_least(text: str) -> int:
    """A lower bound on nltk's all-capital tokens: whitespace tokens of 2+ capital letters (edges stripped)."""
    return sum(1 for t in text.split() if len(w := t.strip(".,!?;:\"'*()[]<>")) >= 2 and w.isalpha() and w.isupper())


def capital_words_at_most(text: str) -> int:
    """An upper bound on nltk's all-capital tokens: every maximal letter run is counted if it is upper case.

    A token nltk calls upper case holds at least one such run, and different tokens hold different runs.
    """
    return sum(1 for run in re.findall(r"[A-Za-z]+", text) if run.isupper())


def follows_instruction(instruction_id: str, kw: dict[str, Any], response: str) -> bool:
    """Whether `response` satisfies one instruction: the project's own IFEval reward (`rewards.ifeval`, strict)
    must say so, and where our offline counters only approximate lm-eval's nltk ones (sentences, all-capital
    words) a reference must also clear a safety margin, so it passes lm-eval's checker too.

    >>> follows_instruction("punctuation:no_comma", {}, "no commas here")
    True
    >>> follows_instruction("length_constraints:number_words", {"relation": "less than", "num_words": 3}, "a b c")
    False
    """
    if instruction_id not in SUPPORTED:
        raise ValueError(f"unsupported instruction id {instruction_id!r}")
    if not check_instruction(response, instruction_id, kw):
        return False
    if instruction_id == CAPITAL_WORDS:
        if kw["capital_relation"] == "less than":
            return capital_words_at_most(response) < kw["capital_frequency"]
        return capital_words_at_least(response) >= kw["capital_frequency"]
    if instruction_id == NUM_SENTENCES:
        n = count_sentences(response)
        # one sentence of margin either way, for punkt's judgement calls
        return n + 1 < kw["num_sentences"] if kw["relation"] == "less than" else n - 1 >= kw["num_sentences"]
    return True


# ---- sampling constraints -----------------------------------------------------------------------------


def pick_instructions(rng: random.Random, k: int) -> list[str]:
    """k mutually compatible instruction ids, in the order they will be stated."""
    while True:
        ids: list[str] = []
        while len(ids) < k:
            candidates = [i for i in SUPPORTED if not any(i in CONFLICTS[j] for j in ids)]
            if not candidates:
                break
            ids.append(rng.choice(candidates))
        if len(ids) == k:
            return ids


def _relation(rng: random.Random) -> str:
    return rng.choice(("less than", "at least"))


def _pre_kwargs(rng: random.Random, ids: list[str], task: str) -> dict[str, dict[str, Any]]:
    """Arguments fixed before writing. Letter and capital-word thresholds for "less than" come after."""
    words = rng.sample(KEYWORDS, 5)  # one pool: existence, forbidden and frequency words never coincide
    kw: dict[str, dict[str, Any]] = {}
    for i in ids:
        if i == CAPITAL_WORDS:
            relation = _relation(rng)
            kw[i] = {"capital_frequency": rng.randint(1, 6), "capital_relation": relation}
        elif i == NUM_WORDS:
            relation = _relation(rng)
            n = rng.choice((40, 60, 80, 100, 120)) if relation == "less than" else rng.choice((20, 30, 40, 50, 60, 80))
            kw[i] = {"num_words": n, "relation": relation}
        elif i == NUM_SENTENCES:
            relation = _relation(rng)
            n = rng.randint(4, 10) if relation == "less than" else rng.randint(2, 8)
            kw[i] = {"num_sentences": n, "relation": relation}
        elif i == NUM_PARAGRAPHS:
            kw[i] = {"num_paragraphs": rng.randint(2, 4)}
        elif i == BULLETS:
            kw[i] = {"num_bullets": rng.randint(1, 5)}
        elif i == SECTIONS:
            kw[i] = {"section_spliter": rng.choice(("Section", "SECTION")), "num_sections": rng.randint(2, 4)}
        elif i == HIGHLIGHTS:
            kw[i] = {"num_highlights": rng.randint(1, 3)}
        elif i == POSTSCRIPT:
            kw[i] = {"postscript_marker": rng.choice(("P.S.", "P.P.S"))}
        elif i == PLACEHOLDERS:
            kw[i] = {"num_placeholders": rng.randint(1, 4)}
        elif i == EXISTENCE:
            kw[i] = {"keywords": sorted(words[: rng.randint(1, 2)])}  # lm-eval sorts them
        elif i == FORBIDDEN:
            kw[i] = {"forbidden_words": sorted(words[2:4])}
        elif i == FREQUENCY:
            relation = _relation(rng)
            frequency = rng.randint(1, 4) if relation == "at least" else rng.randint(1, 3)
            kw[i] = {"keyword": words[4], "frequency": frequency, "relation": relation}
        elif i == LETTER:
            kw[i] = {"letter": rng.choice(LETTERS), "let_frequency": 0, "let_relation": _relation(rng)}
        elif i == END:
            kw[i] = {"end_phrase": rng.choice(END_PHRASES)}
        elif i == REPEAT:
            kw[i] = {"prompt_to_repeat": task}
        else:  # no arguments
            kw[i] = {}
    return kw


def _post_kwargs(rng: random.Random, kw: dict[str, dict[str, Any]], response: str) -> None:
    """Thresholds chosen after writing, so that "less than" is satisfiable by the text we have."""
    if LETTER in kw:
        a = kw[LETTER]
        n = response.lower().count(a["letter"])
        if n == 0:
            a["let_relation"] = "less than"
        if a["let_relation"] == "at least":
            a["let_frequency"] = rng.randint(max(1, n // 2), n)
        else:
            a["let_frequency"] = n + rng.randint(1, 8)
    if CAPITAL_WORDS in kw and kw[CAPITAL_WORDS]["capital_relation"] == "less than":
        kw[CAPITAL_WORDS]["capital_frequency"] = capital_words_at_most(response) + rng.randint(1, 5)


# ---- the writer ---------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _keyword_sentence(keywords: list[str]) -> str:
    """The sentence that carries keywords:existence words.

    >>> _keyword_sentence(["anchor", "kettle"])
    'It also reminds me of an anchor and a kettle.'
    """
    return "It also reminds me of " + " and ".join(f"{_article(k)} {k}" for k in keywords) + "."


def _highlight(sentence: str) -> str:
    """Wrap the last word in *...*: mid-line, so the bullet counter never sees it as a bullet."""
    head, _, last = sentence[:-1].rpartition(" ")
    return f"{head} *{last}*{sentence[-1]}"


def _layout(
    choices: dict[str, Any], kw: dict[str, dict[str, Any]], topic: str, title: str, body: list[str]
) -> str:
    """One response (before case changes and quotes) from the body sentences and the fixed choices."""
    t, T = topic, topic[0].upper() + topic[1:]
    sentences = [s.format(t=t, T=T) for s in body]
    for j in range(kw.get(HIGHLIGHTS, {}).get("num_highlights", 0)):
        sentences[j] = _highlight(sentences[j])
    extras = []
    if EXISTENCE in kw:
        extras.append(_keyword_sentence(kw[EXISTENCE]["keywords"]))
    if FREQUENCY in kw and kw[FREQUENCY]["relation"] == "at least":
        extras += [line.format(k=kw[FREQUENCY]["keyword"]) for line in FREQUENCY_LINES[: kw[FREQUENCY]["frequency"]]]
    if CAPITAL_WORDS in kw and kw[CAPITAL_WORDS]["capital_relation"] == "at least":
        extras.append("Please remember these words: " + " ".join(choices["caps"]) + ".")
    if PLACEHOLDERS in kw:
        extras.append("Please fill in " + " and ".join(f"[{p}]" for p in choices["placeholders"])
                      + " before you share it.")
    sentences += extras

    n_blocks = kw.get(NUM_PARAGRAPHS, {}).get("num_paragraphs") or kw.get(SECTIONS, {}).get("num_sections") or 1
    size, rest = divmod(len(sentences), n_blocks)
    blocks, start = [], 0
    for b in range(n_blocks):
        end = start + size + (1 if b < rest else 0)
        blocks.append(" ".join(sentences[start:end]))
        start = end
    if BULLETS in kw:
        blocks[0] += "\n\n" + "\n".join(f"* {p.format(t=t)}" for p in choices["bullets"])
    if SECTIONS in kw:
        spliter = kw[SECTIONS]["section_spliter"]
        text = "\n\n".join(f"{spliter} {b + 1}\n{block}" for b, block in enumerate(blocks))
    else:
        text = "\n\n***\n\n".join(blocks)
    if TITLE in kw:
        text = f"<<{choices['title_prefix']}{title}>>\n\n{text}"
    if POSTSCRIPT in kw:
        text += f"\n\n{kw[POSTSCRIPT]['postscript_marker']} {choices['ps']}"
    if END in kw:
        text += f"\n\n{kw[END]['end_phrase']}"
    return text


def _json_response(kw: dict[str, dict[str, Any]], topic: str, title: str, body: list[str]) -> str:
    t, T = topic, topic[0].upper() + topic[1:]
    sentences = [s.format(t=t, T=T) for s in body]
    if EXISTENCE in kw:
        sentences.append(_keyword_sentence(kw[EXISTENCE]["keywords"]))
    return json.dumps({"title": title, "topic": topic, "text": " ".join(sentences)}, indent=2)


def write_response(rng: random.Random, task: str, topic: str, title: str, kw: dict[str, dict[str, Any]]) -> str:
    """A response meant to satisfy every instruction in `kw` (the caller verifies it)."""
    order = list(BODY)
    rng.shuffle(order)
    choices = {
        "caps": rng.sample(CAPS_WORDS, kw.get(CAPITAL_WORDS, {}).get("capital_frequency", 0) or 0),
        "placeholders": rng.sample(PLACEHOLDER_NAMES, kw.get(PLACEHOLDERS, {}).get("num_placeholders", 0)),
        "bullets": rng.sample(BULLET_POINTS, kw.get(BULLETS, {}).get("num_bullets", 0)),
        "title_prefix": rng.choice(("", "", "All About ", "Notes on ")),
        "ps": rng.choice(PS_LINES),
    }
    if JSON_FORMAT in kw:
        return _json_response(kw, topic, title, order[: rng.randint(2, 4)])
    minimum = max(
        2 if TWO_RESPONSES not in kw else 1,
        kw.get(HIGHLIGHTS, {}).get("num_highlights", 0),
        kw.get(NUM_PARAGRAPHS, {}).get("num_paragraphs", 0),
        kw.get(SECTIONS, {}).get("num_sections", 0),
    )
    wants_short = any(kw.get(i, {}).get("relation") == "less than" for i in (NUM_WORDS, NUM_SENTENCES))
    n = minimum if wants_short else rng.randint(minimum, minimum + 2)
    half = len(order) // 2
    while True:
        if TWO_RESPONSES in kw:
            first = _layout(choices, kw, topic, title, order[:n])
            second = _layout(choices, kw, topic, title, order[half: half + n])
            text = f"{first}\n\n******\n\n{second}"
        else:
            text = _layout(choices, kw, topic, title, order[:n])
        if REPEAT in kw:
            text = f"{task}\n\n{text}"
        if LOWERCASE in kw:
            text = text.lower()
        if CAPITAL in kw:
            text = text.upper()
        if QUOTATION in kw:
            text = f'"{text}"'
        grow = (
            (NUM_WORDS in kw and kw[NUM_WORDS]["relation"] == "at least"
             and count_words(text) < kw[NUM_WORDS]["num_words"])
            or (NUM_SENTENCES in kw and kw[NUM_SENTENCES]["relation"] == "at least"
                and not follows_instruction(NUM_SENTENCES, kw[NUM_SENTENCES], text))
        )
        if not grow or n >= (half if TWO_RESPONSES in kw else len(order)):
            return text
        n += 1


def sample_ifeval(rng: random.Random, difficulty: int) -> Sample:
    """One prompt with `difficulty` constraints and a verified compliant response."""
    if difficulty not in LEVELS:
        raise ValueError(f"ifeval difficulty must be in {LEVELS}, got {difficulty}")
    for _ in range(MAX_DRAWS):
        topic, title = rng.choice(TOPICS)
        task = rng.choice(TASKS).format(t=topic)
        ids = pick_instructions(rng, difficulty)
        kw = _pre_kwargs(rng, ids, task)
        response = write_response(rng, task, topic, title, kw)
        _post_kwargs(rng, kw, response)
        if all(follows_instruction(i, kw[i], response) for i in ids):
            break
    else:
        raise RuntimeError(f"no compliant response in {MAX_DRAWS} draws (difficulty {difficulty})")
    kwargs = [kw[i] for i in ids]
    prompt = task
    for i, a in zip(ids, kwargs):
        # after a multi-line description (bullets, sections) the next one starts on its own line
        prompt += ("\n" if "\n" in prompt.rsplit(". ", 1)[-1] else " ") + describe(i, a)
    plan = "\n".join(f"{n}. {plan_line(i, a)}" for n, (i, a) in enumerate(zip(ids, kwargs), 1))
    return Sample(
        prompt=prompt,
        difficulty=difficulty,
        reasoning=f"The task: {task}\nConstraints to follow:\n{plan}\nI will write about {topic} and check each "
                  "constraint before answering.",
        response=response,
        ground_truth=json.dumps({"instruction_id_list": ids, "kwargs": kwargs}),
    )


def generate_ifeval(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` instruction-following rows of `split`, 1..3 constraints in turn; same args, same rows."""
    return generate_rows("ifeval", "ifeval", "rule", sample_ifeval, LEVELS, num_rows, split, seed)
