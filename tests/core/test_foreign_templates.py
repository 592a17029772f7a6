"""Loss masks and the thinking switch through templates mixrl did not write (Qwen2.5, Llama-3, Gemma, `{% generation %}`).

Masks are asserted exactly, as runs of (rendered text, trained), on single- and multi-turn chats.
"""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from core.chat import (ChatTemplateError, IGNORE_INDEX, appends_blue_think, render_prompt, render_text, thinking_answer,
                       thinking_switch_works, tokenize_chat, with_switch)
from core.thinking import add_thinking_tokens, ensure_thinking, missing_control_tokens, with_thinking_switch
from core.tokenizer import CONTROL_TOKENS, THINK_SWITCH
from tests.core.foreign_tokenizers import QWEN_SYSTEM, foreign_tokenizer, segments

ANSWER = thinking_answer("2 + 3 = 5", "The answer is 5.")


def _chat(system: bool = False) -> list[dict]:
    head = [{"role": "system", "content": "Be brief."}] if system else []
    return head + [{"role": "user", "content": with_switch("What is 2 + 3?")}, {"role": "assistant", "content": ANSWER},
                   {"role": "user", "content": "And 4 + 4?"}, {"role": "assistant", "content": "8"}]


def test_qwen25_chatml_with_default_system_prompt():
    tok = foreign_tokenizer("qwen2.5")
    ids, labels = tokenize_chat(tok, _chat())
    assert segments(tok, ids, labels) == [
        (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3? {THINK_SWITCH}<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        (f"{ANSWER}<|im_end|>", True),
        ("\n<|im_start|>user\nAnd 4 + 4?<|im_end|>\n<|im_start|>assistant\n", False),
        ("8<|im_end|>", True),
        ("\n", False),
    ]
    assert ids == tok.apply_chat_template(_chat(), tokenize=True, return_dict=False)  # the template's own ids
    _, last = tokenize_chat(tok, _chat(), train_last_turn_only=True)
    assert [t for t, trained in segments(tok, ids, last) if trained] == ["8<|im_end|>"]
    # an explicit system prompt replaces the default one, and stays untrained
    ids, labels = tokenize_chat(tok, _chat(system=True))
    assert segments(tok, ids, labels)[0][0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")


def test_llama3_headers_trimmed_content_and_eot():
    tok = foreign_tokenizer("llama3")
    chat = _chat(system=True)
    ids, labels = tokenize_chat(tok, chat)
    assert segments(tok, ids, labels) == [
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         f"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3? {THINK_SWITCH}<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n", False),
        (f"{ANSWER}<|eot_id|>", True),
        ("<|start_header_id|>user<|end_header_id|>\n\nAnd 4 + 4?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", False),
        ("8<|eot_id|>", True),
    ]


def test_gemma_no_system_role():
    tok = foreign_tokenizer("gemma")
    ids, labels = tokenize_chat(tok, _chat())
    assert segments(tok, ids, labels) == [
        (f"<bos><start_of_turn>user\nWhat is 2 + 3? {THINK_SWITCH}<end_of_turn>\n<start_of_turn>model\n", False),
        (f"{ANSWER}<end_of_turn>", True),
        ("\n<start_of_turn>user\nAnd 4 + 4?<end_of_turn>\n<start_of_turn>model\n", False),
        ("8<end_of_turn>", True),
        ("\n", False),
    ]
    with pytest.raises(Exception, match="System role not supported"):
        tokenize_chat(tok, _chat(system=True))


def test_generation_tags_give_the_same_mask_as_prefix_rendering():
    tagged = foreign_tokenizer("chatml-generation")
    plain = foreign_tokenizer("chatml-generation")
    plain.chat_template = plain.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert render_text(tagged, _chat()) == render_text(plain, _chat())
    assert tokenize_chat(tagged, _chat()) == tokenize_chat(plain, _chat())
    ids, labels = tokenize_chat(tagged, _chat())
    assert [t for t, trained in segments(tagged, ids, labels) if trained] == [f"{ANSWER}<|im_end|>", "8<|im_end|>"]


def test_template_that_rewrites_earlier_turns_is_refused():
    tok = foreign_tokenizer("qwen2.5")
    # like Qwen3: earlier assistant turns are rendered differently once a later turn follows
    tok.chat_template = tok.chat_template.replace(
        "message.content + '<|im_end|>'",
        "(message.content if loop.last or message.role != 'assistant' else 'elided') + '<|im_end|>'")
    with pytest.raises(ChatTemplateError, match="generation"):
        tokenize_chat(tok, _chat())


def _tiny_model(tokenizer, tie: bool) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config)


