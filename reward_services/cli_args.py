"""Command-line arguments of `mixrl serve-rm`, `train-rm` and `deploy-rm` (argparse only: building the `mixrl`
parser imports nothing heavy)."""

from __future__ import annotations

import argparse
import os


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", nargs="?", default=None,
                   help="a Hugging Face folder: *ForSequenceClassification (classifier) or a causal LM (judges); "
                        "none for a rule-based kind (critique)")
    p.add_argument("--kind", choices=("classifier", "generative", "multidim", "reference", "critique"), default=None,
                   help="default: from config.json. generative: one 0..10 score; multidim: named dimensions + overall; "
                        "reference: a free-form answer against the reference (yes/no); critique: the rule-based "
                        "check of arithmetic steps (no model)")
    p.add_argument("--dimensions", default=None, help="multidim: comma-separated dimensions "
                                                      "(default helpfulness,correctness,safety)")
    p.add_argument("--model-name", default="reward-model", help="the identifier clients resolve, e.g. chat-rm")
    p.add_argument("--host", default="127.0.0.1", help="a non-loopback address requires --token")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    p.add_argument("--token", default=os.environ.get("MIXRL_RM_TOKEN"), help="bearer token (env MIXRL_RM_TOKEN)")
    p.add_argument("--registry", default=None, help="local:PATH | etcd://HOST:PORT | k8s://NAMESPACE")
    p.add_argument("--registry-ttl-s", type=float, default=5.0)
    p.add_argument("--max-batch-items", type=int, default=32)
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-queue-items", type=int, default=1024)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--batch-invariant", action="store_true",
                   help="score every item in a forward of its own: rewards independent of batching, so training on "
                        "them repeats exactly (batched, they differ at rounding level with the batch; slower)")
    p.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    p.add_argument("--max-length", type=int, default=None, help="tokens per sample (default: the model's)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (0: any free); "
                                                                   "with a token it needs the token too")
    p.add_argument("--tls-certfile", default=None, help="serve gRPC over TLS with this PEM certificate (chain)")
    p.add_argument("--tls-keyfile", default=None, help="the private key of --tls-certfile (PEM)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model scores (auto: CUDA when visible)")
    p.add_argument("--ready-file", default=None, help="write {address, metrics_port, digest} here once serving")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output Hugging Face folder, e.g. runs/rm/final")
    p.add_argument("--train-pairs", type=int, default=600, help="synthetic chat rows to train on (each gives its preference pair and two hard negatives)")
    p.add_argument("--heldout-pairs", type=int, default=200, help="held-out pairs (test split) for accuracy")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--hidden-size", type=int, default=64, help="head_dim is 32: heads = hidden_size // 32")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model trains (auto: CUDA when visible)")
    p.add_argument("--seed", type=int, default=0)


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="the candidate reward model (Hugging Face folder)")
    p.add_argument("--name", required=True, help="the RM identifier clients resolve, e.g. chat-rm")
    p.add_argument("--pairs", default=None, help="held-out preference pairs, JSONL {prompt, chosen, rejected} "
                                                 "(default: the synthetic chat test split)")
    p.add_argument("--heldout-pairs", type=int, default=200, help="pairs drawn when --pairs is not given")
    p.add_argument("--min-accuracy", type=float, default=0.8, help="validation gate: held-out pairwise accuracy")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", type=int, default=0, metavar="N", help="start N local instances")
    where.add_argument("--render", default=None, metavar="DIR", help="write Kubernetes manifests to DIR")
    where.add_argument("--apply", action="store_true", help="create the manifests in the current kube context")
    p.add_argument("--registry", default="local:runs/registry", help="for --local: where instances register")
    p.add_argument("--token", default=os.environ.get("MIXRL_RM_TOKEN"), help="bearer token (default: random for k8s)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--image", default="mixrl:latest")
    p.add_argument("--model-path", default="/models/rm", help="the model folder inside the container")
    p.add_argument("--replicas", type=int, default=2)
