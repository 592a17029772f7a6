"""mixrl's vLLM general plugin (entry point group `vllm.general_plugins`, pyproject.toml): vLLM calls `register`
in each of its processes as they start.

In an engine-core process it makes the exit fast. vLLM stops an engine by SIGTERM to its engine-core process and
waits for it (`AsyncLLM.shutdown`, `LLM`'s finaliser). The engine tears itself down in under a second, unfreezing
and collecting its heap; the interpreter's final cyclic-GC scan of that heap (vLLM, torch and transformers loaded)
then took another 2-3 s on a 2-core CPU: 3.2-3.5 s of each GRPO run's and each evaluation's shutdown. vLLM skips
that scan on ROCm alone (`run_engine_core`: "Freeze the surviving graph to skip another slow cyclic-GC scan during
finalization; process exit reclaims it"); an exit hook here does the same on every platform. The hook runs after
the engine's own teardown (exit hooks run once `run_engine_core` has returned), so nothing vLLM releases is skipped.

It also makes an engine-core process end with the process that started it (`exit_with_parent`). vLLM's engine core
has no watch on its parent (only the multiprocessing executor's workers have a death pipe): when its parent dies
without stopping it (a `mixrl eval` killed by SIGKILL; a Ray actor's, should Ray's raylet not kill a dead worker's
children, as it does by default), it waits on its sockets forever, holding its model and KV cache (2.7 GB for the
quickstart's engines). The cores `core.engine.fork_engine_core` forks do not run this plugin (vLLM loads its plugins
once per process, and a fork inherits that), so that fork starts the watch itself.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import signal
import threading
import time

ENGINE_CORE = "EngineCore"  # vLLM's engine-core process names: EngineCore, EngineCore_DP0, ...
PARENT_POLL_S = 1.0  # how often an engine core checks that its parent lives
SIGTERM_GRACE_S = 10.0  # after SIGTERM (vLLM's own way to stop an engine core), SIGKILL if it still runs


def register() -> None:
    if multiprocessing.current_process().name.startswith(ENGINE_CORE):
        atexit.register(gc.freeze)
        exit_with_parent()


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Stop this process once the process that started it has died: a daemon thread polls the parent's PID (a dead
    parent's children are handed to init or a subreaper, so the PID changes), then sends this process SIGTERM, which
    vLLM's engine core answers by shutting down, and SIGKILL if that has not ended it `SIGTERM_GRACE_S` later.
    A poll rather than prctl(PR_SET_PDEATHSIG): that signal fires when the THREAD that forked exits, and engines are
    started from worker threads."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(SIGTERM_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="mixrl-parent-watch", daemon=True)
    thread.start()
    return thread
