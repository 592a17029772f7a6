"""Schemas of the supervised recipes: compact pretraining, SFT with thinking-mode fusion, and evaluation.

Each dataclass is the schema of one recipe kind; YAML recipes in `recipes/` override its defaults (see
`rl/config.py` for loading, overrides and error messages). Names carry their unit (`_tokens`, `_steps`,
`_rows`) and scope (`train.`, `model.`), as STYLE.md asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Dtype = Literal["float32", "bfloat16"]


@dataclass
class SyntheticDataConfig:
    """Which synthetic datasets to generate (see `sft/data/synthetic.py`)."""

    out_dir: str = "runs/data"
    # rows of the train split per domain (the domains generated are these keys); math gets the most because
    # the tiny model's arithmetic improves with unique problems far more than with repeated epochs
    train_rows: dict[str, int] = field(default_factory=lambda: {"math": 20000, "code": 1500, "ifeval": 1500, "chat": 1000})
    test_rows_per_domain: int = 200
    # per-domain override of test_rows_per_domain: the quickstart's GRPO stage evaluates on one narrow slice of
    # math (level-1 division), which needs a larger test split to hold enough of it
    test_rows: dict[str, int] = field(default_factory=dict)
    seed: int = 0


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the pretraining corpus; special tokens are fixed (`sft/tokenizer.py`)."""

    vocab_size: int = 1024
    min_frequency: int = 2
    training_docs: int = 20000


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
class PackedTrainConfig:
    """Packed-sequence training loop shared by pretraining and SFT."""

    max_steps: int = 600
    max_minutes: float = 0.0  # wall-clock cap on top of max_steps (0 = none), for time-boxed recipes
    sequence_tokens: int = 512  # length of one packed row
    rows_per_step: int = 8  # packed rows per optimizer step
    dtype: Dtype = "float32"
    log_every_steps: int = 20
    num_threads: int = 0  # torch intra-op threads; 0 = all cores
    save_every_steps: int = 100  # training-state checkpoint (weights, optimizer, data order, RNG); 0 = never
    resume: bool = False  # continue from RUN_DIR/checkpoint if one exists (hyperparameters may be overridden)


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
    train: PackedTrainConfig = field(default_factory=lambda: PackedTrainConfig(max_steps=500, max_minutes=3.5, dtype="bfloat16"))
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
    train: PackedTrainConfig = field(default_factory=lambda: PackedTrainConfig(max_steps=0, max_minutes=4.0, dtype="bfloat16"))
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class EvalConfig:
    """`mixrl eval MODEL_DIR`: accuracy per domain and mode, and thinking-switch reliability."""

    model_path: str = "runs/sft_thinking/final"
    out_dir: str = ""  # default: MODEL_DIR/eval
    backend: Literal["vllm", "hf"] = "vllm"
    dtype: Dtype = "float32"
    data_dir: str = "runs/data"
    domains: list[str] = field(default_factory=lambda: ["math", "code", "ifeval"])
    prompts_per_domain: int = 100
    max_response_tokens: int = 256
    thinking_token_budget: int = 0  # vLLM's explicit thinking budget; 0 = none
    multiturn_prompts: int = 50  # held-out two-turn chats probing that only the current turn's token counts
    sandbox_url: str = ""  # code answers run in a local sandbox pool unless a `mixrl serve-sandbox` URL is given
    backend_check_prompts: int = 8  # with backend vllm: also decode these with transformers and compare greedy outputs
    seed: int = 0


@dataclass
class QuickstartConfig:
    """`mixrl quickstart`: data, pretraining, SFT and evaluation on the embedded tiny default."""

    run_root: str = "runs/quickstart"
    # a larger math test split: the GRPO stage is evaluated on its level-1 division prompts (~80 of 4000 rows)
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(data=SyntheticDataConfig(test_rows={"math": 4000})))
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
