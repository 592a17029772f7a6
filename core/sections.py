"""Config sections more than one stage shares: precision names, the optimizer, the tiny model, the datasets.

Each recipe schema (`sft/config.py`, `rl/config.py`, `mixrl/config.py`) embeds these; `core/config.py` loads
them from YAML and overrides like any other section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# auto = bfloat16 where the hardware multiplies it faster than float32 (measured; `core.device.resolve_dtype`)
Dtype = Literal["auto", "float32", "bfloat16"]


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to `lr_min_ratio * lr_peak`."""

    lr_peak: float = 3e-3
    lr_min_ratio: float = 0.1
    lr_warmup_steps: int = 50
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip_norm: float = 1.0


@dataclass
class ModelConfig:
    """A Qwen2-architecture decoder, saved in Hugging Face format (vLLM and transformers load it)."""

    hidden_size: int = 256
    num_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 704
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True


@dataclass
class SyntheticDataConfig:
    """Which synthetic datasets to generate (see `mixrl/data/synthetic.py`)."""

    out_dir: str = "runs/data"
    # rows of the train split per domain (the domains generated are these keys); math gets the most because
    # the tiny model's arithmetic improves with unique problems far more than with repeated epochs
    train_rows: dict[str, int] = field(default_factory=lambda: {"math": 20000, "code": 1500, "ifeval": 1500, "chat": 1000,
                                                                 "stem": 300, "summary": 300})
    test_rows_per_domain: int = 200
    # per-domain override of test_rows_per_domain: the quickstart's GRPO stage evaluates on one narrow slice of
    # math (level-1 division), which needs a larger test split to hold enough of it
    test_rows: dict[str, int] = field(default_factory=dict)
    seed: int = 0
