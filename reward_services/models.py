"""Reward models a server can serve: a sequence classifier (discriminative RM) and a generative judge.

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
    Output without a number on the 0..10 scale is a per-item UNPARSEABLE error, never a score of 0."""

    kind = "generative"

    def __init__(self, *args, max_new_tokens: int = 6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens

    def text(self, item: ScoreItem) -> str:
        prompt, response = item.prompt_response()
        reference = f"Reference: {item.reference}\n" if item.reference else ""
        return JUDGE_TEMPLATE.format(prompt=prompt, response=response, reference=reference)

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
            value = parse_judge_score(text)
            if value is None:
                results.append(ItemResult(item.id, None, ErrorCode.UNPARSEABLE, "judge output has no 0..10 score",
                                          judge_text=text))
            else:
                results.append(ItemResult(item.id, value, judge_text=text))
        return results


def load_scorer(model_dir: str | Path, *, max_length: int | None = None, kind: str | None = None,
                device: str = "auto") -> _Scorer:
    """Load a classifier RM or a generative judge from a Hugging Face folder onto `device` (auto = CUDA when
    visible); `kind` overrides the guess from ``config.json`` (``architectures[0]`` ending in
    ``ForSequenceClassification`` → classifier)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from core.device import resolve_device

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
    if kind == "generative":
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        return GenerativeJudgeScorer(model.to(resolve_device(device)), tokenizer, model_dir, max_length)
    raise ValueError(f"unknown reward-model kind {kind!r}; expected 'classifier' or 'generative'")
