"""Chat rendering through the model's own chat template: token ids with a loss mask, prompt ids, the thinking switch, verl rows as chats.

Every chat is rendered by the tokenizer's chat template (`apply_chat_template`), whoever wrote it: ours
(`core.tokenizer.CHAT_TEMPLATE`), a hub model's ChatML, Llama-3 headers, a template without a system role. The
loss mask comes from that same rendering, never from a parallel renderer:

- a template with `{% generation %}` blocks marks the assistant tokens itself (`return_assistant_tokens_mask`);
- any other template is rendered up to each assistant turn (with the generation prompt) and through it; the
  text between the two renderings is that turn's answer and its end-of-turn marker (trailing whitespace after
  the marker, e.g. ChatML's newline, is not trained: the model stops at the marker). Tokens are mapped to
  those character spans through the tokenizer's offsets. A template that renders earlier turns differently
  once later turns follow (so a prefix is not a prefix) cannot be masked this way and raises
  `ChatTemplateError` naming what to do.

Thinking-mode fusion (report §2.3.1): a thinking sample puts `[[BlueThink]]` at the END of the user turn and the
assistant answers `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; a direct sample has neither. In a multi-turn
chat each turn's mode is decided by that turn's user message alone. At inference the template adds the switch
when called with `enable_thinking=True`; `render_prompt` refuses thinking mode on a template where that flag
changes nothing (Qwen2.5's template ignores it), instead of silently generating in direct mode
(`core.thinking` teaches a template the switch).

    ids, labels = tokenize_chat(tokenizer, messages)   # labels == -100 where masked
    prompt_ids = render_prompt(tokenizer, messages, think=True)
"""

from __future__ import annotations

import re

from core.tokenizer import THINK_CLOSE, THINK_OPEN, THINK_SWITCH

IGNORE_INDEX = -100

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBE = [{"role": "user", "content": "What is 2 + 2?"}]


class ChatTemplateError(ValueError):
    """A chat template that cannot do what the recipe asks: express thinking mode, or yield a loss mask."""


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


# ---- rendering and loss masks ------------------------------------------------------------------------------


def render_text(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False, **kwargs) -> str:
    """The chat as text, through the tokenizer's own template."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)


def has_generation_tags(tokenizer) -> bool:
    """Whether the template marks assistant text with `{% generation %}` (then transformers gives the mask)."""
    return bool(_GENERATION_TAG.search(tokenizer.chat_template or ""))


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the rendered chat and the [start, end) token span of each assistant turn, in order."""
    if has_generation_tags(tokenizer):
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return list(out["input_ids"]), _runs(out["assistant_masks"])
    return _spans_from_prefixes(tokenizer, messages)


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of 1s.

    >>> _runs([0, 1, 1, 0, 0, 1])
    [(1, 3), (5, 6)]
    """
    spans, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _spans_from_prefixes(tokenizer, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    text = render_text(tokenizer, messages)
    char_spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise ChatTemplateError("a chat cannot start with an assistant turn: nothing prompts it")
        before = render_text(tokenizer, messages[:i], add_generation_prompt=True)
        through = render_text(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            raise ChatTemplateError(
                f"the chat template renders turns before assistant turn {i} differently once later turns follow, so "
                "its loss mask cannot be read off prefix renderings; add {% generation %}...{% endgeneration %} "
                "around the assistant text of the template (transformers then marks the assistant tokens)")
        answer = through[len(before):]
        char_spans.append((len(before), len(before) + len(answer.rstrip())))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    spans = []
    for start, end in char_spans:
        inside = [t for t, (a, _) in enumerate(offsets) if start <= a < end]
        spans.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return list(enc["input_ids"]), spans


def tokenize_chat(tokenizer, messages: list[dict], *, train_last_turn_only: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of the chat as its template renders it, and labels (IGNORE_INDEX where masked): only the
    assistant turns (their text and end-of-turn marker, as the template renders them) are trained."""
    ids, spans = assistant_spans(tokenizer, messages)
    if train_last_turn_only:
        spans = spans[-1:]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return ids, labels


# ---- the thinking switch -----------------------------------------------------------------------------------

_switch_checked: dict[tuple[int, str], bool] = {}


def thinking_switch_works(tokenizer) -> bool:
    """Whether `enable_thinking=True` changes the template's rendering of a prompt (cached per template)."""
    key = (id(tokenizer), tokenizer.chat_template or "")
    if key not in _switch_checked:
        on = render_text(tokenizer, _PROBE, add_generation_prompt=True, enable_thinking=True)
        off = render_text(tokenizer, _PROBE, add_generation_prompt=True, enable_thinking=False)
        _switch_checked[key] = on != off
    return _switch_checked[key]


def appends_blue_think(tokenizer) -> bool:
    """Whether the template puts `[[BlueThink]]` into the last user turn exactly when thinking is on."""
    on = render_text(tokenizer, _PROBE, add_generation_prompt=True, enable_thinking=True)
    off = render_text(tokenizer, _PROBE, add_generation_prompt=True, enable_thinking=False)
    return on.count(THINK_SWITCH) == 1 and THINK_SWITCH not in off


def require_thinking_switch(tokenizer, where: str = "thinking mode") -> None:
    """Raise `ChatTemplateError` when the template cannot express thinking mode (it ignores `enable_thinking`)."""
    if not thinking_switch_works(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise ChatTemplateError(
            f"{where} was requested, but the chat template of {name} renders the same prompt with enable_thinking "
            f"True and False, so thinking mode would silently do nothing. Fine-tune it with `mixrl sft` first (it "
            f"adds {THINK_SWITCH}, {THINK_OPEN}, {THINK_CLOSE} and a template that appends the switch), or use "
            "mode: direct")


def render_prompt(tokenizer, messages: list[dict], think: bool) -> list[int]:
    """Prompt token ids of `messages` through the tokenizer's own chat template, thinking mode on or off.

    Raises `ChatTemplateError` when `think` is set and the template cannot express thinking mode."""
    if think:
        require_thinking_switch(tokenizer)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False,
                                         enable_thinking=think)


# ---- verl rows as chats -------------------------------------------------------------------------------------


def _query(row: dict) -> str:
    return next(m["content"] for m in reversed(row["prompt"]) if m["role"] == "user")


def prompt_context(row: dict) -> list[dict]:
    """The row's prompt messages before its last user turn (system prompt, earlier turns)."""
    messages = list(row["prompt"])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[:last_user]


def user_turn(row: dict, think: bool) -> dict:
    """The row's last user turn, with the thinking switch at its end in thinking mode."""
    query = _query(row)
    return {"role": "user", "content": with_switch(query) if think else query}


def render_turn(row: dict, think: bool) -> list[dict]:
    """The user turn and the assistant's reference answer of one row (`extra_info.response`, with
    `extra_info.reasoning` in a think block in thinking mode): for SFT data."""
    extra = row.get("extra_info") or {}
    response = extra["response"]
    answer = thinking_answer(extra.get("reasoning", ""), response) if think else response
    return [user_turn(row, think), {"role": "assistant", "content": answer}]
