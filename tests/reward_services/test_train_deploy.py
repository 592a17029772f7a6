"""`mixrl train-rm` (Bradley-Terry on synthetic chat pairs) and `mixrl deploy-rm` (validation gate, manifests,
local instances registered in the local registry)."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest

from mixrl.cli import main

from .test_client_failures import items, wait_for


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "rm"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train-rm", "--out", str(out), "--train-pairs", "200", "--heldout-pairs", "60", "--steps", "80",
                     "--batch-size", "8", "--vocab-size", "1000", "--lr", "3e-3"]) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


def test_train_rm_learns_the_preferences(trained_rm):
    out, metrics = trained_rm
    assert (out / "config.json").exists() and json.loads((out / "rm_metrics.json").read_text()) == metrics
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForSequenceClassification"]
    assert metrics["heldout_pairwise_accuracy"] >= 0.75
    assert metrics["heldout_pairwise_accuracy"] > metrics["initial_pairwise_accuracy"]


def test_deploy_refuses_a_model_that_fails_validation(rm_dir, tmp_path, capsys):
    rc = main(["deploy-rm", str(rm_dir), "--name", "chat-rm", "--local", "1", "--registry", f"local:{tmp_path}",
               "--heldout-pairs", "30", "--min-accuracy", "0.99"])
    assert rc == 1 and "nothing deployed" in capsys.readouterr().err
    assert not (tmp_path / "chat-rm").exists()


def test_deploy_renders_kubernetes_manifests(trained_rm, tmp_path, capsys):
    import yaml

    out, _ = trained_rm
    assert main(["deploy-rm", str(out), "--name", "chat-rm", "--render", str(tmp_path / "k8s"), "--min-accuracy", "0.7",
                 "--heldout-pairs", "60", "--namespace", "rl", "--token", "t0k"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    docs = {}
    for path in result["manifests"]:
        doc = yaml.safe_load(open(path))
        docs[doc["kind"]] = doc
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding", "Secret", "Service", "Deployment",
                         "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert docs["Deployment"]["metadata"]["annotations"]["mixrl.io/model-digest"] == result["validation"]["model_digest"]
    assert docs["Secret"]["stringData"]["token"] == "t0k" and docs["Role"]["rules"][0]["resources"] == ["endpointslices"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "mixrl_rm_queue_depth"


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited instance stays one until this process reaps it)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_deploy_local_starts_registered_instances_that_score(trained_rm, tmp_path, capsys):
    from reward_services.client import RewardServiceClient
    from reward_services.registry import LocalRegistry

    out, _ = trained_rm
    registry = tmp_path / "registry"
    rc = main(["deploy-rm", str(out), "--name", "chat-rm", "--local", "2", "--registry", f"local:{registry}",
               "--min-accuracy", "0.7", "--heldout-pairs", "60"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pids = [i["pid"] for i in result.get("instances", [])]
    try:
        assert rc == 0 and len(pids) == 2 and result["validation"]["passed"]
        reg = LocalRegistry(registry, poll_s=0.1)
        assert len(reg.resolve("chat-rm")) == 2
        with RewardServiceClient("chat-rm", registry=reg) as client:
            assert all(r.ok for r in client.score(items(8)))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)  # drain
    try:
        assert wait_for(lambda: LocalRegistry(registry).resolve("chat-rm") == [], timeout_s=15)
        assert wait_for(lambda: not any(running(pid) for pid in pids), timeout_s=30)
    finally:  # they run detached: never leave one behind for the rest of the suite
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_deploy_local_from_another_directory_takes_paths_relative_to_it(trained_rm, tmp_path, monkeypatch):
    """`mixrl quickstart` and `deploy-rm --local` run from a user's own directory with relative paths (the
    quickstart's `runs/quickstart/...`): the instances must find the model and the registry there, not beside the
    package (they once ran in the package's folder and failed on a relative model path)."""
    from reward_services import deploy
    from reward_services.registry import LocalRegistry

    out, _ = trained_rm
    monkeypatch.chdir(tmp_path)
    os.symlink(out, tmp_path / "rm")
    [info] = deploy.start_local("rm", name="chat-rm", registry="local:registry", instances=1)
    try:
        assert len(LocalRegistry(tmp_path / "registry", poll_s=0.1).resolve("chat-rm")) == 1
    finally:
        os.kill(info["pid"], signal.SIGTERM)
    assert wait_for(lambda: not running(info["pid"]), timeout_s=30)


def test_serve_rm_cli_refuses_public_bind_without_token(rm_dir, capsys):
    assert main(["serve-rm", str(rm_dir), "--host", "0.0.0.0", "--token", ""]) == 2
    assert "without --token" in capsys.readouterr().err
