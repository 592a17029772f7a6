"""Batch generation for evaluation and curation: vLLM (the fast path) or transformers (no engine start-up).

Prompts are token ids (already rendered by the chat template), so both backends see exactly the same input.
vLLM's engine core is a spawned process: call `generate_vllm` from under `if __name__ == "__main__":` (the
`mixrl` console script is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.quiet_logs import quiet_vllm_logging, verbose
from core.tokenizer import THINK_CLOSE, THINK_OPEN


def make_vllm_engine(model_path: str, *, dtype: str = "float32", max_model_len: int = 1024, seed: int = 0,
                     kv_cache_gib: float = 1.0, enable_thinking_budget: bool = True):
    """A vLLM offline engine sized for tiny models on CPU (KV cache allocated up front: keep it small).

    With `enable_thinking_budget`, the reasoning config names our `<think>`/`</think>` strings so that
    `SamplingParams.thinking_token_budget` can force the end of thinking.
    """
    quiet_vllm_logging()  # before vllm's first import in this process
    from vllm import LLM
    from vllm.config import ReasoningConfig

    kwargs = {}
    if enable_thinking_budget:
        kwargs["reasoning_config"] = ReasoningConfig(reasoning_start_str=THINK_OPEN, reasoning_end_str=f"\n{THINK_CLOSE}\n\n")
    if not torch.cuda.is_available():
        # vLLM 0.32's CPU runner crashes on a seeded request whose prefill is split ("CPU Generator does not use
        # offset"), and sampled evaluation (mean@k, pass@k) seeds every request: no chunked prefill on CPU
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(8192, max_model_len),
                      kv_cache_memory_bytes=int(kv_cache_gib * 2**30))
    from core.device import resolve_dtype

    return LLM(
        model=model_path,
        use_tqdm_on_load=verbose(),
        dtype=resolve_dtype(dtype, "cuda" if torch.cuda.is_available() else "cpu"),
        max_model_len=max_model_len,
        seed=seed,
        enforce_eager=not torch.cuda.is_available(),
        **kwargs,
    )


@dataclass(frozen=True)
class Completion:
    """One generated response: decoded text and its length in tokens."""

    text: str
    num_tokens: int


def sample_vllm(engine, prompt_ids: list[list[int]], *, max_tokens: int, samples_per_prompt: int = 1,
                temperature: float = 0.0, top_p: float = 1.0, thinking_token_budget: int = 0,
                seed: int = 0) -> list[list[Completion]]:
    """`samples_per_prompt` completions of each token-id prompt (greedy at temperature 0), with token counts."""
    from vllm import SamplingParams

    from core.engine import response_text

    params = SamplingParams(
        n=samples_per_prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        detokenize=False,  # decoded once per completion below, not token by token
        thinking_token_budget=thinking_token_budget or None,
    )
    outputs = engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=verbose())
    tokenizer = engine.get_tokenizer()
    return [[Completion(response_text(tokenizer, c), len(c.token_ids)) for c in o.outputs] for o in outputs]


def generate_vllm(engine, prompt_ids: list[list[int]], *, max_tokens: int, temperature: float = 0.0,
                  thinking_token_budget: int = 0, seed: int = 0) -> list[str]:
    """Greedy (or sampled) completions of token-id prompts with a vLLM engine; returns decoded texts."""
    groups = sample_vllm(engine, prompt_ids, max_tokens=max_tokens, temperature=temperature,
                         thinking_token_budget=thinking_token_budget, seed=seed)
    return [g[0].text for g in groups]


@torch.no_grad()
def generate_hf(model, tokenizer, prompt_ids: list[list[int]], *, max_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy completions with transformers `generate` (left padding), decoded like vLLM does."""
    import copy

    model.eval()
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.do_sample = max_tokens, False
    pad = tokenizer.pad_token_id
    texts: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
        for row in out[:, width:].tolist():
            texts.append(tokenizer.decode(_until_eos(row, model.generation_config.eos_token_id), skip_special_tokens=True))
    return texts


def _until_eos(ids: list[int], eos) -> list[int]:
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i]
    return ids
