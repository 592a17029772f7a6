"""Schemas of the supervised recipes: compact pretraining, SFT with thinking-mode fusion, long-CoT curation.

Each dataclass is the schema of one recipe kind; YAML recipes in `recipes/` override its defaults (see
`core/config.py` for loading, overrides and error messages). Names carry their unit (`_tokens`, `_steps`,
`_rows`) and scope (`train.`, `model.`), as STYLE.md asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.engine import SamplingConfig
from core.sections import Dtype, ModelConfig, OptimConfig, SyntheticDataConfig
from rewards.repetition import RepetitionConfig


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
    # SwiGLU MLPs and RMSNorms that keep fewer activations for backward (`core.lean_ops`): the same training
    lean_activations: bool = True
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
class DepthPruneConfig:
    """Depth pruning: whole decoder layers dropped, by block influence unless named (`sft/pruning.py`)."""

    drop_layers: list[int] = field(default_factory=list)  # explicit 0-based layer indices to drop (then no target_layers)
    target_layers: int = 0  # keep this many layers, dropping the lowest block influence; 0 = no depth pruning


@dataclass
class WidthPruneConfig:
    """Width pruning, the same sizes in every kept layer (config.json holds one size per kind)."""

    target_intermediate_size: int = 0  # MLP channels kept, by mean |act(gate)·up|; 0 = all
    target_key_value_heads: int = 0  # KV groups kept, each with its query heads, by head output norm; 0 = all
    # query heads kept, the same number in each kept KV group (so it must divide by the KV heads kept); 0 = all the
    # kept groups' heads
    target_attention_heads: int = 0


@dataclass
class PruneConfig:
    """`mixrl prune RECIPE`: depth/width pruning of a Hugging Face checkpoint, then logit-alignment distillation
    from the unpruned model (report §2.2.1: 7B -> 3B before distillation)."""

    run_dir: str = "runs/prune_tiny"
    seed: int = 0
    model_path: str = "mixrl/assets/base_tiny"  # the checkpoint to prune (and the teacher unless distill.teacher_path)
    # documents: the train split of every domain here (calibration + distillation), the test split (held-out loss)
    data: SyntheticDataConfig = field(default_factory=lambda: SyntheticDataConfig(
        out_dir="runs/prune_data", train_rows={"math": 4000, "chat": 500}, test_rows_per_domain=200))
    # the text form of the rows, the one the checkpoint was trained on: chat = rendered by its chat template as SFT
    # renders it (assistant turns trained); document = plain pretraining documents (a base model)
    data_format: Literal["chat", "document"] = "chat"
    calibration_rows: int = 32  # packed rows of train.sequence_tokens the importance scores are measured on
    heldout_rows: int = 32  # packed rows of the test split the held-out loss is measured on
    depth: DepthPruneConfig = field(default_factory=DepthPruneConfig)
    width: WidthPruneConfig = field(default_factory=WidthPruneConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_peak=1e-3, lr_warmup_steps=10))
    train: PackedTrainConfig = field(default_factory=lambda: PackedTrainConfig(
        max_steps=150, max_minutes=4.0, sequence_tokens=512, rows_per_step=8, checkpoint_every_steps=0))
    # teacher_path null = the unpruned model_path; kd_weight 0 = plain CE recovery training
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(kd_weight=0.5))


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


# ---- long-CoT curation (report §2.3.3): `mixrl curate RECIPE` ---------------------------------------------------


CANDIDATE_FILTERS = ("incomplete", "garbled", "mixed_language", "repetitive")  # applied in this order


@dataclass
class CurationFilterConfig:
    """Thresholds of the candidate filters (`sft/curation_filters.py`); the report names none, these are ours."""

    disabled: list[str] = field(default_factory=list)  # names from CANDIDATE_FILTERS to skip (answer check stays)
    answer_extractors: list[str] = field(default_factory=lambda: ["boxed"])  # what counts as a final answer
    # garbled: a unit of at most this many tokens repeated at least this many times back to back, anywhere
    loop_max_period_tokens: int = 8
    loop_min_repeats: int = 8
    # mixed language: every line with at least this many letters must be detected (langdetect) as `language`;
    # "" = all such lines must agree with each other (any one language)
    language: str = "en"
    language_min_letters: int = 30
    # repetitive: the GRPO repetition detector itself, with its own thresholds (`rewards.repetition.RepetitionConfig`:
    # n-gram repetition and end loops; its `penalty` is unused here)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)


@dataclass
class DedupConfig:
    """Query decontamination against test splits: MinHash LSH over word n-grams, then a semantic pass."""

    # test splits to protect; globs allowed, "{data_dir}" is the recipe's data.out_dir; each must match a file
    test_paths: list[str] = field(default_factory=lambda: ["{data_dir}/*/test.parquet"])
    ngram_words: int = 3  # shingles: lower-cased word/symbol n-grams (a shorter text is one shingle)
    minhash_threshold: float = 0.7  # estimated Jaccard similarity at or above which a query is a duplicate
    minhash_permutations: int = 128
    embedding_model_path: str = "mixrl/assets/base_tiny"  # "" = no semantic pass
    cosine_threshold: float = 0.9  # mean-pooled last hidden states, cosine at or above which a query is a duplicate
    # embeddings barely see numbers ("Compute 93 + 76" vs "Compute 93 + 77": cosine 0.998 with the tiny model),
    # so a semantic match also needs the same numbers and operator symbols in the same order
    require_same_numbers: bool = True
    embed_batch_texts: int = 64
    embed_max_tokens: int = 256  # a text's first tokens only (test splits hold documents to summarise)


@dataclass
class CurateConfig:
    """`mixrl curate RECIPE`: n thinking-mode candidates per query from a vLLM-served teacher, filtered, verified,
    the shortest correct one kept as an SFT row; queries near-duplicating a test split are dropped first."""

    run_dir: str = "runs/curate_tiny"
    seed: int = 0
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    queries_path: str = "{data_dir}/math/train.parquet"  # verl rows with reward_model.ground_truth
    max_queries: int = 0  # 0 = all (after the difficulty filter, before dedup)
    difficulties: list[int] = field(default_factory=list)  # keep rows whose extra_info.difficulty is listed; [] = all
    teacher_model_path: str = "mixrl/assets/base_tiny"
    dtype: Dtype = "float32"
    max_model_len: int = 512
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(samples_per_prompt=8, max_response_tokens=256))
    filters: CurationFilterConfig = field(default_factory=CurationFilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
