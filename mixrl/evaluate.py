"""`mixrl eval`, the evaluation report: accuracy, mean@k and pass@k per data source and thinking mode, thinking-budget sweeps, and thinking-switch reliability.

Run:
    mixrl eval MODEL_DIR [--recipe recipes/eval_tiny.yaml] [key=value ...]
    mixrl eval MODEL_DIR --data runs/bench/gsm8k.parquet --data runs/bench/humaneval.parquet --samples 8 \\
        --budgets 32,64,128 --modes think,direct
    mixrl eval none --data runs/bench/humaneval.parquet --backend reference     # the references pass their checkers

What is evaluated: the held-out splits of the synthetic domains (`domains`, under `data_dir`) and any verl-schema
datasets (`datasets`, e.g. written by `mixrl data import`: GSM8K, MATH, multiple-choice STEM, IFEval,
HumanEval/MBPP). Synthetic rows are reported per domain, imported rows per `data_source`. Every prompt is
rendered by the model's own chat template (`core.chat.render_prompt`; thinking mode through `enable_thinking`,
refused at start on a template that cannot express it) in each of `modes`, and answered greedily; with
`samples_per_prompt` k > 1 also k times at `temperature`. Answers are scored by the reward router the RL stage
uses (`rewards.verdict.score_response`: the answer verdict `acc`, code run in the sandbox); an answer that cannot
be scored is counted as unscored, never as wrong.

Metrics per source and mode: greedy accuracy, mean@k (mean correctness of the k samples), unbiased pass@k
(Chen et al. 2021: 1 - C(n-c, k)/C(n, k) per prompt, n samples, c correct), mean response length in tokens.
`thinking_budgets` sweeps vLLM's `thinking_token_budget` in thinking mode: greedy accuracy and mean length per
budget (the report's Figure 5 shape). Switch reliability is the share of greedy responses that open `<think>`
exactly when thinking mode was on, over single-turn prompts and two-turn chats whose first turn had the opposite
mode ("the token in the current turn alone decides").
Writes OUT_DIR/results.json, samples.jsonl, accuracy.png and (with a sweep) budget_sweep.png.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.chat import prompt_context, render_prompt, render_turn, require_thinking_switch, user_turn
from core.config import ConfigError
from core.data import DataError, load_rows
from core.tokenizer import THINK_OPEN
from mixrl.config import EvalConfig
from rewards.verdict import score_response


def opens_thinking(response: str) -> bool:
    """Whether a response starts with a think block (leading whitespace ignored)."""
    return response.lstrip().startswith(THINK_OPEN)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with `c` correct among `n` samples (Chen et al. 2021), as the stable product
    1 - prod_{i=n-c+1}^{n} (1 - k/i) instead of binomials that overflow.

    >>> pass_at_k(2, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 3), pass_at_k(5, 3, 3)
    (0.5, 0.5, 0.0, 1.0)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n.

    >>> ks_for(1), ks_for(8), ks_for(10)
    ([1], [1, 2, 4, 8], [1, 2, 4, 8, 10])
    """
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


# ---- what to evaluate ----------------------------------------------------------------------------------------


def load_eval_rows(cfg: EvalConfig) -> dict[str, list[dict]]:
    """Rows per report group: each synthetic domain's held-out split, then each dataset's rows per data_source."""
    limit = cfg.prompts_per_domain or None
    groups: dict[str, list[dict]] = {d: load_rows(Path(cfg.data_dir) / d / "test.parquet")[:limit] for d in cfg.domains}
    for path in cfg.datasets:
        rows = load_rows(path)[:limit]
        if not rows:
            raise DataError(f"{path}: no rows")
        for i, row in enumerate(rows):
            if cfg.backend == "reference" and not isinstance((row.get("extra_info") or {}).get("response"), str):
                raise DataError(f"{path}: row {i}: backend reference scores extra_info.response, which this row lacks")
            groups.setdefault(row["data_source"], []).append(row)
    return groups


