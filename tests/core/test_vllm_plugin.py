"""The vLLM general plugin (`core.vllm_plugin`): vLLM's own plugin loader finds it through the installed entry
point, and in an engine-core process it freezes the heap at exit (the interpreter's last GC scan skipped), in no
other process."""

from __future__ import annotations

import multiprocessing
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
