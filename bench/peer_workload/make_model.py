# Copied from shared/peers/make_model.py (the project's peer-baseline harness, documented in shared/peers/README.md),
# so that bench/vs_trl.py runs in a clone without ../shared. Changes from the original are marked 'bench:'.
"""Make deterministic random-init Qwen2 checkpoints (HF format) for the peer-baseline benchmarks.

    $VLLM_VENV/bin/python peers/make_model.py --out $PEERS_HOME/models            # tiny, small, medium
    $VLLM_VENV/bin/python peers/make_model.py --out $PEERS_HOME/models --sizes tiny --seed 1

What it writes, per size, in OUT/<size>/:
  config.json, generation_config.json, model.safetensors (fp32), tokenizer.json, tokenizer_config.json
  (with a Qwen-style chat template), manifest.json (parameter counts, seeds, sha256 of every weight tensor).

The tokenizer is a byte-level BPE (vocab 1024, HF `tokenizers`) trained on a seeded synthetic arithmetic
corpus; the same tokenizer is shared by all sizes. Weights are random (transformers' own init under
torch.manual_seed), NOT trained: the models emit near-uniform random tokens, so they are for systems
benchmarks (throughput, memory, step time), never for quality. Re-running with the same seed reproduces
the same tokenizer and the same weight hashes on the same torch/transformers versions (checked: see
manifest.json "weights_sha256").

Special tokens follow Qwen2.5-Instruct: eos = <|im_end|>, pad = <|endoftext|>, no BOS.
Runs under any venv with torch + transformers>=5 + tokenizers (e.g. $VLLM_VENV or $TRL_VENV).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
PEERS_HOME = os.environ.get("PEERS_HOME", os.path.abspath(".peers"))  # models, data, outputs, caches

SPECIAL_TOKENS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen-style ChatML template (no default system prompt, so prompts stay short and identical across toolkits).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# name -> (hidden, intermediate, layers, attention heads, kv heads). Param counts with vocab 1024, tied embeddings:
# tiny ~0.43M, small ~9.8M, medium ~76M (printed and stored in manifest.json).
SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2),
    "medium": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4),
}

PROMPT_TEMPLATE = "Compute {a}{op}{b}. Put the final answer in \\boxed{{}}."


def arith_corpus(n: int, seed: int) -> list[str]:
    """Seeded synthetic arithmetic text (user prompts and worked answers), special tokens excluded."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        op = rng.choice("+-*")
        hi = 99 if op == "*" else 999
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        c = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append("user\n" + PROMPT_TEMPLATE.format(a=a, op=op, b=b))
        lines.append(f"assistant\n{a}{op}{b}={c}. The answer is \\boxed{{{c}}}.")
    return lines


def train_tokenizer(vocab_size: int, seed: int, corpus_lines: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(arith_corpus(corpus_lines, seed), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=1024,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def make_one(size: str, tok: PreTrainedTokenizerFast, out: str, seed: int, max_pos: int) -> dict:
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = Qwen2Config(
        vocab_size=len(tok),
        max_position_embeddings=max_pos,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        pad_token_id=endoftext,
        **SIZES[size],
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext
    )
    d = os.path.join(out, size)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    n_emb = model.get_input_embeddings().weight.numel()
    manifest = {
        "size": size,
        "params": n_params,
        "params_non_embedding": n_params - n_emb,
        "vocab_size": len(tok),
        "seed": seed,
        "arch": "Qwen2ForCausalLM",
        **SIZES[size],
        "max_position_embeddings": max_pos,
        "tie_word_embeddings": True,
        "weights": "random init (untrained)",
        "weights_sha256": weights_sha256(model),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(PEERS_HOME, "models"))
    ap.add_argument("--sizes", default="tiny,small,medium", help="comma list from: " + ",".join(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--corpus-lines", type=int, default=20000, help="arithmetic examples for BPE training")
    ap.add_argument("--max-position-embeddings", type=int, default=1024)
    args = ap.parse_args()

    t0 = time.time()
    tok = train_tokenizer(args.vocab_size, args.seed, args.corpus_lines)
    for size in args.sizes.split(","):
        m = make_one(size, tok, args.out, args.seed, args.max_position_embeddings)
        print(json.dumps({k: m[k] for k in ("size", "params", "params_non_embedding", "vocab_size", "weights_sha256")}))
    print(json.dumps({"out": args.out, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
