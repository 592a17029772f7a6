"""mixrl's vLLM general plugin (entry point group `vllm.general_plugins`, pyproject.toml): vLLM calls `register`
in each of its processes as they start.

In an engine-core process it makes the exit fast. vLLM stops an engine by SIGTERM to its engine-core process and
waits for it (`AsyncLLM.shutdown`, `LLM`'s finaliser). The engine tears itself down in under a second, unfreezing
and collecting its heap; the interpreter's final cyclic-GC scan of that heap (vLLM, torch and transformers loaded)
then took another 2-3 s on a 2-core CPU: 3.2-3.5 s of each GRPO run's and each evaluation's shutdown. vLLM skips
that scan on ROCm alone (`run_engine_core`: "Freeze the surviving graph to skip another slow cyclic-GC scan during
finalization; process exit reclaims it"); an exit hook here does the same on every platform. The hook runs after
the engine's own teardown (exit hooks run once `run_engine_core` has returned), so nothing vLLM releases is skipped.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing

ENGINE_CORE = "EngineCore"  # vLLM's engine-core process names: EngineCore, EngineCore_DP0, ...


def register() -> None:
    if multiprocessing.current_process().name.startswith(ENGINE_CORE):
        atexit.register(gc.freeze)
