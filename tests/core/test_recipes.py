"""Every shipped recipe loads with the schema its name selects, and the GPU recipes ask for a consistent placement."""

from pathlib import Path

import pytest

from core.config import load_config
from mixrl.cli import recipe_schema

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    cfg = load_config(recipe_schema(path), path)
    if path.name.startswith("grpo_"):
        from rl.config import check_config

        check_config(cfg)  # no combination a run would refuse


def test_gpu_recipes_split_gpus_between_the_sides():
    from rl.config import GRPOConfig

    for name, (engines, workers) in {"grpo_qwen05b_2gpu.yaml": (1, 1), "grpo_qwen15b_8gpu.yaml": (4, 4)}.items():
        cfg = load_config(GRPOConfig, Path(RECIPES[0]).parent / name)
        p = cfg.placement
        assert (p.rollout_engines, p.trainer_workers) == (engines, workers)
        assert p.rollout_gpus_per_engine * p.rollout_engines + p.trainer_gpus_per_worker * p.trainer_workers == engines + workers
        assert cfg.rollout.weight_transfer_backend == "nccl" and cfg.trainer.device == "cuda"
