"""Byte-level BPE tokenizer trained from scratch, with the chat markers and thinking-mode control tokens.

Special tokens (one id each, never split, never merged with neighbours):
  <|endoftext|>  document separator in pretraining, padding
  <|im_start|>, <|im_end|>  ChatML turn markers; <|im_end|> is the end-of-turn (EOS) token
  <think>, </think>  the long-thinking trace delimiters
  [[BlueThink]]  the thinking-mode switch, appended at the END of the user turn (report §2.3.1)

The last three are added as non-"special" tokens (as Qwen3 does for <think>): they stay atomic, but decoding with
`skip_special_tokens=True` (vLLM's default) keeps them in the text, so rewards and evaluation can see them.

Digits are split one per token, so arithmetic is learnable by a tiny model.

    tok = train_tokenizer(texts, vocab_size=1024)
    tok.save_pretrained("runs/x/final")
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINK_SWITCH = "[[BlueThink]]"

SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
CONTROL_TOKENS = [THINK_OPEN, THINK_CLOSE, THINK_SWITCH]

# ChatML with thinking-mode fusion. `enable_thinking=true` appends the switch to the last user turn (unless the
# user already wrote it); the model then opens <think>. Without it the model answers directly. SFT loss masks are
# read off this template's own rendering (`core.chat.tokenize_chat`), as for any hub model's template.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] -%}"
    "{%- if message['role'] == 'user' and loop.last and enable_thinking is defined and enable_thinking"
    " and not content.endswith('" + THINK_SWITCH + "') -%}"
    "{%- set content = content + ' " + THINK_SWITCH + "' -%}"
    "{%- endif -%}"
    "{{- '" + IM_START + "' + message['role'] + '\\n' + content + '" + IM_END + "\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + IM_START + "assistant\\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer with the chat template."""
    tok = Tokenizer(models.BPE())
    # Digits one per token first, then GPT-2's byte-level split (no prefix space: chat text starts mid-line).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in CONTROL_TOKENS])
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` with our special tokens and chat template."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def single_token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """Id of a token that must encode to exactly one id (special or control token)."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"token {token!r} encodes to {len(ids)} ids {ids}; the tokenizer lacks it")
    return ids[0]