def install_reward_router(cfg: EvalConfig, rows_by_group: dict[str, list[dict]]) -> None:
    """Give `rewards.compute_score` a sandbox client when any row is scored by running code."""
    from rewards import RewardRouter, set_default_router
    from rewards.code import make_code_client
    from rewards.config import RewardConfig, UnknownRouteError

    config = RewardConfig()

    def is_code(row: dict) -> bool:
        try:
            return config.domains[config.resolve(row["data_source"], row.get("ability"))].pipeline == "code"
        except UnknownRouteError:
            return False

    if any(is_code(r) for rows in rows_by_group.values() for r in rows):
        set_default_router(RewardRouter(code_client=make_code_client(sandbox_url=cfg.sandbox_url or None)))


def eval_prompts(rows_by_domain: dict[str, list[dict]], tokenizer, multiturn: int,
                 modes: tuple[str, ...] = ("think", "direct")) -> list[dict]:
    """Every greedy (row, mode) item to generate, with its prompt token ids (none without a tokenizer), and the
    two-turn probes (first turn answered by the reference in one mode, second turn asked in the other)."""
    items = []
    for domain, rows in rows_by_domain.items():
        for row in rows:
            for mode in modes:
                messages = prompt_context(row) + [user_turn(row, False)]
                items.append({"domain": domain, "row": row, "think": mode == "think", "kind": "single", "messages": messages})
    if set(modes) == {"think", "direct"}:
        flat = [r for rows in rows_by_domain.values() for r in rows if isinstance((r.get("extra_info") or {}).get("response"), str)]
        for i in range(min(multiturn, len(flat))):
            first, second = flat[i], flat[(i + 1) % len(flat)]
            think = i % 2 == 0
            messages = render_turn(first, not think) + [user_turn(second, False)]
            items.append({"domain": "multiturn", "row": second, "think": think, "kind": "multiturn", "messages": messages})
    if tokenizer is not None:
        for item in items:
            item["prompt_ids"] = render_prompt(tokenizer, item["messages"], item["think"])
    return items


# ---- scoring and summaries -----------------------------------------------------------------------------------


