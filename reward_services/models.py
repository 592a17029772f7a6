"""Reward models a server can serve: a sequence classifier (discriminative RM), generative judges (a 0..10
judge, a multi-dimension judge, a judge of free-form answers against the reference) and rule-based reward
functions served like models (the numerical-step critique).

    scorer = load_scorer("runs/rm/final")      # kind from config.json's architecture
    encoded = scorer.encode(item)              # token ids, or an ItemResult error (TOO_LONG, INVALID_INPUT)
    results = scorer.score([item], [encoded])  # one ItemResult per item; a bad item never fails the batch

The same `format_pair` is used for training (`reward_services.train`) and serving, so a served model sees
exactly the text layout it was trained on.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from pathlib import Path

import torch

from reward_services.types import ErrorCode, ItemResult, ScoreItem

JUDGE_TEMPLATE = (
    "Rate how well the response answers the request, from 0 (useless) to 10 (perfect).\n"
    "Request: {prompt}\nResponse: {response}\n{reference}Score:"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

# The multi-dimension judge (BlueLM-2.5 §2.3.6: generative RMs that score several dimensions and an overall
# score). Strict format: one "name: N" line per dimension, then "overall: N", N on 0..10.
DIMENSIONS = ("helpfulness", "correctness", "safety")
MULTIDIM_TEMPLATE = (
    "Rate the response on each dimension from 0 (worst) to 10 (best), then give an overall score.\n"
    "Answer with exactly these lines and nothing else:\n{format}\n"
    "Request: {prompt}\nResponse: {response}\n{reference}Scores:\n"
)
_SCORE_LINE = re.compile(r"^\s*(?:[-*]\s+)?\**([A-Za-z][A-Za-z _-]*?)\**\s*[:=]\s*\**(-?\d+(?:\.\d+)?)\**\s*(?:/\s*10)?\s*$")

# The judge of free-form answers against the ground truth (the report's fallback when no rule can verify).
REFERENCE_TEMPLATE = (
    "Does the response give the same final answer as the reference answer? Reply yes or no.\n"
    "Question: {prompt}\nReference answer: {reference}\nResponse: {response}\nVerdict:"
)
_VERDICT_WORDS = {"yes": 1.0, "correct": 1.0, "true": 1.0, "no": 0.0, "incorrect": 0.0, "false": 0.0, "wrong": 0.0}
_FIRST_WORD = re.compile(r"^[\s*_`\"'(\[]*(?:verdict\s*[:=]\s*)?[*_`\"'(\[]*([A-Za-z]+|-?\d+(?:\.\d+)?)\b", re.IGNORECASE)


def format_pair(tokenizer, prompt: str, response: str) -> str:
    """The text a classifier RM scores: the chat template when the tokenizer has one, else plain lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
    return f"{prompt}\n{response}"


def parse_judge_score(text: str, scale: float = 10.0) -> float | None:
    """The first number of a judge's output scaled to [0, 1]; None when there is none or it is off the scale.

    >>> parse_judge_score(" 7 - clear and polite")
    0.7
    >>> parse_judge_score("great answer") is None, parse_judge_score("42") is None
    (True, True)
    """
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group())
    if not 0.0 <= value <= scale:
        return None
    return value / scale


