"""GPU check of the trainer side: the real GRPO trainer step (`rl.trainer.PolicyTrainer`) on CUDA, bf16, plain and
FSDP2 (world size 1), on a random-init ~0.5B Qwen2. torch + transformers only (no vLLM), < 5 minutes on one GPU.

Run:
    python bench/gpu_check.py                      # on a GPU machine: prints one JSON object
    python bench/gpu_check.py --tiny --device cpu  # the same code path on a CPU (gloo), a small model, seconds

Per mode: seconds per step (median after the first), trained tokens/s, peak device memory, the loss of each step
(it must fall: the same batch with fixed advantages, so the surrogate improves), every gradient norm finite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def build_model_dir(out: Path, *, tiny: bool, seed: int = 0) -> tuple[Path, int]:
    """A random-init Qwen2 (Qwen2.5-0.5B's shape, or a tiny one) saved in Hugging Face format, with a small trained
    BPE tokenizer (its ids are a subset of the model's vocabulary)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from core.tokenizer import train_tokenizer

    tokenizer = train_tokenizer([f"What is {a} + {b}? {a + b}" for a in range(60) for b in range(60)], vocab_size=400)
    shape = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128,
                  vocab_size=1024) if tiny else
             dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                  vocab_size=151936))
    config = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True, use_sliding_window=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, params


def make_batch(vocab: int, sequences: int, prompt_tokens: int, response_tokens: int, pad_id: int):
    from rl.trainer import build_batch

    g = torch.Generator().manual_seed(1)
    seqs = []
    for i in range(sequences):
        prompt = torch.randint(3, vocab, (prompt_tokens,), generator=g).tolist()
        n = response_tokens - (i % 4) * (response_tokens // 8)  # uneven lengths, as sampled responses are
        response = torch.randint(3, vocab, (n,), generator=g).tolist()
        seqs.append((prompt, response, [-2.0] * n))
    advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(sequences)]
    return build_batch(seqs, advantages, [True] * sequences, pad_id)


def run_mode(model_dir: Path, batch, *, device: str, fsdp: bool, steps: int, dtype: str) -> dict:
    from core.sections import OptimConfig
    from rl.config import AlgoConfig, GRPOTrainerConfig
    from rl.trainer import PolicyTrainer

    cfg = GRPOTrainerConfig(device=device, dtype=dtype, fsdp=fsdp, micro_batch_sequences=8, gradient_checkpointing=not fsdp,
                            optim=OptimConfig(lr_peak=1e-5, lr_warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.0))
    trainer = PolicyTrainer(str(model_dir), cfg, AlgoConfig(kl_coef=0.01), total_steps=steps)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    losses, norms, seconds = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        m = trainer.train_step(batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        losses.append(m["loss"])
        norms.append(m["grad_norm"])
    tokens = float(batch.response_mask.sum())
    step_s = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    out = {"fsdp": fsdp, "device": str(trainer.device), "dtype": dtype, "step_s": round(step_s, 3),
           "trained_tokens_per_s": round(tokens / step_s, 1), "losses": [round(x, 5) for x in losses],
           "grad_norms_finite": all(map(lambda x: x == x and abs(x) != float("inf"), norms)),
           "loss_fell": losses[-1] < losses[0],
           "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    del trainer
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU smoke run)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--response-tokens", type=int, default=384)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, params = build_model_dir(Path(tmp) / "model", tiny=args.tiny)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        batch = make_batch(400, args.sequences, args.prompt_tokens, args.response_tokens, tok.pad_token_id)
        dtype = "bfloat16" if args.device == "cuda" else "float32"
        results = [run_mode(model_dir, batch, device=args.device, fsdp=False, steps=args.steps, dtype=dtype)]
        # FSDP2 over a process group of one (NCCL on CUDA, gloo on CPU): the sharded code path of the trainer
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1)
        try:
            results.append(run_mode(model_dir, batch, device=args.device, fsdp=True, steps=args.steps, dtype=dtype))
        finally:
            dist.destroy_process_group()
    report = {"benchmark": "gpu_check", "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "parameters": params, "sequences": args.sequences,
              "tokens_per_sequence": args.prompt_tokens + args.response_tokens, "modes": results,
              "ok": all(r["grad_norms_finite"] and r["loss_fell"] for r in results),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
