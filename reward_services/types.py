"""Typed containers shared by server, client and registry (no grpc, no torch here)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class ErrorCode(enum.IntEnum):
    """Per-item outcome; mirrors `ErrorCode` of reward_service.proto (same numbers)."""

    OK = 0
    INVALID_INPUT = 1
    TOO_LONG = 2
    UNPARSEABLE = 3
    DEADLINE = 4
    INTERNAL = 5
    # client-side only, never on the wire: no instance could score the item within the deadline
    UNAVAILABLE = 100


@dataclass(frozen=True)
class ScoreItem:
    """One response to score: ``messages`` (chat, last = the response) or ``prompt`` + ``response`` text."""

    id: str
    prompt: str = ""
    response: str = ""
    messages: tuple[tuple[str, str], ...] = ()
    reference: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def prompt_response(self) -> tuple[str, str]:
        """(prompt, response) whichever form the item came in; the prompt joins all but the last message."""
        if self.messages:
            *context, last = self.messages
            return "\n".join(content for _, content in context), last[1]
        return self.prompt, self.response


@dataclass(frozen=True)
class ItemResult:
    """The score of one item; ``reward`` is None exactly when ``error`` is not OK."""

    id: str
    reward: float | None
    error: ErrorCode = ErrorCode.OK
    error_message: str = ""
    head_scores: Mapping[str, float] = field(default_factory=dict)
    judge_text: str = ""

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.OK


@dataclass(frozen=True)
class ModelInfo:
    """What a server serves and its limits (`GetModelInfo`)."""

    name: str
    kind: str  # "classifier" | "generative"
    model_digest: str
    max_length: int
    max_batch_items: int
    max_batch_tokens: int
    max_message_bytes: int


@dataclass(frozen=True)
class Instance:
    """One registered server of a reward model."""

    model: str  # the RM identifier clients resolve, e.g. "chat-rm"
    address: str  # "host:port"
    model_digest: str = ""
    instance_id: str = ""  # unique per process; defaults to the address
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.instance_id or self.address