def parse_multidim_judgement(text: str, dimensions: tuple[str, ...] = DIMENSIONS) -> dict[str, float] | None:
    r"""Scores in [0, 1] for every dimension and ``overall`` from a judge's output; None (masked) unless each of
    them is on its own ``name: N`` line (N on 0..10, ``/10`` allowed), once or always with the same value.
    Other lines (chatter before or after) are ignored; names are case-insensitive.

    >>> parse_multidim_judgement("helpfulness: 8\ncorrectness: 6/10\nsafety: 10\noverall: 7")
    {'helpfulness': 0.8, 'correctness': 0.6, 'safety': 1.0, 'overall': 0.7}
    >>> parse_multidim_judgement("Sure!\nHelpfulness: 8\nCorrectness: 6\nSafety: 10\nOverall: 7\nHope it helps.")["overall"]
    0.7
    >>> [parse_multidim_judgement(t) for t in ("helpfulness: 8\noverall: 7",           # partial
    ...                                        "helpfulness: 8 correctness: 6 safety: 10 overall: 7",  # one line
    ...                                        "helpfulness: 8\ncorrectness: 6\nsafety: 11\noverall: 7",  # off scale
    ...                                        "helpfulness: 8\nhelpfulness: 3\ncorrectness: 6\nsafety: 9\noverall: 7")]
    [None, None, None, None]
    """
    wanted = {d.lower() for d in dimensions} | {"overall"}
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = _SCORE_LINE.match(line)
        if m is None:
            continue
        name = m.group(1).strip().lower()
        if name not in wanted:
            continue
        value = float(m.group(2))
        if not 0.0 <= value <= 10.0 or found.get(name, value) != value:
            return None  # off the scale, or two different scores for one dimension
        found[name] = value
    if set(found) != wanted:
        return None
    return {name: found[name] / 10.0 for name in [*(d.lower() for d in dimensions), "overall"]}


def parse_reference_verdict(text: str) -> float | None:
    r"""A reference judge's verdict: the first word ``yes``/``correct``/``true`` → 1.0, ``no``/``incorrect``/
    ``false``/``wrong`` → 0.0, or a leading score on 0..10 → scaled to [0, 1]; None (masked) otherwise.

    >>> [parse_reference_verdict(t) for t in (" Yes.", "**No** - it says 12", "Verdict: correct", " 7", "maybe", "15")]
    [1.0, 0.0, 1.0, 0.7, None, None]
    """
    m = _FIRST_WORD.match(text)
    if m is None:
        return None
    word = m.group(1).lower()
    if word in _VERDICT_WORDS:
        return _VERDICT_WORDS[word]
    if word[0].isdigit() or word[0] == "-":
        value = float(word)
        return value / 10.0 if 0.0 <= value <= 10.0 else None
    return None


