"""The vLLM general plugin (`core.vllm_plugin`): vLLM's own plugin loader finds it through the installed entry
point, and in an engine-core process it freezes the heap at exit (the interpreter's last GC scan skipped), in no
other process, and ends the process once its parent has died."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from importlib.metadata import entry_points

import pytest


def _child(name_seen: str, out: str) -> None:
    import atexit
    import gc

    from pathlib import Path

    # registered first, so it runs last (exit hooks run last-in first-out): after the plugin's own hook
    atexit.register(lambda: Path(out).write_text(f"{multiprocessing.current_process().name} {gc.get_freeze_count()}"))
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    gc.collect()
    assert gc.get_freeze_count() == 0, name_seen  # nothing frozen before the exit


def test_the_entry_point_is_installed():
    found = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert found.get("mixrl_fast_exit") == "core.vllm_plugin:register"


@pytest.mark.parametrize("name, frozen", [("EngineCore_DP0", True), ("VllmWorker-0", False)])
def test_an_engine_core_process_exits_with_its_heap_frozen(tmp_path, name, frozen):
    out = tmp_path / "exit.txt"
    proc = multiprocessing.get_context("spawn").Process(target=_child, args=(name, str(out)), name=name)
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0  # the exit code is the process's own
    seen_name, count = out.read_text().split()
    assert seen_name == name
    assert (int(count) > 0) is frozen


def _engine_core(out: str) -> None:
    from pathlib import Path

    from vllm.plugins import load_general_plugins

    load_general_plugins()
    Path(out).write_text(str(os.getpid()))
    time.sleep(600)  # an engine core waiting on its sockets


def _engine_client(out: str) -> None:
    """Starts an engine core and waits; killed by the test without stopping it."""
    multiprocessing.get_context("spawn").Process(target=_engine_core, args=(out,), name="EngineCore_DP0").start()
    time.sleep(600)


def test_an_engine_core_ends_when_its_parent_dies(tmp_path):
    """vLLM's engine core has no watch on its parent: killed with SIGKILL (or a Ray actor killed), the parent left
    it waiting on its sockets for good. With the plugin it ends within a couple of its polls."""
    import psutil

    from tests.processes import running

    out = tmp_path / "core.pid"
    client = multiprocessing.get_context("spawn").Process(target=_engine_client, args=(str(out),))
    client.start()
    deadline = time.time() + 120
    while not (out.exists() and out.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    core = psutil.Process(int(out.read_text()))
    try:
        time.sleep(1.5)  # the core outlives a poll while its parent lives
        assert running(core)
        os.kill(client.pid, signal.SIGKILL)
        client.join()
        psutil.wait_procs([core], timeout=10)
        assert not running(core)
    finally:
        if running(core):
            core.kill()
