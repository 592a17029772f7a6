"""Thinking-mode fusion on any model: the control tokens added to a tokenizer that lacks them, embeddings grown from the mean, and a chat template taught the switch.

BlueLM-2.5 §2.3.2 puts `[[BlueThink]]` at the end of the user turn to switch on a `<think>…</think>` trace. A hub
model (Qwen2.5, Llama-3, Gemma...) has neither the tokens nor a template that emits the switch, so before SFT:

    added = add_thinking_tokens(model, tokenizer)          # [] when the tokenizer has them already
    tokenizer.chat_template = with_thinking_switch(tokenizer.chat_template)

The tokens are added as atomic added tokens that are not "special" for decoding (as Qwen3 adds `<think>`):
`skip_special_tokens=True`, vLLM's default, keeps them in the text, where the rewards and the evaluation look
for them. New embedding rows (input and, when untied, output) start at the mean of the existing rows, so the
new tokens begin as an "average" token instead of a random direction with a large logit.

The template is wrapped, not rewritten: a preamble rebuilds `messages` with the switch appended to the last user
turn when `enable_thinking` is true, then the model's own template renders them unchanged. A template that does
not show user text verbatim would not show the switch either; `ensure_thinking` checks by rendering.
"""

from __future__ import annotations

import torch

from core.chat import ChatTemplateError, appends_blue_think
from core.tokenizer import CONTROL_TOKENS, THINK_SWITCH

SWITCH_PREAMBLE_MARK = "{#- mixrl: thinking switch -#}"

# Jinja: `messages` rebuilt with " [[BlueThink]]" at the end of the last user turn (unless already there).
_PREAMBLE = (
    SWITCH_PREAMBLE_MARK
    + "{%- if enable_thinking is defined and enable_thinking -%}"
    "{%- set _ns = namespace(last=-1, out=[]) -%}"
    "{%- for _m in messages -%}{%- if _m['role'] == 'user' -%}{%- set _ns.last = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for _m in messages -%}"
    "{%- if loop.index0 == _ns.last and _m['content'] is string and not _m['content'].rstrip().endswith('" + THINK_SWITCH + "') -%}"
    "{%- set _ns.out = _ns.out + [dict(_m, content=_m['content'] + ' " + THINK_SWITCH + "')] -%}"
    "{%- else -%}{%- set _ns.out = _ns.out + [_m] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = _ns.out -%}"
    "{%- endif -%}"
)


def missing_control_tokens(tokenizer) -> list[str]:
    """The thinking control tokens that do not encode to one id of their own."""
    vocab = tokenizer.get_vocab()
    return [t for t in CONTROL_TOKENS if t not in vocab or len(tokenizer.encode(t, add_special_tokens=False)) != 1]


def with_thinking_switch(template: str) -> str:
    """`template` wrapped so that `enable_thinking=True` appends the switch to the last user turn (idempotent)."""
    if template.startswith(SWITCH_PREAMBLE_MARK):
        return template
    return _PREAMBLE + template


@torch.no_grad()
def add_thinking_tokens(model, tokenizer) -> list[str]:
    """Add the missing control tokens; grow the embeddings if needed; new rows = mean of the existing rows."""
    from tokenizers import AddedToken

    missing = missing_control_tokens(tokenizer)
    if not missing:
        return []
    old_len = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in missing]
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    known = min(old_len, rows)  # rows past the old vocabulary (hub models pad it) are untrained: not averaged
    for embedding in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e is not None}.values():
        weight = embedding.weight  # [vocab, hidden]
        weight[new_ids] = weight[:known].mean(dim=0, keepdim=True).to(weight.dtype)
    return missing


def ensure_thinking(model, tokenizer, *, allow_changes: bool) -> dict:
    """Make `tokenizer` (and `model`) able to express thinking mode the report's way, or say why not.

    With `allow_changes`, missing control tokens are added and the template is wrapped with the switch; without,
    a tokenizer that lacks them raises `ChatTemplateError`. Either way the result is checked by rendering a
    prompt with `enable_thinking` True and False. Returns {"added_tokens", "template_patched"}.
    """
    missing = missing_control_tokens(tokenizer)
    patch = not appends_blue_think(tokenizer)
    if (missing or patch) and not allow_changes:
        raise ChatTemplateError(
            f"the recipe trains thinking mode, but {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'} "
            + (f"lacks the control tokens {missing}" if missing else "")
            + (" and " if missing and patch else "")
            + (f"has a chat template that does not append {THINK_SWITCH} with enable_thinking=True" if patch else "")
            + "; set add_thinking_tokens: true to add them, or train only mode: direct sources")
    added = add_thinking_tokens(model, tokenizer) if missing else []
    if patch:
        tokenizer.chat_template = with_thinking_switch(tokenizer.chat_template or "")
        if not appends_blue_think(tokenizer):
            raise ChatTemplateError(
                f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'} does not render "
                f"the user's text verbatim, so a {THINK_SWITCH} appended to it does not appear; give the model a "
                "template that does")
    return {"added_tokens": added, "template_patched": patch}