def model_digest(model_dir: str | Path) -> str:
    """sha256 over the weight, config and tokenizer files: two servers agree iff they serve the same function."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    names = sorted(p.name for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".jinja"))
    for name in names:
        h.update(name.encode())
        h.update((model_dir / name).read_bytes())
    return "sha256:" + h.hexdigest()


class _Scorer(abc.ABC):
    """What the server batches: a model, its tokenizer and digest; subclasses say how an item becomes text."""

    kind = ""

    def __init__(self, model, tokenizer, model_dir: str | Path, max_length: int) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.digest = model_digest(model_dir)
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @abc.abstractmethod
    def text(self, item: ScoreItem) -> str:
        """The text the model reads for one item (classifier: chat rendering; judge: the judging prompt)."""

    def encode(self, item: ScoreItem) -> list[int] | ItemResult:
        """Token ids of the item, or an error result (empty response, over `max_length`)."""
        prompt, response = item.prompt_response()
        if not response.strip():
            return ItemResult(item.id, None, ErrorCode.INVALID_INPUT, "empty response")
        ids = self.tokenizer.encode(self.text(item), add_special_tokens=False)
        if len(ids) > self.max_length:
            return ItemResult(item.id, None, ErrorCode.TOO_LONG, f"{len(ids)} tokens > max_length {self.max_length}")
        return ids

    def _padded(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)  # [B, L]
        mask = torch.zeros((len(encoded), width), dtype=torch.long)  # [B, L]
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        return input_ids, mask


class ClassifierScorer(_Scorer):
    """A Hugging Face ``*ForSequenceClassification`` RM; reward = logit of label 0 (extra labels = extra heads)."""

    kind = "classifier"

    def text(self, item: ScoreItem) -> str:
        return format_pair(self.tokenizer, *item.prompt_response())

    @torch.inference_mode()
    def score(self, items: list[ScoreItem], encoded: list[list[int]]) -> list[ItemResult]:
        input_ids, mask = (t.to(self.model.device) for t in self._padded(encoded))
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()  # [B, num_labels]
        results = []
        for item, row in zip(items, logits.tolist()):
            heads = {f"head_{k}": v for k, v in enumerate(row)} if len(row) > 1 else {}
            results.append(ItemResult(item.id, float(row[0]), head_scores=heads))
        return results


class GenerativeJudgeScorer(_Scorer):
    """A causal LM prompted with `JUDGE_TEMPLATE`; its greedy output is parsed into [0, 1].
    Output without a number on the 0..10 scale is a per-item UNPARSEABLE error, never a score of 0.

    Subclasses change the prompt (`text`), the parser (`parse`) and how much the judge may write."""

    kind = "generative"
    unparseable = "judge output has no 0..10 score"

    def __init__(self, *args, max_new_tokens: int = 6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens

    def text(self, item: ScoreItem) -> str:
        prompt, response = item.prompt_response()
        reference = f"Reference: {item.reference}\n" if item.reference else ""
        return JUDGE_TEMPLATE.format(prompt=prompt, response=response, reference=reference)

    def parse(self, text: str) -> tuple[float | None, dict[str, float]]:
        """(reward, head scores) of one judge output; reward None when it cannot be read."""
        return parse_judge_score(text), {}

    @torch.inference_mode()
    def score(self, items: list[ScoreItem], encoded: list[list[int]]) -> list[ItemResult]:
        # left padding: generation continues every row from its own last token
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)  # [B, L]
        mask = torch.zeros_like(input_ids)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        out = self.model.generate(input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                  max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.pad_id)  # [B, L + new]
        results = []
        for item, row in zip(items, out[:, width:]):
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            value, heads = self.parse(text)
            if value is None:
                results.append(ItemResult(item.id, None, ErrorCode.UNPARSEABLE, self.unparseable, judge_text=text))
            else:
                results.append(ItemResult(item.id, value, head_scores=heads, judge_text=text))
        return results


class MultiDimJudgeScorer(GenerativeJudgeScorer):
    """A judge that scores named dimensions and an overall score (`MULTIDIM_TEMPLATE`); reward = overall in
    [0, 1], each dimension a head score. Output missing any line of the format is UNPARSEABLE (masked)."""

    kind = "multidim"
    unparseable = "judge output does not give every dimension and overall on 0..10"

    def __init__(self, *args, dimensions: tuple[str, ...] = DIMENSIONS, max_new_tokens: int | None = None,
                 **kwargs) -> None:
        # room for every "name: 10" line, however the tokenizer splits it
        budget = max_new_tokens or 8 * (len(dimensions) + 1)
        super().__init__(*args, max_new_tokens=budget, **kwargs)
        self.dimensions = tuple(dimensions)

    def text(self, item: ScoreItem) -> str:
        prompt, response = item.prompt_response()
        reference = f"Reference: {item.reference}\n" if item.reference else ""
        fmt = "\n".join(f"{d}: N" for d in (*self.dimensions, "overall"))
        return MULTIDIM_TEMPLATE.format(format=fmt, prompt=prompt, response=response, reference=reference)

    def parse(self, text: str) -> tuple[float | None, dict[str, float]]:
        scores = parse_multidim_judgement(text, self.dimensions)
        if scores is None:
            return None, {}
        return scores.pop("overall"), scores


class ReferenceJudgeScorer(GenerativeJudgeScorer):
    """Judges a free-form answer against the item's reference (`REFERENCE_TEMPLATE`): yes → 1, no → 0, or a
    0..10 score scaled. An item without a reference is INVALID_INPUT: there is nothing to judge against."""

    kind = "reference"
    unparseable = "judge output is neither yes/no nor a 0..10 score"

    def encode(self, item: ScoreItem) -> list[int] | ItemResult:
        if not (item.reference or "").strip():
            return ItemResult(item.id, None, ErrorCode.INVALID_INPUT, "the reference judge needs a reference answer")
        return super().encode(item)

    def text(self, item: ScoreItem) -> str:
        prompt, response = item.prompt_response()
        return REFERENCE_TEMPLATE.format(prompt=prompt, reference=item.reference, response=response)

    def parse(self, text: str) -> tuple[float | None, dict[str, float]]:
        return parse_reference_verdict(text), {}


class RuleScorer:
    """A rule-based reward function served like a model (the numerical-step critique, `rewards.critique`): no
    weights, no tokenizer, same batching, deadlines and per-item errors as the models.

    ``fn(prompt, response, reference) -> (reward | None, head_scores, text)``; None is UNPARSEABLE with ``text``
    as the message. ``source``: the bytes that define the function (its module's source), hashed into the digest
    so that two servers agree iff they run the same rule. reward_services never imports the reward functions
    (DESIGN.md floors): the ``mixrl`` CLI, which may import both, hands one in. ``max_length`` counts characters;
    a "token" for the batch caps is a whitespace-separated word.
    """

    def __init__(self, kind: str, fn, source: bytes, max_length: int = 100_000) -> None:
        self.kind, self.fn, self.max_length = kind, fn, max_length
        self.digest = "sha256:" + hashlib.sha256(kind.encode() + b"\0" + source).hexdigest()

    def encode(self, item: ScoreItem) -> list[int] | ItemResult:
        _, response = item.prompt_response()
        if not response.strip():
            return ItemResult(item.id, None, ErrorCode.INVALID_INPUT, "empty response")
        if len(response) > self.max_length:
            return ItemResult(item.id, None, ErrorCode.TOO_LONG, f"{len(response)} characters > max_length {self.max_length}")
        return [0] * max(1, len(response.split()))

    def score(self, items: list[ScoreItem], encoded: list[list[int]]) -> list[ItemResult]:
        results = []
        for item in items:
            prompt, response = item.prompt_response()
            reward, heads, text = self.fn(prompt, response, item.reference)
            if reward is None:
                results.append(ItemResult(item.id, None, ErrorCode.UNPARSEABLE, text, dict(heads), text))
            else:
                results.append(ItemResult(item.id, float(reward), head_scores=dict(heads), judge_text=text))
        return results


JUDGE_KINDS = {"generative": GenerativeJudgeScorer, "multidim": MultiDimJudgeScorer, "reference": ReferenceJudgeScorer}
# served without a model folder; the `mixrl serve-rm` CLI builds them (`RuleScorer`)
RULE_KINDS = ("critique",)
KINDS = ("classifier", *JUDGE_KINDS, *RULE_KINDS)


def load_scorer(model_dir: str | Path, *, max_length: int | None = None, kind: str | None = None,
                device: str = "auto", dimensions: tuple[str, ...] | None = None) -> _Scorer:
    """Load a classifier RM or a generative judge from a Hugging Face folder onto `device` (auto = CUDA when
    visible); `kind` overrides the guess from ``config.json`` (``architectures[0]`` ending in
    ``ForSequenceClassification`` → classifier, else ``generative``); ``multidim`` and ``reference`` are the other
    judges of a causal LM (``dimensions``: what the multi-dimension judge scores)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from core.device import resolve_device

    if kind in RULE_KINDS:
        raise ValueError(f"{kind!r} is a rule-based reward served without a model: run `mixrl serve-rm --kind {kind}`")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown reward-model kind {kind!r}; expected one of {list(KINDS)}")
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if kind is None:
        arch = (config.get("architectures") or [""])[0]
        kind = "classifier" if arch.endswith("ForSequenceClassification") else "generative"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    max_length = max_length or int(config.get("max_position_embeddings", 2048))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if kind == "classifier":
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32)
        return ClassifierScorer(model.to(resolve_device(device)), tokenizer, model_dir, max_length)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    extra = {"dimensions": tuple(dimensions)} if kind == "multidim" and dimensions else {}
    return JUDGE_KINDS[kind](model.to(resolve_device(device)), tokenizer, model_dir, max_length, **extra)
