"""Supervised training: compact pretraining, SFT with thinking-mode fusion, packing, logit distillation."""