def score_all(rows: list[dict], responses: list[str]) -> list[float | None]:
    """Answer verdicts of many responses, concurrently (code runs in the sandbox pool)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(score_response, rows, responses))


def score_extra(items: list[dict]) -> None:
    """Score the sampled responses (`samples`: a list) and the budget sweep's (`budgets`: budget -> answer) in
    place: each (text, tokens) becomes (text, tokens, score)."""
    slots = [(it[key], k) for it in items for key in ("samples", "budgets") if key in it
             for k in (range(len(it[key])) if key == "samples" else list(it[key]))]
    rows = [it["row"] for it in items for key in ("samples", "budgets") if key in it for _ in it[key]]
    scores = score_all(rows, [holder[k][0] for holder, k in slots])
    for (holder, k), score in zip(slots, scores):
        holder[k] = (*holder[k][:2], score)


def summarise(items: list[dict]) -> dict:
    """Greedy accuracy per domain and mode, and switch reliability (single-turn, multi-turn, overall)."""
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


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def benchmark_metrics(items: list[dict]) -> dict:
    """{group: {mode: greedy_accuracy, mean_at_k, pass_at_k {k: value}, samples_per_prompt, mean_response_tokens,
    prompts, unscored}} over the single-turn items (`samples` on an item: its k sampled (text, tokens, score))."""
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for item in items:
        if item["kind"] == "single":
            by[(item["domain"], "think" if item["think"] else "direct")].append(item)
    out: dict[str, dict] = defaultdict(dict)
    for (group, mode), its in by.items():
        greedy = [it["score"] for it in its if it["score"] is not None]
        entry = {"prompts": len(its), "unscored": len(its) - len(greedy), "greedy_accuracy": _mean(greedy),
                 "mean_response_tokens": _mean([float(it["response_tokens"]) for it in its if it["response_tokens"] is not None])}
        # n and c per prompt: the k samples when drawn, else the greedy answer alone (pass@1 = accuracy)
        counts = []
        for it in its:
            scores = [s for _, _, s in it["samples"]] if it.get("samples") else [it["score"]]
            scored = [s for s in scores if s is not None]
            if scored:
                counts.append((len(scored), sum(1 for s in scored if s >= 1.0)))
        n = min((c[0] for c in counts), default=0)
        entry["samples_per_prompt"] = len(its[0]["samples"]) if its[0].get("samples") else 1
        entry["mean_at_k"] = _mean([c / m for m, c in counts])
        entry["pass_at_k"] = {str(k): _mean([pass_at_k(m, c, k) for m, c in counts]) for k in ks_for(n)} if n else {}
        if its[0].get("samples"):
            entry["mean_sample_tokens"] = _mean([float(t) for it in its for _, t, _ in it["samples"]])
        out[group][mode] = entry
    return dict(out)


def budget_metrics(items: list[dict]) -> dict:
    """{group: {budget: accuracy, mean_response_tokens, prompts}} of the thinking-budget sweep."""
    by: dict[tuple[str, int], list[tuple[str, int, float | None]]] = defaultdict(list)
    for item in items:
        for budget, answer in item.get("budgets", {}).items():
            by[(item["domain"], budget)].append(answer)
    out: dict[str, dict] = defaultdict(dict)
    for (group, budget), answers in sorted(by.items()):
        scored = [s for _, _, s in answers if s is not None]
        out[group][str(budget)] = {"accuracy": _mean(scored), "mean_response_tokens": _mean([float(t) for _, t, _ in answers]),
                                   "prompts": len(answers)}
    return dict(out)


# ---- the run -------------------------------------------------------------------------------------------------


def check_config(cfg: EvalConfig) -> None:
    """Settings that cannot work together fail before any model is loaded."""
    if not cfg.modes:
        raise ConfigError("modes: give at least one of think, direct")
    if cfg.backend != "vllm" and (cfg.samples_per_prompt > 1 or cfg.thinking_budgets or cfg.thinking_token_budget):
        raise ConfigError(f"samples_per_prompt > 1 and thinking budgets need backend vllm (backend is {cfg.backend})")
    if cfg.thinking_budgets and "think" not in cfg.modes:
        raise ConfigError("thinking_budgets sweep thinking mode: add think to modes")


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate the model at `cfg.model_path` on the held-out splits and datasets; returns and writes the results."""
    t0 = time.perf_counter()
    check_config(cfg)
    out_dir = Path(cfg.out_dir or Path(cfg.model_path) / "eval")
    rows_by_group = load_eval_rows(cfg)
    if cfg.backend == "reference":
        items = eval_prompts(rows_by_group, None, 0, ("direct",))
        for item in items:
            item["response"] = item["row"]["extra_info"]["response"]
            item["response_tokens"] = None  # no tokenizer involved
        agreement, skipped = None, 0
    else:
        items, agreement, skipped = generate(cfg, rows_by_group)
    print(f"[eval] scoring {len(items)} greedy responses over {', '.join(rows_by_group)}", flush=True)
    install_reward_router(cfg, rows_by_group)
    for item, score in zip(items, score_all([it["row"] for it in items], [it["response"] for it in items])):
        item["score"] = score if item["kind"] == "single" else None
    score_extra(items)
    results = summarise(items)
    results.update({
        "benchmarks": benchmark_metrics(items),
        "model_path": cfg.model_path, "backend": cfg.backend,
        "modes": ["direct"] if cfg.backend == "reference" else list(cfg.modes),
        "vllm_hf_greedy_agreement": agreement, "skipped_long_prompts": skipped,
    })
    if cfg.thinking_budgets:
        results["budget_sweep"] = budget_metrics(items)
    results["responses"] = write_samples(items, out_dir / "samples.jsonl")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    plot_accuracy(results, out_dir / "accuracy.png")
    if cfg.thinking_budgets:
        plot_budget_sweep(results["budget_sweep"], out_dir / "budget_sweep.png")
    print(eval_line(results, out_dir / "results.json"), flush=True)
    print(format_benchmarks(results["benchmarks"]), flush=True)
    return results


