"""Fixtures shared by every test folder: a small trained tokenizer and a 2-layer model built from it."""

import random

import pytest

from core.sections import ModelConfig
from core.model import build_model
from core.tokenizer import train_tokenizer


def _corpus(n: int = 400) -> list[str]:
    rng = random.Random(0)
    texts = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        texts.append(f"What is {a} + {b}?\n{a} + {b} = {a + b}\nThe answer is \\boxed{{{a + b}}}.")
        texts.append(f"Write a function that returns the sum of {a} numbers. def f(xs): return sum(xs)")
    return texts


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(_corpus(), vocab_size=400)


@pytest.fixture()
def tiny_model(tokenizer):
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
    return build_model(cfg, tokenizer, seed=0)
