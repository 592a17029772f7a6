"""Tokenizer special tokens, the chat template, and the exact SFT loss mask of thinking-mode fusion."""

from transformers import AutoTokenizer

from core.chat import IGNORE_INDEX, thinking_answer, tokenize_chat, wants_thinking, with_switch
from core.tokenizer import CONTROL_TOKENS, ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS, THINK_SWITCH


def test_special_and_control_tokens_are_single_ids(tokenizer):
    ids = {}
    for token in SPECIAL_TOKENS + CONTROL_TOKENS:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        assert len(encoded) == 1, token
        ids[token] = encoded[0]
    assert len(set(ids.values())) == len(ids)
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == ENDOFTEXT
    # inside text the tokens stay atomic, with no merge into neighbours
    text = f"Add 2 and 3.{THINK_SWITCH}<think>x</think>"
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))
    assert THINK_SWITCH in pieces and "<think>" in pieces and "</think>" in pieces


def test_decoding_keeps_think_tags_but_drops_chat_markers(tokenizer):
    text = f"{IM_START}assistant\n<think>\nplan\n</think>\n\nok{IM_END}"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nplan\n</think>\n\nok"


def test_digits_are_split_one_per_token(tokenizer):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("12345", add_special_tokens=False))
    assert pieces == ["1", "2", "3", "4", "5"]


def _chat():
    return [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": with_switch("What is 2 + 3?")},
        {"role": "assistant", "content": thinking_answer("2 + 3 = 5", "The answer is \\boxed{5}.")},
    ]


def test_enable_thinking_appends_switch_to_last_user_turn_only(tokenizer):
    chat = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}]
    on = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    off = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on.count(THINK_SWITCH) == 1 and f"C {THINK_SWITCH}{IM_END}" in on
    assert THINK_SWITCH not in off
    already = [{"role": "user", "content": with_switch("C")}]
    assert tokenizer.apply_chat_template(already, tokenize=False, enable_thinking=True).count(THINK_SWITCH) == 1


def test_exact_loss_mask_on_rendered_example(tokenizer):
    chat = _chat()
    ids, labels = tokenize_chat(tokenizer, chat)
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    assert ids == tokenizer.encode(full, add_special_tokens=False)  # segment-wise encoding changes nothing
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert trained == list(range(trained[0], trained[-1] + 1))  # one contiguous span
    assert [ids[i] for i in trained] == [labels[i] for i in trained]
    # exactly the assistant's answer and its end-of-turn token are trained ...
    assert tokenizer.decode([ids[i] for i in trained]) == chat[2]["content"] + IM_END
    # ... preceded by exactly the masked prompt (system, query, switch, template markers)
    prompt = tokenizer.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert trained[0] == len(tokenizer.encode(prompt, add_special_tokens=False))
    switch_id = tokenizer.convert_tokens_to_ids(THINK_SWITCH)
    assert switch_id in ids and labels[ids.index(switch_id)] == IGNORE_INDEX
    assert labels[-1] == IGNORE_INDEX  # the newline after <|im_end|>


def test_multiturn_mask_and_switch(tokenizer):
    chat = _chat() + [{"role": "user", "content": "And 4 + 4?"}, {"role": "assistant", "content": "8"}]
    ids, labels = tokenize_chat(tokenizer, chat)
    trained_text = tokenizer.decode([i for i, l in zip(ids, labels) if l != IGNORE_INDEX])
    assert trained_text == chat[2]["content"] + IM_END + "8" + IM_END
    _, last_only = tokenize_chat(tokenizer, chat, train_last_turn_only=True)
    assert tokenizer.decode([i for i, l in zip(ids, last_only) if l != IGNORE_INDEX]) == "8" + IM_END
    assert not wants_thinking(chat[:4])  # the earlier turn's switch does not carry over
    assert wants_thinking(chat[:2])


def test_tokenizer_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    chat = _chat()
    assert loaded.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert loaded.eos_token == IM_END and loaded.pad_token == ENDOFTEXT
