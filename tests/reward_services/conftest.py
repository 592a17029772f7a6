"""Fixtures: a tiny reward model saved in Hugging Face format, and real server processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def chat_pairs(n: int, split: str, seed: int):
    from reward_services.train import PreferencePair
    from mixrl.data.chat_prompts import generate_chat

    return [PreferencePair(r["prompt"][-1]["content"], r["extra_info"]["chosen"], r["extra_info"]["rejected"])
            for r in generate_chat(n, split, seed)]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from core.tokenizer import train_tokenizer

    pairs = chat_pairs(200, "train", 0)
    return train_tokenizer([p.prompt + "\n" + p.chosen + "\n" + p.rejected for p in pairs], vocab_size=400)


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory, tiny_tokenizer):
    """An untrained tiny classifier RM (scores are arbitrary but deterministic): for the service tests."""
    from reward_services.train import build_reward_model

    path = tmp_path_factory.mktemp("rm") / "model"
    model = build_reward_model(tiny_tokenizer, max_position_embeddings=512)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


class ServerProc:
    """A `python -m reward_services.server` child process; `address` once it is serving."""

    def __init__(self, model_dir, tmp_path, *extra: str, name: str = "chat-rm", registry: str | None = None,
                 env: dict | None = None) -> None:
        self.ready_file = Path(tmp_path) / f"ready-{time.monotonic_ns()}.json"
        cmd = [sys.executable, "-m", "reward_services.server", str(model_dir), "--port", "0", "--model-name", name,
               "--ready-file", str(self.ready_file), "--threads", "1", *extra]
        if registry:
            cmd += ["--registry", registry]
        self.log = open(Path(tmp_path) / f"server-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        self.info: dict = {}

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProc:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout_s}s: {Path(self.log.name).read_text()[-2000:]}")

    @property
    def address(self) -> str:
        return self.info["address"]

    def signal(self, sig) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def spawn(rm_dir, tmp_path):
    """spawn(*extra_args, registry=..., model_dir=...) -> ServerProc (ready); all are killed at teardown."""
    procs: list[ServerProc] = []

    def start(*extra: str, model_dir=None, wait: bool = True, **kwargs) -> ServerProc:
        p = ServerProc(model_dir or rm_dir, tmp_path, *extra, **kwargs)
        procs.append(p)
        return p.wait_ready() if wait else p

    yield start
    for p in procs:
        p.stop()


def wait_for(cond, timeout_s=10.0, step_s=0.05):
    """Poll `cond` until it is true or `timeout_s` passes; returns its last value (tests assert on it)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step_s)
    return cond()
