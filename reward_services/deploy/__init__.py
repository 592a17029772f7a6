"""`mixrl deploy-rm`: validate a candidate reward model, then deploy it (Kubernetes manifests, or local instances).

    mixrl deploy-rm runs/rm/final --name chat-rm --local 2 --registry local:runs/registry     # N local servers
    mixrl deploy-rm runs/rm/final --name chat-rm --render deploy/out --image ghcr.io/me/mixrl:1 # write YAML
    mixrl deploy-rm runs/rm/final --name chat-rm --apply --namespace rl                        # create in cluster

Nothing is deployed unless the validation suite passes: the model, loaded exactly as the server loads it, must
rank the chosen response above the rejected one on at least ``min_accuracy`` of a held-out preference set
(``--pairs FILE.jsonl``; by default the synthetic chat test split), and must score every pair without error.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reward_services.train import PreferencePair
from reward_services.types import ScoreItem

TEMPLATE = Path(__file__).resolve().parent / "manifests.yaml"


@dataclass(frozen=True)
class ValidationReport:
    passed: bool
    pairwise_accuracy: float
    pairs: int
    errors: int
    min_accuracy: float
    model_digest: str

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def validate(model_dir, pairs: Sequence[PreferencePair], *, min_accuracy: float = 0.8, batch_size: int = 16) -> ValidationReport:
    """Score every pair with the server's own loading and scoring path; pass iff accuracy ≥ `min_accuracy` and no
    item failed."""
    from reward_services.models import load_scorer

    if not pairs:
        raise ValueError("validation needs at least one held-out preference pair")
    scorer = load_scorer(model_dir)
    wins = errors = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        items = [ScoreItem(f"{k}{side}", prompt=p.prompt, response=getattr(p, side))
                 for k, p in enumerate(chunk) for side in ("chosen", "rejected")]
        encoded = [scorer.encode(it) for it in items]
        ok = [(it, e) for it, e in zip(items, encoded) if not hasattr(e, "error")]
        results = {r.id: r for r in scorer.score([i for i, _ in ok], [e for _, e in ok])} if ok else {}
        for k in range(len(chunk)):
            c, r = results.get(f"{k}chosen"), results.get(f"{k}rejected")
            if c is None or r is None or not c.ok or not r.ok:
                errors += 1
            elif c.reward > r.reward:
                wins += 1
    accuracy = wins / len(pairs)
    return ValidationReport(accuracy >= min_accuracy and errors == 0, accuracy, len(pairs), errors, min_accuracy,
                            scorer.digest)


def render_manifests(*, name: str, model_digest: str, namespace: str = "default", image: str = "mixrl:latest",
                     model_path: str = "/models/rm", replicas: int = 2, max_replicas: int = 8, port: int = 50051,
                     metrics_port: int = 9090, token: str | None = None, trainer_service_account: str = "default",
                     cpu: str = "2", memory: str = "4Gi", max_batch_items: int = 32,
                     target_queue_depth: int = 16) -> list[dict]:
    """The Kubernetes objects of one reward-model service (ServiceAccount, Role+Binding for discovery, token
    Secret, headless Service, Deployment with gRPC probes, HPA on queue depth, PodDisruptionBudget)."""
    import yaml

    values = dict(NAME=name, NAMESPACE=namespace, IMAGE=image, MODEL_PATH=model_path, REPLICAS=replicas,
                  MAX_REPLICAS=max(max_replicas, replicas), PORT=port, METRICS_PORT=metrics_port,
                  TOKEN=token or secrets.token_urlsafe(24), TRAINER_SERVICE_ACCOUNT=trainer_service_account,
                  CPU=cpu, MEMORY=memory, MAX_BATCH_ITEMS=max_batch_items, TARGET_QUEUE_DEPTH=target_queue_depth,
                  MODEL_DIGEST=model_digest)
    text = string.Template(TEMPLATE.read_text()).substitute({k: str(v) for k, v in values.items()})
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:  # YAML reads numbers as ints; ports etc. must be ints, probe/service names strings
        if doc["kind"] == "Secret":
            doc["stringData"]["token"] = str(values["TOKEN"])
    return docs


def write_manifests(docs: list[dict], out_dir) -> list[Path]:
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, doc in enumerate(docs):
        path = out / f"{k:02d}-{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
    return paths


def apply_manifests(docs: list[dict]) -> None:  # pragma: no cover - needs a cluster
    """Create the objects in the current kube context's cluster."""
    from kubernetes import client, config, utils

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiClient()
    for doc in docs:
        utils.create_from_dict(api, doc, namespace=doc["metadata"].get("namespace"))


PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds `reward_services`


def start_local(model_dir, *, name: str, registry: str, instances: int, token: str | None = None,
                extra_args: Sequence[str] = (), ready_timeout_s: float = 120.0, log_dir=None) -> list[dict]:
    """Start `instances` server processes on loopback (free ports), registered in `registry`; returns their
    ready-info (address, pid, digest) once all serve. They run detached: stop them with SIGTERM (drain)."""
    if log_dir is None:  # beside a local registry, else under runs/
        local = not registry.startswith(("etcd://", "k8s://"))
        log_dir = Path(registry.removeprefix("local:")) / "logs" if local else Path("runs") / "rm-logs"
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(instances):
        ready = log_dir / f"{name}-{k}-{time.monotonic_ns()}.ready.json"
        cmd = [sys.executable, "-m", "reward_services.server", str(model_dir), "--model-name", name, "--port", "0",
               "--registry", registry, "--ready-file", str(ready), *extra_args]
        env = dict(os.environ, **({"MIXRL_RM_TOKEN": token} if token else {}))
        # in this process's directory, so relative paths (the model, a local registry, the ready file) mean what
        # they mean here; the package importable from a source checkout without an install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
        log = open(log_dir / f"{name}-{k}.log", "a")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True),
                      ready, log))
    infos, end = [], time.monotonic() + ready_timeout_s
    for proc, ready, log in procs:
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > end:
                for p, _, _ in procs:
                    p.kill()
                raise RuntimeError(f"instance failed to start (exit {proc.poll()}); see {log.name}")
            time.sleep(0.05)
        infos.append(json.loads(ready.read_text()))
        log.close()
    return infos
