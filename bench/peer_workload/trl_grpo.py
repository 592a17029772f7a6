# Copied from shared/peers/trl_grpo.py (the project's peer-baseline harness, documented in shared/peers/README.md),
# so that bench/vs_trl.py runs in a clone without ../shared. Changes from the original are marked 'bench:'.
"""TRL GRPOTrainer on CPU: the peer baseline for a GRPO step (generate -> reward -> advantages -> update).

    $TRL_VENV/bin/python peers/trl_grpo.py --model $PEERS_HOME/models/small --task $PEERS_HOME/data/train.parquet
    $TRL_VENV/bin/python peers/trl_grpo.py --model $PEERS_HOME/models/small --task $PEERS_HOME/data/train.jsonl \
        --steps 10 --prompts-per-step 8 --group-size 8 --max-tokens 128 --beta 0.04

One optimizer step = --prompts-per-step prompts x --group-size samples (default 8 x 8 = 64 completions),
sampled with HF `generate` inside TRL (use_vllm=False), temperature 1.0, top_p 1.0, top_k off, at most
--max-tokens new tokens; fp32 weights and compute (bf16=False; --bf16: TRL's bf16=True, autocast over fp32 master
weights); one optimizer step per generation batch
(per_device_train_batch_size = 64 completions, gradient_accumulation_steps = 1 unless --micro-batch-size is
smaller). --beta 0 builds no reference model; --beta > 0 loads one and adds its forward pass every step.
Everything else is TRL's default (loss_type, epsilon, scale_rewards, AdamW, lr schedule, gradient checkpointing
unless --no-gradient-checkpointing), recorded in the output. bench: --trl-defaults leaves beta, precision, gradient
checkpointing and the model's load dtype to TRL as well (TRL 1.16: beta 0, bf16=True, gradient checkpointing on).

--ignore-eos (default on) passes min_new_tokens = --max-tokens to generate, so every completion has exactly
--max-tokens tokens and step cost does not depend on when a random model happens to emit EOS; use
--no-ignore-eos to measure TRL as a user would run it (lengths then vary; tokens/s uses the real counts).

Reward: 1.0 if the last \\boxed{...} in the completion equals reward_model.ground_truth (string compare after
strip), else 0.0. With the random-init checkpoints of make_model.py the reward is ~always 0, so advantages are
0 and the policy does not learn: this measures system cost (the same tensors are computed either way).

Measured (one JSON summary line on stdout, also appended to --json-out; one JSON line per step before it):
  total_wall_s       process start -> end of training (imports, model/ref load, dataset, all steps)
  train_s            trainer.train() only
  step_s             wall time of each optimizer step (on_step_end to on_step_end; step 1 from train start)
  step_s_median      median over steps 2..N (step 1 carries lazy initialisation)
  completion_tokens_per_s   completion tokens generated in steps 2..N / wall seconds of steps 2..N
  gen_s / gen_tok_per_s     time inside TRL's generate call and its token rate (steps 2..N)
  peak_rss_mb        getrusage max RSS of this process (TRL without vLLM uses no worker processes)
"""

from __future__ import annotations

import time