@pytest.mark.parametrize("family", ["qwen2.5", "llama3", "gemma"])
def test_thinking_switch_refused_then_added(family):
    tok = foreign_tokenizer(family)
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    assert not thinking_switch_works(tok) and not appends_blue_think(tok)
    with pytest.raises(ChatTemplateError, match="enable_thinking"):
        render_prompt(tok, prompt, think=True)
    assert render_prompt(tok, prompt, think=False)  # direct mode works on any template
    model = _tiny_model(tok, tie=family != "llama3")
    old = model.get_input_embeddings().weight.detach().clone()
    report = ensure_thinking(model, tok, allow_changes=True)
    assert report == {"added_tokens": CONTROL_TOKENS, "template_patched": True}
    assert missing_control_tokens(tok) == [] and thinking_switch_works(tok)
    new_ids = [tok.convert_tokens_to_ids(t) for t in CONTROL_TOKENS]
    assert new_ids == list(range(old.shape[0], old.shape[0] + 3))
    for embedding in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = embedding.weight.detach()
        assert weight.shape[0] == old.shape[0] + 3
        torch.testing.assert_close(weight[new_ids], weight[: old.shape[0]].mean(0, keepdim=True).expand(3, -1))
    torch.testing.assert_close(model.get_input_embeddings().weight[: old.shape[0]].detach(), old)
    on = tok.decode(render_prompt(tok, prompt, think=True), skip_special_tokens=False)
    off = tok.decode(render_prompt(tok, prompt, think=False), skip_special_tokens=False)
    assert on.count(THINK_SWITCH) == 1 and THINK_SWITCH not in off
    assert on == off.replace("What is 2 + 3?", f"What is 2 + 3? {THINK_SWITCH}")
    # the switch goes to the LAST user turn only, once, and the inference prompt is the SFT rendering's prefix
    chat = _chat()[:3]
    multi = tok.decode(render_prompt(tok, chat, think=True), skip_special_tokens=False)
    assert multi.count(THINK_SWITCH) == 2 and multi.rstrip().rsplit("And 4 + 4?", 1)[1].lstrip().startswith(THINK_SWITCH)
    trained_chat = [*chat[:2], {"role": "user", "content": with_switch("And 4 + 4?")}, {"role": "assistant", "content": "8"}]
    ids, labels = tokenize_chat(tok, trained_chat)
    prompt_ids = render_prompt(tok, chat, think=True)
    assert ids[: len(prompt_ids)] == prompt_ids and labels[len(prompt_ids)] != IGNORE_INDEX
    assert labels[len(prompt_ids) - 1] == IGNORE_INDEX
    # the tokens stay in decoded text with skip_special_tokens=True (vLLM's default), where rewards look
    assert tok.decode(tok.encode("<think>\nx\n</think>\n\ny", add_special_tokens=False), skip_special_tokens=True) == "<think>\nx\n</think>\n\ny"
    # a second call changes nothing
    assert ensure_thinking(model, tok, allow_changes=True) == {"added_tokens": [], "template_patched": False}
    assert with_thinking_switch(tok.chat_template) == tok.chat_template


def test_thinking_refused_without_permission_to_change():
    tok = foreign_tokenizer("qwen2.5")
    with pytest.raises(ChatTemplateError, match=r"lacks the control tokens .*add_thinking_tokens"):
        ensure_thinking(_tiny_model(tok, tie=True), tok, allow_changes=False)


def test_padded_vocabulary_rows_are_reused_without_resize():
    tok = foreign_tokenizer("qwen2.5")
    model = _tiny_model(tok, tie=True)
    model.resize_token_embeddings(len(tok) + 16, mean_resizing=False)  # hub models pad the vocabulary
    rows = model.get_input_embeddings().weight.shape[0]
    assert add_thinking_tokens(model, tok) == CONTROL_TOKENS
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape[0] == rows
    torch.testing.assert_close(weight[len(tok) - 3 : len(tok)], weight[: len(tok) - 3].mean(0, keepdim=True).expand(3, -1))
