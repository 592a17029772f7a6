"""Chat rendering: chats into token ids with a loss mask (thinking-mode fusion, report §2.3.1–2.3.3), verl rows as chats, prompt ids.

A thinking sample puts `[[BlueThink]]` at the END of the user turn and the assistant answers
`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; a direct sample has no token and the answer only. The switch
token, the query and every template marker are masked out of the loss; only the assistant's own text (and its
closing <|im_end|>, so it learns to stop) is trained. In a multi-turn chat each turn's mode is decided by that
turn's user message alone: an earlier `[[BlueThink]]` does not carry over.

    ids, labels = tokenize_chat(tokenizer, messages)   # labels == -100 where masked
"""

from __future__ import annotations

from dataclasses import dataclass

from core.tokenizer import IM_END, IM_START, THINK_CLOSE, THINK_OPEN, THINK_SWITCH

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Segment:
    """A span of rendered chat text and whether the loss is computed on it."""

    text: str
    trained: bool


def with_switch(query: str) -> str:
    """The user query with the thinking switch at its end (where the report found it most reliable)."""
    return query if query.endswith(THINK_SWITCH) else f"{query} {THINK_SWITCH}"


def thinking_answer(reasoning: str, answer: str) -> str:
    """Assistant text in thinking mode: one leading closed think block, then the answer."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def wants_thinking(messages: list[dict]) -> bool:
    """Whether the LAST user turn carries the switch (earlier turns do not count)."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"].rstrip().endswith(THINK_SWITCH)
    return False


def render_segments(messages: list[dict], *, add_generation_prompt: bool = False) -> list[Segment]:
    """Render a chat exactly as the tokenizer's chat template does, split into trained/untrained spans."""
    segments: list[Segment] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            segments.append(Segment(f"{IM_START}assistant\n", trained=False))
            segments.append(Segment(f"{content}{IM_END}", trained=True))
            segments.append(Segment("\n", trained=False))
        else:
            segments.append(Segment(f"{IM_START}{role}\n{content}{IM_END}\n", trained=False))
    if add_generation_prompt:
        segments.append(Segment(f"{IM_START}assistant\n", trained=False))
    return segments


def tokenize_chat(tokenizer, messages: list[dict], *, train_last_turn_only: bool = False) -> tuple[list[int], list[int]]:
    """Token ids and labels (IGNORE_INDEX where masked) of a chat.

    Segments are encoded separately; every segment boundary sits at a special token or a newline, where the
    byte-level pre-tokenizer splits anyway, so the concatenation equals encoding the whole text (tested).
    """
    segments = render_segments(messages)
    last_trained = max((i for i, s in enumerate(segments) if s.trained), default=-1)
    ids: list[int] = []
    labels: list[int] = []
    for i, segment in enumerate(segments):
        piece = tokenizer.encode(segment.text, add_special_tokens=False)
        trained = segment.trained and (not train_last_turn_only or i == last_trained)
        ids.extend(piece)
        labels.extend(piece if trained else [IGNORE_INDEX] * len(piece))
    return ids, labels


# ---- verl rows as chats -------------------------------------------------------------------------------------


def _query(row: dict) -> str:
    return next(m["content"] for m in reversed(row["prompt"]) if m["role"] == "user")


def prompt_context(row: dict) -> list[dict]:
    """The row's prompt messages before its last user turn (system prompt, earlier turns)."""
    messages = list(row["prompt"])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[:last_user]


def render_turn(row: dict, think: bool) -> list[dict]:
    """The user turn and the assistant answer of one row, in thinking or direct mode."""
    extra = row.get("extra_info") or {}
    query, response = _query(row), extra["response"]
    if think:
        return [{"role": "user", "content": with_switch(query)},
                {"role": "assistant", "content": thinking_answer(extra.get("reasoning", ""), response)}]
    return [{"role": "user", "content": query}, {"role": "assistant", "content": response}]


def render_prompt(tokenizer, messages: list[dict], think: bool) -> list[int]:
    """Prompt token ids of `messages` through the tokenizer's own chat template, thinking mode on or off."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False,
                                         enable_thinking=think)