def generate(cfg: EvalConfig, rows_by_group: dict[str, list[dict]]) -> tuple[list[dict], float | None, int]:
    """Greedy responses (and samples, and the budget sweep) of every item; returns (items, vLLM/HF agreement,
    prompts skipped for not fitting max_model_len)."""
    from core.generate import generate_hf, make_vllm_engine, sample_vllm
    from core.model import load_checkpoint
    from core.thinking import missing_control_tokens

    model, tokenizer = load_checkpoint(cfg.model_path, dtype=cfg.dtype)
    if "think" in cfg.modes:
        require_thinking_switch(tokenizer, "mixrl eval with think in modes")
    has_think_tokens = not missing_control_tokens(tokenizer)
    if (cfg.thinking_budgets or cfg.thinking_token_budget) and not has_think_tokens:
        raise ConfigError(f"a thinking budget needs <think> and </think> in the tokenizer of {cfg.model_path}")
    items = eval_prompts(rows_by_group, tokenizer, cfg.multiturn_prompts, tuple(cfg.modes))
    room = cfg.max_model_len - cfg.max_response_tokens
    skipped = sum(len(it["prompt_ids"]) > room for it in items) if cfg.backend == "vllm" else 0
    if skipped:
        print(f"[eval] skipping {skipped} prompts longer than max_model_len - max_response_tokens = {room} tokens", flush=True)
        items = [it for it in items if len(it["prompt_ids"]) <= room]
    prompt_ids = [it["prompt_ids"] for it in items]
    print(f"[eval] {len(items)} greedy prompts ({', '.join(rows_by_group)} x {'/'.join(cfg.modes)} + multi-turn) "
          f"with {cfg.backend}", flush=True)
    if cfg.backend == "hf":
        texts = generate_hf(model, tokenizer, prompt_ids, max_tokens=cfg.max_response_tokens)
        for it, text in zip(items, texts):
            it["response"], it["response_tokens"] = text, len(tokenizer.encode(text, add_special_tokens=False))
        return items, None, skipped
    engine = make_vllm_engine(cfg.model_path, dtype=cfg.dtype, seed=cfg.seed, max_model_len=cfg.max_model_len,
                              enable_thinking_budget=has_think_tokens)
    for it, (c,) in zip(items, sample_vllm(engine, prompt_ids, max_tokens=cfg.max_response_tokens,
                                           thinking_token_budget=cfg.thinking_token_budget, seed=cfg.seed)):
        it["response"], it["response_tokens"] = c.text, c.num_tokens
    single = [it for it in items if it["kind"] == "single"]
    if cfg.samples_per_prompt > 1:
        groups = sample_vllm(engine, [it["prompt_ids"] for it in single], max_tokens=cfg.max_response_tokens,
                             samples_per_prompt=cfg.samples_per_prompt, temperature=cfg.temperature, top_p=cfg.top_p,
                             thinking_token_budget=cfg.thinking_token_budget, seed=cfg.seed)
        for it, group in zip(single, groups):
            it["samples"] = [(c.text, c.num_tokens) for c in group]
    thinking = [it for it in single if it["think"]]
    for budget in cfg.thinking_budgets:
        outs = sample_vllm(engine, [it["prompt_ids"] for it in thinking], max_tokens=cfg.max_response_tokens,
                           thinking_token_budget=budget, seed=cfg.seed)
        for it, (c,) in zip(thinking, outs):
            it.setdefault("budgets", {})[budget] = (c.text, c.num_tokens)
    del engine
    agreement = backend_agreement(model, tokenizer, prompt_ids[: cfg.backend_check_prompts],
                                  [it["response"] for it in items], cfg)
    return items, agreement, skipped


