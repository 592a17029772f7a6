"""The three floors of DESIGN.md hold: arrows point down only, `rl` and `sft` never import each other, nothing
imports `mixrl`, no file-level import cycle (generated `*_pb2*` modules aside), pure modules import no orchestration.

Every `import` statement counts, wherever it is (module level, inside a function, under TYPE_CHECKING): a lazy
import is still an arrow. The checks run on the real tree, and on copies of it with a deliberate violation
planted, to show that each rule fails when broken.
"""

from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# floor by floor (DESIGN.md, "Packages"): what each package may import of the project
ALLOWED = {
    "core": set(),
    "sandbox": set(),
    "reward_services": {"core"},
    "rewards": {"sandbox", "reward_services", "core"},
    "sft": {"rewards", "core"},
    "rl": {"rewards", "sandbox", "reward_services", "core"},
    "mixrl": {"rl", "sft", "rewards", "reward_services", "sandbox", "core"},
}
PACKAGES = sorted(ALLOWED)
# math and reward functions: no Ray, engines or servers (STYLE.md §1, §6)
PURE = ["rl/algos.py", "rl/policy_losses.py", "rl/advantage_estimators.py", "rl/rollout_correction.py",
        "rl/algo_extras.py", "rl/presets.py", "rl/prompts.py", "rl/placement.py", "core/seeds.py", "core/optim.py",
        "rewards/extract.py", "rewards/exact.py", "rewards/format.py", "rewards/repetition.py", "rewards/length.py",
        "rewards/critique.py", "rewards/summary.py", "sandbox/spec.py"]
ORCHESTRATION = {"ray", "vllm", "grpc", "http", "socketserver", "subprocess"}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported_names(path: Path, module: str) -> list[tuple[str, int]]:
    """(dotted name, line) of everything a file imports; `from a import b` gives `a.b` (module or attribute)."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out += [(".".join(filter(None, (base, a.name))), node.lineno) for a in node.names]
    return out


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {imported project module: line}; an imported name resolves to the longest module it names."""
    mods = modules(root)
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in mods.items():
        for name, line in imported_names(path, module):
            parts = name.split(".")
            for n in range(len(parts), 0, -1):
                target = ".".join(parts[:n])
                if target in mods:
                    if target != module:
                        graph[module].setdefault(target, line)
                    break
    return graph


def floor_violations(root: Path) -> list[str]:
    """Imports from a package into one it may not import (up a floor, across `rl`/`sft`, into `mixrl`)."""
    out = []
    for module, targets in import_graph(root).items():
        src = module.split(".")[0]
        for target, line in targets.items():
            dst = target.split(".")[0]
            if dst != src and dst not in ALLOWED[src]:
                out.append(f"{module.replace('.', '/')}.py:{line} imports {target} ({src} may import {sorted(ALLOWED[src]) or 'none of the project'})")
    return out


def cycles(root: Path) -> list[list[str]]:
    """File-level import cycles (strongly connected components of more than one module), `*_pb2*` excepted."""
    graph = {m: [t for t in ts if "_pb2" not in t] for m, ts in import_graph(root).items() if "_pb2" not in m}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def impure_imports(root: Path) -> list[str]:
    out = []
    for rel in PURE:
        path = root / rel
        module = ".".join(Path(rel).with_suffix("").parts)
        for name, line in imported_names(path, module):
            if name.split(".")[0] in ORCHESTRATION:
                out.append(f"{rel}:{line} imports {name}")
    return out


# ---- the real tree --------------------------------------------------------------------------------------------


def test_every_arrow_points_down():
    assert floor_violations(ROOT) == []


def test_no_file_level_import_cycle():
    assert cycles(ROOT) == []


def test_pure_modules_import_no_orchestration():
    assert impure_imports(ROOT) == []


def test_the_check_sees_the_whole_project():
    graph = import_graph(ROOT)
    assert {m.split(".")[0] for m in modules(ROOT)} == set(PACKAGES)
    assert "core.config" in graph["mixrl.cli"] and "rl.grpo" in graph["mixrl.cli"]  # lazy imports count


# ---- deliberate violations: each rule fails when broken ------------------------------------------------------


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A copy of the project's packages to plant violations in."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(tree: Path, rel: str, line: str) -> None:
    path = tree / rel
    path.write_text(path.read_text() + "\n\ndef _planted():\n    " + line + "\n")


@pytest.mark.parametrize("rel, line, expect", [
    ("core/config.py", "from rl.config import GRPOConfig", "core/config.py"),  # foundations import a stage
    ("core/chat.py", "import mixrl.cli", "imports mixrl.cli"),
    ("rl/grpo.py", "from sft.finetune import run_sft", "rl/grpo.py"),  # the two siblings
    ("sft/finetune.py", "from rl import algos", "imports rl.algos"),
    ("rewards/router.py", "from rl.config import GRPOConfig", "rewards/router.py"),  # a stage imports one above it
    ("sandbox/spec.py", "from rewards import Sample", "sandbox/spec.py"),
    ("reward_services/types.py", "import sft.config", "reward_services/types.py"),
    ("rl/trainer.py", "from mixrl.config import QuickstartConfig", "imports mixrl.config"),  # nothing imports mixrl
])
def test_an_arrow_the_wrong_way_is_reported(tree, rel, line, expect):
    _plant(tree, rel, line)
    found = floor_violations(tree)
    assert len(found) == 1 and expect in found[0], found


def test_a_planted_cycle_is_reported(tree):
    _plant(tree, "core/seeds.py", "from core import engine")  # core.engine imports core.seeds
    assert ["core.engine", "core.seeds"] in cycles(tree)


def test_a_relative_import_cycle_is_reported(tree):
    _plant(tree, "mixrl/data/rows.py", "from . import math_problems")  # math_problems imports rows
    assert ["mixrl.data.math_problems", "mixrl.data.rows"] in cycles(tree)


def test_orchestration_in_a_pure_module_is_reported(tree):
    _plant(tree, "rl/algos.py", "import ray")
    assert any("rl/algos.py" in v and "ray" in v for v in impure_imports(tree))
