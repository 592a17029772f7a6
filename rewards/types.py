"""Typed containers that cross the rewards boundary: what goes in (`Sample`) and what comes out (`RewardResult`).

A reward that could not be computed is ``None`` (the trainer masks the sample), never 0: an infrastructure failure
(a dead sandbox, an unreachable reward model, an unparseable ground truth) says nothing about the policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

THINK_TOKEN = "[[BlueThink]]"


@dataclass
class Sample:
    """One response to score.

    data_source: the dataset's name (verl's ``data_source`` column), e.g. ``"mixrl/synthetic_math"``.
    response: the generated text only (no prompt).
    ground_truth: ``reward_model.ground_truth``; always a string (JSON for ifeval and code rows).
    ability: verl's ``ability`` column (``math``, ``code``, ``ifeval``, ``chat``...); routes when the data_source
        is unknown.
    prompt: the prompt text (last user turn at least); needed for thinking-mode detection and reward models.
    group_id: samples with the same group_id answer the same prompt; the group-overlong length penalty is
        computed over a group. ``None`` makes the sample a group of one.
    response_tokens: the response's length in tokens, for the length penalty; ``None`` falls back to characters.
    thinking: whether thinking mode was on; ``None`` means "infer from the prompt" (it ends with ``[[BlueThink]]``),
        and if there is no prompt either, "unknown" (think tags are then only checked for well-formedness).
    extra_info: verl's ``extra_info`` column, passed through to clients.
    style: ``reward_model.style`` (``rule``, ``model``...); routes a sample whose data_source has no route
        (``model`` → the free-form judge, `rewards.config.default_styles`).
    budget_hit: vLLM's thinking budget ran out and it forced ``</think>`` (those tokens are not the policy's);
        a domain's ``budget_hit_penalty`` is subtracted from its reward (`rewards.config.DomainConfig`).
    """

    data_source: str
    response: str
    ground_truth: str
    ability: str | None = None
    prompt: str | None = None
    group_id: Any = None
    response_tokens: int | None = None
    thinking: bool | None = None
    extra_info: dict[str, Any] | None = None
    style: str | None = None
    budget_hit: bool = False


@dataclass
class RewardResult:
    """The reward of one sample, with every component kept for logging.

    reward: the final scalar the advantage is computed from; ``None`` when it could not be computed (masked).
    components: named factors and terms, e.g. ``{"answer": 1.0, "format": 0.1, "repetition": 1.0,
        "rule": 0.1, "length": 0.05}``; a component that does not apply is absent.
    details: what the rules saw (which format rule fired, what repetition was detected, the extracted answer).
    error: why ``reward`` is ``None``; ``None`` when the reward was computed.
    domain: the pipeline that scored the sample (``math``, ``gsm8k``, ``stem``, ``ifeval``, ``code``, ``chat``,
        ``judge``, ``summary``).
    """

    reward: float | None
    components: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    domain: str | None = None


def infer_thinking(prompt: str | None) -> bool | None:
    """Thinking mode is on when the prompt's last user turn ends with the control token (BlueLM-2.5 §2.3.1).

    The prompt may be chat-templated: after the last ``[[BlueThink]]`` only template markup (``<|im_end|>``,
    ``<|im_start|>assistant``, an opened ``<think>``) may follow. A token in an earlier turn does not count
    (omitting it in the current turn switches thinking off).

    >>> infer_thinking("Solve 1+1. [[BlueThink]]")
    True
    >>> infer_thinking("<|im_start|>user\\nSolve 1+1. [[BlueThink]]<|im_end|>\\n<|im_start|>assistant\\n")
    True
    >>> infer_thinking("user: a [[BlueThink]]\\nassistant: b\\nuser: Solve 1+1.")
    False
    >>> infer_thinking(None) is None
    True
    """
    if prompt is None:
        return None
    at = prompt.rfind(THINK_TOKEN)
    if at < 0:
        return False
    rest = prompt[at + len(THINK_TOKEN):]
    rest = _TEMPLATE_MARKUP.sub(" ", rest)
    return rest.strip() == ""


# Chat-template markup that may follow the control token: special tokens (<|...|>, <...>) and role names.
_TEMPLATE_MARKUP = re.compile(r"<\|[^|>]*\|>|</?[A-Za-z_]+>|\b(?:assistant|Assistant|ASSISTANT)\b:?")