def write_samples(items: list[dict], path: Path) -> int:
    """One JSON line per scored response (greedy, sampled, per budget); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w") as f:
        for item in items:
            base = {"domain": item["domain"], "data_source": item["row"]["data_source"], "kind": item["kind"],
                    "think": item["think"], "prompt": item["messages"][-1]["content"]}
            lines = [base | {"score": item["score"], "response": item["response"], "response_tokens": item["response_tokens"]}]
            lines += [base | {"kind": "sample", "sample": k, "score": s, "response": t, "response_tokens": n_tok}
                      for k, (t, n_tok, s) in enumerate(item.get("samples", []))]
            lines += [base | {"kind": "budget", "budget": b, "score": s, "response": t, "response_tokens": n_tok}
                      for b, (t, n_tok, s) in item.get("budgets", {}).items()]
            for line in lines:
                f.write(json.dumps(line) + "\n")
            n += len(lines)
    return n


def backend_agreement(model, tokenizer, prompt_ids: list[list[int]], vllm_texts: list[str], cfg: EvalConfig) -> float | None:
    """Share of prompts whose greedy vLLM output equals transformers' greedy output from the same weights.

    A bf16 engine may legitimately differ from fp32 transformers on near-ties; compare with dtype float32.
    Skipped (None) when the thinking budget is on, since transformers has no such control.
    """
    from core.generate import generate_hf

    if not prompt_ids or cfg.thinking_token_budget:
        return None
    hf_texts = generate_hf(model, tokenizer, prompt_ids, max_tokens=cfg.max_response_tokens)
    same = [a == b for a, b in zip(hf_texts, vllm_texts)]
    for i, ok in enumerate(same):
        if not ok:
            print(f"[eval] vLLM and transformers differ on prompt {i}:\n  vllm: {vllm_texts[i]!r}\n  hf:   {hf_texts[i]!r}", flush=True)
    return round(sum(same) / len(same), 4)


def eval_line(results: dict, path: Path) -> str:
    """The console's one line of an evaluation (every figure is in `path`).

    >>> eval_line({"accuracy": {"math": {"think": 0.08, "direct": 0.05}}, "switch_reliability": {"overall": 0.9938},
    ...            "vllm_hf_greedy_agreement": 1.0, "responses": 650, "seconds": 47.9}, Path("eval/results.json"))
    '[eval] math think 8.0% direct 5.0% | switch 99.4% | vLLM = transformers 100% | 650 responses in 47.9 s -> eval/results.json'
    """
    parts = [f"{domain} " + " ".join(f"{mode} {acc * 100:.1f}%" for mode, acc in modes.items())
             for domain, modes in results.get("accuracy", {}).items()]
    switch = (results.get("switch_reliability") or {}).get("overall")
    if switch is not None:
        parts.append(f"switch {switch * 100:.1f}%")
    if results.get("vllm_hf_greedy_agreement") is not None:
        parts.append(f"vLLM = transformers {results['vllm_hf_greedy_agreement'] * 100:.0f}%")
    return (f"[eval] {' | '.join(parts)} | {results.get('responses', 0)} responses in {results.get('seconds', 0)} s "
            f"-> {path}")


def format_benchmarks(benchmarks: dict) -> str:
    """A text table: per source and mode, greedy accuracy, mean@k, pass@k and mean response length."""
    lines = [f"{'source':<32}{'mode':<8}{'greedy':>8}{'mean@k':>8}  pass@k{'':<18}{'tokens':>8}"]
    for group, modes in sorted(benchmarks.items()):
        for mode, m in sorted(modes.items()):
            passk = " ".join(f"@{k}={v:.2f}" for k, v in m["pass_at_k"].items() if v is not None)
            lines.append(f"{group[:31]:<32}{mode:<8}{_fmt(m['greedy_accuracy']):>8}{_fmt(m['mean_at_k']):>8}  "
                         f"{passk:<24}{_fmt(m['mean_response_tokens'], '.0f'):>8}")
    return "\n".join(lines)


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def plot_accuracy(results: dict, path: Path) -> None:
    """Grouped bars: accuracy per domain (or data source) in thinking and direct mode."""
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
    ax.set_xticks(range(len(domains)), [d[-24:] for d in domains])
    ax.set_ylim(0, 1)
    ax.set_ylabel("greedy accuracy")
    ax.set_title(f"switch reliability {results['switch_reliability']['overall']:.1%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_budget_sweep(sweep: dict, path: Path) -> None:
    """Accuracy (solid) and mean response length (dashed, right axis) against the thinking budget, per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    length_ax = ax.twinx()
    for group, budgets in sorted(sweep.items()):
        xs = sorted(int(b) for b in budgets)
        line, = ax.plot(xs, [budgets[str(x)]["accuracy"] or 0.0 for x in xs], marker="o", label=group[-24:])
        length_ax.plot(xs, [budgets[str(x)]["mean_response_tokens"] or 0.0 for x in xs], linestyle="--",
                       color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("greedy accuracy (solid)")
    length_ax.set_ylabel("mean response tokens (dashed)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