T_PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
PEERS_HOME = os.environ.get("PEERS_HOME", os.path.abspath(".peers"))  # models, data, outputs, caches


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces, or None.

    >>> last_boxed("so \\\\boxed{1} then \\\\boxed{{2}+3}.")
    '{2}+3'
    >>> last_boxed("no box") is None
    True
    """
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    j, depth = i + len("\\boxed{"), 1
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j:k]
    return None


def boxed_reward(completions, reward_model, **kwargs) -> list[float]:
    """TRL reward function: 1.0 iff the last \\boxed{} equals the row's reward_model.ground_truth."""
    out = []
    for c, rm in zip(completions, reward_model, strict=True):
        text = c[-1]["content"] if isinstance(c, list) else c
        ans = last_boxed(text)
        out.append(1.0 if ans is not None and ans.strip() == str(rm["ground_truth"]).strip() else 0.0)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(PEERS_HOME, "models/small"), help="HF model folder")
    ap.add_argument("--task", default=os.path.join(PEERS_HOME, "data/train.parquet"), help="verl-schema .parquet or .jsonl")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps")
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--group-size", "--samples-per-prompt", dest="group_size", type=int, default=8)
    ap.add_argument("--max-tokens", "--max-response-tokens", dest="max_tokens", type=int, default=128)
    ap.add_argument("--beta", type=float, default=0.0, help="KL coefficient; > 0 loads a reference model")
    # bench: precision and gradient checkpointing as flags, and TRL's own defaults for all of them
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                    help="TRL's bf16=True (mixed precision: autocast, fp32 master weights); default fp32")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="default: TRL's own (on in TRL 1.16)")
    ap.add_argument("--trl-defaults", action="store_true",
                    help="leave beta, bf16, gradient checkpointing and the load dtype at TRL's defaults")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-6, help="TRL's GRPO default")
    ap.add_argument("--loss-type", default=None, help="TRL loss_type; default: TRL's own default")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="completions per forward/backward; default all prompts*group in one micro-batch")
    ap.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--out-dir", default=None, help="trainer output_dir (default $PEERS_HOME/out/trl_runs/<time>)")
    ap.add_argument("--json-out", default=os.path.join(PEERS_HOME, "out/trl_grpo.jsonl"), help="JSONL to append ('' = none)")
    ap.add_argument("--cache-root", default=os.path.join(PEERS_HOME, "cache"), help="HF_HOME unless already set")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()
    os.environ.setdefault("HF_HOME", os.path.join(args.cache_root, "hf"))  # keep the home cache clean
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; fail fast instead of timing out
    total = args.prompts_per_step * args.group_size
    micro = args.micro_batch_size or total
    if total % micro:
        raise SystemExit(f"--micro-batch-size {micro} must divide prompts*group = {total}")

    t = time.perf_counter()
    import accelerate
    import datasets
    import torch
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import_s = time.perf_counter() - t
    if args.threads:
        torch.set_num_threads(args.threads)

    t_setup = time.perf_counter()
    fmt = "parquet" if args.task.endswith(".parquet") else "json"
    ds = datasets.load_dataset(fmt, data_files=args.task, split="train")
    need = {"prompt", "reward_model"}
    if need - set(ds.column_names):
        raise SystemExit(f"{args.task}: missing columns {sorted(need - set(ds.column_names))}")

    out_dir = args.out_dir or os.path.join(PEERS_HOME, "out/trl_runs", dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    gen_kwargs = {"min_new_tokens": args.max_tokens} if args.ignore_eos else None
    cfg_kwargs = dict(
        output_dir=out_dir,
        max_steps=args.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=total // micro,
        num_generations=args.group_size,
        max_completion_length=args.max_tokens,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        use_vllm=False,
        use_cpu=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        log_completions=False,
        generation_kwargs=gen_kwargs,
    )
    if not args.trl_defaults:  # bench: otherwise TRL's defaults
        cfg_kwargs.update(beta=args.beta, bf16=args.bf16, fp16=False, model_init_kwargs={"dtype": "float32"})
        if args.gradient_checkpointing is not None:
            cfg_kwargs["gradient_checkpointing"] = args.gradient_checkpointing
    if args.loss_type:
        cfg_kwargs["loss_type"] = args.loss_type
    config = GRPOConfig(**cfg_kwargs)

    bench = {"gen_s": [], "gen_tokens": [], "score_s": []}

    class BenchGRPOTrainer(GRPOTrainer):
        """GRPOTrainer plus timers around generation (private TRL methods; skipped if TRL renames them)."""

    if hasattr(GRPOTrainer, "_generate_single_turn"):
        def _generate_single_turn(self, *a, **k):
            t0 = time.perf_counter()
            out = GRPOTrainer._generate_single_turn(self, *a, **k)
            bench["gen_s"].append(time.perf_counter() - t0)
            bench["gen_tokens"].append(sum(len(x) for x in out[0]))
            return out
        BenchGRPOTrainer._generate_single_turn = _generate_single_turn
    if hasattr(GRPOTrainer, "_generate_and_score_completions"):
        def _generate_and_score_completions(self, *a, **k):
            t0 = time.perf_counter()
            out = GRPOTrainer._generate_and_score_completions(self, *a, **k)
            bench["score_s"].append(time.perf_counter() - t0)  # generation + rewards + old/ref logprobs
            return out
        BenchGRPOTrainer._generate_and_score_completions = _generate_and_score_completions

    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            self.t_last = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            steps.append({"step": state.global_step, "step_s": now - self.t_last,
                          "gen_calls": len(bench["gen_s"]), "score_calls": len(bench["score_s"])})
            self.t_last = now

        def on_log(self, a, state, control, logs=None, **kw):
            if not logs or not steps or "train_runtime" in logs:
                return
            rec = steps[-1]
            keep = ("loss", "reward", "reward_std", "kl", "entropy", "grad_norm", "learning_rate",
                    "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std", "step_time")
            rec.update({k: logs[k] for k in keep if k in logs})
            line = {"event": "step", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}}
            print(json.dumps(line), flush=True)

    trainer = BenchGRPOTrainer(
        model=args.model,
        reward_funcs=boxed_reward,
        args=config,
        train_dataset=ds,
        callbacks=[StepTimer()],
    )
    setup_s = time.perf_counter() - t_setup

    t_train = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t_train
    total_wall_s = time.perf_counter() - T_PROCESS_START

    step_s = [s["step_s"] for s in steps]
    later = step_s[1:] if len(step_s) > 1 else step_s
    # tokens generated for steps 2..N (one generation call per optimizer step here)
    gen_tokens_later = sum(bench["gen_tokens"][1:]) if len(bench["gen_tokens"]) > 1 else sum(bench["gen_tokens"])
    gen_s_later = bench["gen_s"][1:] if len(bench["gen_s"]) > 1 else bench["gen_s"]
    if not bench["gen_tokens"]:  # TRL renamed the private method: fall back to logged mean lengths
        lens = [s.get("completions/mean_length", 0) * total for s in steps]
        gen_tokens_later = sum(lens[1:]) if len(lens) > 1 else sum(lens)
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    manifest = os.path.join(args.model, "manifest.json")
    summary = {
        "bench": "trl_grpo",
        "toolkit": "trl",
        "model": args.model,
        "params": json.load(open(manifest))["params"] if os.path.exists(manifest) else None,
        "task": args.task,
        "steps": args.steps,
        "prompts_per_step": args.prompts_per_step,
        "group_size": args.group_size,
        "max_tokens": args.max_tokens,
        "beta": config.beta,
        "temperature": args.temperature,
        "lr": args.lr,
        "loss_type": config.loss_type,
        "ignore_eos": args.ignore_eos,
        "micro_batch_size": micro,
        "grad_accum": total // micro,
        # the rest of the algorithm as TRL resolved it (defaults unless set above), for replaying elsewhere
        "trl_resolved": {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None))) else v)
                         for k in ("epsilon", "epsilon_high", "scale_rewards", "num_iterations",
                                   "steps_per_generation", "generation_batch_size", "importance_sampling_level",
                                   "mask_truncated_completions", "top_entropy_quantile", "lr_scheduler_type",
                                   "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2",
                                   "adam_epsilon", "max_grad_norm", "optim", "disable_dropout",
                                   "cast_lm_head_to_fp32", "shuffle_dataset",
                                   "bf16", "gradient_checkpointing", "model_init_kwargs")
                         for v in [getattr(config, k, "n/a")]},
        "dtype": "bfloat16" if config.bf16 else "float32",  # bench: bf16 = autocast over fp32 weights
        "use_vllm": False,
        "total_wall_s": round(total_wall_s, 2),
        "import_s": round(import_s, 2),
        "setup_s": round(setup_s, 2),
        "train_s": round(train_s, 2),
        "first_step_s": round(step_s[0], 2) if step_s else None,
        "step_s_median": round(statistics.median(later), 2) if later else None,
        "step_s": [round(x, 2) for x in step_s],
        "completion_tokens_total": int(sum(bench["gen_tokens"])),
        "completion_tokens_per_s": round(gen_tokens_later / sum(later), 1) if later else None,
        "gen_s_median": round(statistics.median(gen_s_later), 2) if gen_s_later else None,
        "gen_tok_per_s": round(gen_tokens_later / sum(gen_s_later), 1) if gen_s_later else None,
        "gen_and_score_s_median": round(statistics.median(bench["score_s"][1:] or bench["score_s"]), 2)
        if bench["score_s"] else None,
        "reward_mean": [round(s.get("reward", float("nan")), 4) for s in steps],
        "peak_rss_mb": round(peak_kb / 1024),
        "torch_threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "accelerate": accelerate.__version__, "datasets": datasets.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "host_cpus": os.cpu_count(),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    print(json.dumps(summary), flush=True)
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


if __name__ == "__main__":
    main()
