"""A GRPO run's start-up on one machine (`rl.actors.ensure_ray`, `rl.grpo`): the Ray a run starts itself hands its
workers the allocator (`core.device.worker_env`) from its own start, so the trainer and the engines need no runtime
environment of their own and Ray's workers started in advance can host them; a Ray the run did not start (a
cluster, a test's session Ray) still gets it through each actor's runtime environment. The engines' `auto`
precision is decided in the run's process only when the engines will run on this machine's CPUs.

A fresh Python process, because this one may hold the test session's Ray already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.device import worker_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import dataclasses, json, os

import ray

from core.device import worker_env
from rl.actors import actor_runtime_env, engine_dtype_decided_here, ensure_ray
from rl.config import GRPOConfig

cfg = dataclasses.replace(GRPOConfig(), ray=dataclasses.replace(GRPOConfig().ray, num_cpus=1))
gpu = dataclasses.replace(cfg, placement=dataclasses.replace(cfg.placement, rollout_gpus_per_engine=1))
fp32 = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, dtype="float32"))
out = {"decided_here": [engine_dtype_decided_here(c) for c in (cfg, gpu, fp32)]}
preload = os.environ.get("LD_PRELOAD")
assert ensure_ray(cfg)
out["driver_env_kept"] = os.environ.get("LD_PRELOAD") == preload
out["decided_after_start"] = engine_dtype_decided_here(cfg)
out["started_here"] = actor_runtime_env()


@ray.remote(num_cpus=1)
def preloaded():
    return os.environ.get("LD_PRELOAD", "")


out["worker_preload"] = ray.get(preloaded.remote())
ray.shutdown()
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # not the run's own Ray
out["started_elsewhere"] = actor_runtime_env()
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def startup() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240, env=env,
                          cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_ray_the_run_starts_hands_its_workers_the_allocator_without_a_runtime_environment(startup):
    env = worker_env()
    if not env:
        pytest.skip("libtcmalloc-minimal4 is not installed (make install installs it as root on Debian/Ubuntu)")
    assert startup["started_here"] == {}  # the actors ask for nothing, so a worker Ray started in advance serves
    assert startup["worker_preload"].split(":")[0] == env["LD_PRELOAD"].split(":")[0]  # ... and has the allocator
    assert startup["driver_env_kept"]  # the run's own process keeps the environment it had


def test_a_ray_the_run_did_not_start_gets_the_allocator_through_each_actor(startup):
    env = worker_env()
    if not env:
        pytest.skip("libtcmalloc-minimal4 is not installed (make install installs it as root on Debian/Ubuntu)")
    assert startup["started_elsewhere"] == {"env_vars": env}


def test_the_engines_precision_is_decided_in_the_run_only_for_engines_on_this_machines_cpus(startup):
    # auto on a Ray about to start here: yes; an engine with a GPU, an explicit dtype, or a Ray already up: no
    assert startup["decided_here"] == [True, False, False]
    assert startup["decided_after_start"] is False
