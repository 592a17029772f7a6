"""Model factory (a tiny Qwen2-architecture decoder) and saving/loading in Hugging Face format.

The saved folder (weights as safetensors, config, generation config, tokenizer with chat template) is what
vLLM and transformers both load, like any hub model; real users point recipes at hub models instead.

    model = build_model(ModelConfig(), tokenizer)
    save_checkpoint(model, tokenizer, "runs/x/final")
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as transformers_logging

from core.sections import ModelConfig
from core.tokenizer import ENDOFTEXT, IM_END, single_token_id

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_model(cfg: ModelConfig, tokenizer, *, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 decoder sized by `cfg`, vocabulary from `tokenizer`."""
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"model.hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_attention_heads}")
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError("model.num_attention_heads must be a multiple of model.num_key_value_heads")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=single_token_id(tokenizer, IM_END),
        pad_token_id=single_token_id(tokenizer, ENDOFTEXT),
        use_sliding_window=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = generation_config(tokenizer)
    return model


def generation_config(tokenizer) -> GenerationConfig:
    """Stop at end of turn or end of text; greedy by default (sampling settings come from recipes)."""
    return GenerationConfig(
        eos_token_id=[single_token_id(tokenizer, IM_END), single_token_id(tokenizer, ENDOFTEXT)],
        pad_token_id=single_token_id(tokenizer, ENDOFTEXT),
        do_sample=False,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_checkpoint(model, tokenizer, path: str | Path) -> Path:
    """Save weights, config, generation config and tokenizer (with chat template) in Hugging Face format."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_checkpoint(path: str | Path, *, dtype: str = "float32"):
    """Load (model, tokenizer) from a Hugging Face folder or hub id (no per-tensor progress bar unless verbose)."""
    from core.quiet_logs import verbose

    if not verbose():
        transformers_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=TORCH_DTYPES[dtype])
    return model, tokenizer
