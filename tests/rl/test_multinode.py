"""Multi-node placement on a simulated two-node Ray cluster: trainer ranks and the rollout engine land on the nodes
their placement pins them to, the rendezvous is the trainer's node, and a step trains and syncs across nodes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm


def test_trainer_and_engine_on_different_nodes_train_and_sync(tiny_grpo_checkpoint, tmp_path):
    script = Path(__file__).with_name("cluster_run.py")
    proc = subprocess.run([sys.executable, str(script), tiny_grpo_checkpoint["model"], tiny_grpo_checkpoint["data"],
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    [line] = [x for x in proc.stdout.splitlines() if x.startswith('{"summary_steps"')]
    out = json.loads(line)
    assert out["trainer_nodes"] == [out["trainer_node"]] * 2  # both ranks on the trainer node
    assert out["trainer_node"] != out["rollout_node"]
    assert out["rendezvous_host"] == out["trainer_node_address"]  # hosted by trainer rank 0's node
    assert out["summary_steps"] == 1 and out["weight_version"] == 1  # trained, and the engine got the weights
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["sync_bytes"] > 0 and rows[-1]["weight_version"] == 1.0
