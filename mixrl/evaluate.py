"""`mixrl eval`, the evaluation report: accuracy per domain and per thinking mode, and thinking-switch reliability.

Run:
    mixrl eval MODEL_DIR [--recipe recipes/eval_tiny.yaml] [section.key=value ...]

For every held-out prompt of each domain, the model answers twice: with `[[BlueThink]]` at the end of the query
(thinking mode) and without (direct mode). Answers are scored by the same rewards the RL stage uses
(`rewards.compute_score`, its `acc` field). Switch reliability is the share of responses that open `<think>`
exactly when the token was present, over all single-turn prompts and over held-out two-turn chats whose first
turn had the opposite mode (the report: "the token in the current turn alone decides").
Writes MODEL_DIR/eval/results.json, samples.jsonl and accuracy.png.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from core.chat import prompt_context, render_turn
from core.data import load_rows
from core.generate import generate_hf, generate_vllm, make_vllm_engine
from core.model import load_checkpoint
from core.tokenizer import THINK_OPEN
from mixrl.config import EvalConfig
from rewards.verdict import score_response


def opens_thinking(response: str) -> bool:
    """Whether a response starts with a think block (leading whitespace ignored)."""
    return response.lstrip().startswith(THINK_OPEN)


def install_reward_router(cfg: EvalConfig) -> None:
    """Give `rewards.compute_score` a sandbox client so code answers are run against their tests."""
    if "code" not in cfg.domains:
        return
    from rewards import RewardRouter, set_default_router
    from rewards.code import make_code_client

    set_default_router(RewardRouter(code_client=make_code_client(sandbox_url=cfg.sandbox_url or None)))


def eval_prompts(rows_by_domain: dict[str, list[dict]], tokenizer, multiturn: int) -> list[dict]:
    """Every (row, mode) item to generate, with its prompt token ids."""
    items = []
    for domain, rows in rows_by_domain.items():
        for row in rows:
            for think in (True, False):
                messages = prompt_context(row) + [render_turn(row, think)[0]]
                items.append({"domain": domain, "row": row, "think": think, "kind": "single", "messages": messages})
    # Two-turn probes: first turn answered (reference) in one mode, second turn asks in the other.
    flat = [r for rows in rows_by_domain.values() for r in rows]
    for i in range(min(multiturn, len(flat))):
        first, second = flat[i], flat[(i + 1) % len(flat)]
        think = i % 2 == 0
        messages = render_turn(first, not think) + [render_turn(second, think)[0]]
        items.append({"domain": "multiturn", "row": second, "think": think, "kind": "multiturn", "messages": messages})
    for item in items:
        item["prompt_ids"] = tokenizer.apply_chat_template(item["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
    return items


def summarise(items: list[dict]) -> dict:
    """Accuracy per domain and mode, and switch reliability (single-turn, multi-turn, overall)."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    unscored: dict[str, int] = defaultdict(int)
    switch: dict[str, list[bool]] = defaultdict(list)
    for item in items:
        mode = "think" if item["think"] else "direct"
        switch[item["kind"]].append(opens_thinking(item["response"]) == item["think"])
        if item["kind"] != "single":
            continue
        if item["score"] is None:
            unscored[f"{item['domain']}/{mode}"] += 1
        else:
            acc[item["domain"]][mode].append(item["score"])
    accuracy = {d: {m: round(sum(v) / len(v), 4) for m, v in modes.items()} for d, modes in acc.items()}
    all_switch = [ok for oks in switch.values() for ok in oks]
    return {
        "accuracy": accuracy,
        "scored": {d: {m: len(v) for m, v in modes.items()} for d, modes in acc.items()},
        "unscored": dict(unscored),
        "switch_reliability": {
            **{k: round(sum(v) / len(v), 4) for k, v in switch.items()},
            "overall": round(sum(all_switch) / max(1, len(all_switch)), 4),
        },
        "responses": len(items),
    }


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate the model at `cfg.model_path` on the held-out splits; returns and writes the results."""
    t0 = time.perf_counter()
    out_dir = Path(cfg.out_dir or Path(cfg.model_path) / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_by_domain = {d: load_rows(Path(cfg.data_dir) / d / "test.parquet")[: cfg.prompts_per_domain] for d in cfg.domains}
    model, tokenizer = load_checkpoint(cfg.model_path, dtype=cfg.dtype)
    items = eval_prompts(rows_by_domain, tokenizer, cfg.multiturn_prompts)
    prompt_ids = [it["prompt_ids"] for it in items]
    print(f"[eval] {len(items)} prompts ({', '.join(cfg.domains)} x think/direct + multi-turn) with {cfg.backend}", flush=True)
    if cfg.backend == "vllm":
        engine = make_vllm_engine(cfg.model_path, dtype=cfg.dtype, seed=cfg.seed)
        responses = generate_vllm(engine, prompt_ids, max_tokens=cfg.max_response_tokens, thinking_token_budget=cfg.thinking_token_budget)
        del engine
        agreement = backend_agreement(model, tokenizer, prompt_ids[: cfg.backend_check_prompts], responses, cfg)
    else:
        responses = generate_hf(model, tokenizer, prompt_ids, max_tokens=cfg.max_response_tokens)
        agreement = None
    install_reward_router(cfg)
    for item, response in zip(items, responses):
        item["response"] = response
        item["score"] = score_response(item["row"], response) if item["kind"] == "single" else None
    results = summarise(items)
    results.update({"model_path": cfg.model_path, "backend": cfg.backend, "vllm_hf_greedy_agreement": agreement,
                    "seconds": round(time.perf_counter() - t0, 1)})
    with open(out_dir / "samples.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps({k: item[k] for k in ("domain", "kind", "think", "score", "response")} | {"prompt": item["messages"][-1]["content"]}) + "\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    plot_accuracy(results, out_dir / "accuracy.png")
    print(f"[eval] {json.dumps(results)}", flush=True)
    return results


def backend_agreement(model, tokenizer, prompt_ids: list[list[int]], vllm_texts: list[str], cfg: EvalConfig) -> float | None:
    """Share of prompts whose greedy vLLM output equals transformers' greedy output from the same weights.

    A bf16 engine may legitimately differ from fp32 transformers on near-ties; compare with dtype float32.
    Skipped (None) when the thinking budget is on, since transformers has no such control.
    """
    if not prompt_ids or cfg.thinking_token_budget:
        return None
    hf_texts = generate_hf(model, tokenizer, prompt_ids, max_tokens=cfg.max_response_tokens)
    same = [a == b for a, b in zip(hf_texts, vllm_texts)]
    for i, ok in enumerate(same):
        if not ok:
            print(f"[eval] vLLM and transformers differ on prompt {i}:\n  vllm: {vllm_texts[i]!r}\n  hf:   {hf_texts[i]!r}", flush=True)
    return round(sum(same) / len(same), 4)


def plot_accuracy(results: dict, path: Path) -> None:
    """Grouped bars: accuracy per domain in thinking and direct mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted(results["accuracy"])
    if not domains:
        return
    fig, ax = plt.subplots(figsize=(1.8 * len(domains) + 2, 3.2))
    for offset, mode in ((-0.2, "think"), (0.2, "direct")):
        values = [results["accuracy"][d].get(mode, 0.0) for d in domains]
        ax.bar([i + offset for i in range(len(domains))], values, width=0.4, label=mode)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"switch reliability {results['switch_reliability']['overall']:.1%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
