"""Supervised training: tokenizer and tiny-model factory, compact pretraining, SFT with thinking-mode fusion."""
