"""Schemas of the supervised recipes: compact pretraining and SFT with thinking-mode fusion.

Each dataclass is the schema of one recipe kind; YAML recipes in `recipes/` override its defaults (see
`core/config.py` for loading, overrides and error messages). Names carry their unit (`_tokens`, `_steps`,
`_rows`) and scope (`train.`, `model.`), as STYLE.md asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.sections import Dtype, ModelConfig, OptimConfig, SyntheticDataConfig


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the pretraining corpus; special tokens are fixed (`core/tokenizer.py`)."""

    vocab_size: int = 1024
    min_frequency: int = 2
    training_docs: int = 20000


@dataclass
class PackedTrainConfig:
    """Packed-sequence training loop shared by pretraining and SFT."""

    max_steps: int = 600
    max_minutes: float = 0.0  # wall-clock cap on top of max_steps (0 = none), for time-boxed recipes
    sequence_tokens: int = 512  # length of one packed row
    rows_per_step: int = 8  # packed rows per optimizer step
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when visible
    dtype: Dtype = "auto"  # bfloat16 = autocast on the device (master weights stay fp32); auto = bf16 where faster
    gradient_checkpointing: bool = False  # recompute activations in backward (GPU memory for long rows)
    log_every_steps: int = 20
    num_threads: int = 0  # torch intra-op threads; 0 = all cores
    # training-state checkpoints (weights, optimizer, data order, RNG) in RUN_DIR/checkpoints/step_N, every this
    # many steps and at the end (0 = only at the end); the vocabulary of core/checkpoint.py, shared with GRPO
    checkpoint_every_steps: int = 100
    keep_checkpoints: int = 2
    resume: str = ""  # "" = fresh; "auto" = this run's latest checkpoint if any; or a run dir / checkpoint folder


@dataclass
class DistillConfig:
    """Logit-alignment distillation (report §2.2.1): loss = (1-w)·CE + w·T²·KL(p_teacher^T ‖ p_student^T)."""

    teacher_path: str | None = None  # a Hugging Face checkpoint sharing the student's tokenizer
    temperature: float = 2.0
    kd_weight: float = 0.5


@dataclass
class PretrainConfig:
    """`mixrl pretrain RECIPE`: tokenizer + tiny Qwen2 model from scratch on synthetic text."""

    run_dir: str = "runs/pretrain_tiny"
    seed: int = 0
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # the tiny default: ~500 steps of 8 x 512 tokens in bf16 autocast, time-boxed for the 5-minute budget
    train: PackedTrainConfig = field(default_factory=lambda: PackedTrainConfig(max_steps=500, max_minutes=3.5, dtype="auto"))
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class SFTSource:
    """One SFT data source: a dataset file, how its rows are rendered, its epochs and resampling weight.

    `mode` picks the rendering (thinking-mode fusion, report §2.3.1): `think` = `[[BlueThink]]` at the end of
    the user turn and a `<think>` trace before the answer; `direct` = no token, answer only; `fused` = each
    long-CoT row appears once in each form (the report's mixed regime); `multiturn` = two-turn chats whose
    second turn's own token alone decides its mode.
    """

    name: str = "math"
    path: str = "{data_dir}/math/train.parquet"  # "{data_dir}" is replaced by the recipe's data.out_dir
    mode: Literal["think", "direct", "fused", "multiturn"] = "fused"
    epochs: float = 1.0
    resample_weight: float = 1.0  # key-data resampling: rows are repeated this many times per epoch (fractional ok)
    max_rows: int = 0  # 0 = all rows


def default_sft_sources() -> list[SFTSource]:
    """The tiny thinking-fusion mix: every domain in both modes, math resampled as the key reasoning data."""
    return [
        SFTSource(name="math", path="{data_dir}/math/train.parquet", mode="fused", epochs=2.0, resample_weight=1.0, max_rows=3000),
        SFTSource(name="math_multiturn", path="{data_dir}/math/train.parquet", mode="multiturn", epochs=1.0, max_rows=400),
        SFTSource(name="code", path="{data_dir}/code/train.parquet", mode="fused", epochs=1.0, max_rows=600),
        SFTSource(name="ifeval", path="{data_dir}/ifeval/train.parquet", mode="fused", epochs=1.0, max_rows=600),
        SFTSource(name="chat", path="{data_dir}/chat/train.parquet", mode="fused", epochs=1.0, max_rows=300),
    ]


@dataclass
class SFTConfig:
    """`mixrl sft RECIPE`: supervised fine-tuning with thinking-mode fusion on packed sequences."""

    run_dir: str = "runs/sft_thinking"
    seed: int = 0
    base_model_path: str = "runs/pretrain_tiny/final"
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    sources: list[SFTSource] = field(default_factory=lambda: default_sft_sources())
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_peak=1e-3, lr_warmup_steps=20))
    train: PackedTrainConfig = field(default_factory=lambda: PackedTrainConfig(max_steps=0, max_minutes=4.0, dtype="auto"))
    distill: DistillConfig = field(default_factory=DistillConfig)
    # thinking-mode fusion on a base model that lacks it (a hub model): add [[BlueThink]], <think>, </think> as
    # tokens (new embedding rows = the mean row) and wrap its chat template so enable_thinking appends the switch.
    # false: such a model fails at start instead (only mode: direct sources then run)
    add_thinking_tokens: bool = True
