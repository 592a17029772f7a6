"""Tokenizers mixrl did not make, built locally (no hub): byte-level BPE with the chat templates and special tokens
of three model families — Qwen2.5 (ChatML with a default system prompt), Llama-3 (header tokens) and Gemma (no
system role) — plus a ChatML variant whose template marks assistant text with `{% generation %}`.

    tok = foreign_tokenizer("qwen2.5")
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's template without its tool-calling branches: it ignores enable_thinking.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama-3-Instruct's template: bos, header tokens, trimmed content, <|eot_id|> with nothing after it.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Gemma's template: no system role (it raises), roles must alternate, the assistant is "model".
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# ChatML whose assistant text and end marker are wrapped in {% generation %} (transformers' assistant mask).
CHATML_GENERATION_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

FAMILIES = {
    "qwen2.5": dict(template=QWEN25_TEMPLATE, special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                    eos="<|im_end|>", pad="<|endoftext|>", bos=None),
    "llama3": dict(template=LLAMA3_TEMPLATE, special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                      "<|end_header_id|>", "<|eot_id|>"],
                   eos="<|eot_id|>", pad=None, bos="<|begin_of_text|>"),
    "gemma": dict(template=GEMMA_TEMPLATE, special=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                  eos="<end_of_turn>", pad="<pad>", bos="<bos>"),
    "chatml-generation": dict(template=CHATML_GENERATION_TEMPLATE, special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                              eos="<|im_end|>", pad="<|endoftext|>", bos=None),
}

_CORPUS = [
    "What is 2 + 3? The answer is 5.", "And 4 + 4? It is 8.", "You are a helpful assistant.",
    "Write a function that returns the sum of two numbers.", "def add(a, b):\n    return a + b\n",
    "Think step by step, then answer. The answer is \\boxed{12}.",
] * 20


def foreign_tokenizer(family: str, vocab_size: int = 320, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences (or `corpus`), with `family`'s special tokens and chat template."""
    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=spec["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=spec["eos"], pad_token=spec["pad"],
                                   bos_token=spec["bos"], unk_token=None, clean_up_tokenization_spaces=False)
    fast.chat_template = spec["template"]
    return fast


def segments(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The rendered chat as runs of (text, trained), decoded without dropping special tokens."""
    runs: list[tuple[list[int], bool]] = []
    for token, label in zip(ids, labels):
        trained = label != -100
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(token)
        else:
            runs.append(([token], trained))
    return [(tokenizer.decode(toks, skip_special_tokens=False), trained) for toks, trained in runs]
