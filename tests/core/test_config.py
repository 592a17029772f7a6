"""Recipe loading: YAML overrides, command-line overrides, and errors that name the key."""

from dataclasses import dataclass, field

import pytest
import yaml

from core.config import ConfigError, apply_override, load_config, write_resolved_config
from sft.config import PretrainConfig, SFTConfig


def test_yaml_and_command_line_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run_dir: runs/x\ntrain:\n  max_steps: 7\n  dtype: bfloat16\noptim:\n  lr_peak: 1\n")
    cfg = load_config(PretrainConfig, recipe, ["train.max_steps=9", "model.hidden_size=64", "distill.teacher_path=/t"])
    assert cfg.run_dir == "runs/x"
    assert cfg.train.max_steps == 9  # command line wins over YAML
    assert cfg.train.dtype == "bfloat16"
    assert cfg.optim.lr_peak == 1.0 and isinstance(cfg.optim.lr_peak, float)  # int accepted for a float
    assert cfg.model.hidden_size == 64
    assert cfg.distill.teacher_path == "/t"
    assert cfg.train.rows_per_step == PretrainConfig().train.rows_per_step  # untouched default


def test_mapping_override():
    cfg = load_config(PretrainConfig, None, ["data.train_rows.math=7", "data.train_rows.extra=3"])
    assert cfg.data.train_rows["math"] == 7 and cfg.data.train_rows["extra"] == 3
    assert cfg.data.train_rows["code"] == PretrainConfig().data.train_rows["code"]
    with pytest.raises(ConfigError, match=r"'data.train_rows.math' expects an integer"):
        load_config(PretrainConfig, None, ["data.train_rows.math=lots"])


def test_unknown_yaml_key_names_key_and_closest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  max_step: 7\n")
    with pytest.raises(ConfigError) as exc:
        load_config(PretrainConfig, recipe)
    msg = str(exc.value)
    assert str(recipe) in msg and "'train.max_step'" in msg and "'train.max_steps'" in msg


def test_unknown_override_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lr_pek'.*'optim.lr_peak'"):
        load_config(PretrainConfig, None, ["optim.lr_pek=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*'train'"):
        load_config(PretrainConfig, None, ["trian.max_steps=3"])


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    cfg = load_config(PretrainConfig, None, ["optim.lr_peak=6e-3"])
    assert cfg.optim.lr_peak == 0.006
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr_peak: 1e-5\n")
    assert load_config(PretrainConfig, recipe).optim.lr_peak == 1e-5
    with pytest.raises(ConfigError, match="'optim.lr_peak' expects a number"):
        load_config(PretrainConfig, None, ["optim.lr_peak=fast"])


def test_type_errors_name_key():
    with pytest.raises(ConfigError, match=r"'train.max_steps' expects an integer, got 'many'"):
        load_config(PretrainConfig, None, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match=r"'train.dtype' must be one of \['auto', 'float32', 'bfloat16'\]"):
        load_config(PretrainConfig, None, ["train.dtype=fp8"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_override(PretrainConfig(), "train.max_steps")


def test_list_of_dataclasses_from_yaml(tmp_path):
    recipe = tmp_path / "s.yaml"
    recipe.write_text("sources:\n  - {name: a, path: x.parquet, mode: think, epochs: 3}\n  - {name: b, path: y.jsonl, mode: direct, resample_weight: 2.5}\n")
    cfg = load_config(SFTConfig, recipe)
    assert [s.name for s in cfg.sources] == ["a", "b"]
    assert cfg.sources[0].epochs == 3.0 and cfg.sources[1].resample_weight == 2.5
    recipe.write_text("sources:\n  - {name: a, mode: thinking}\n")
    with pytest.raises(ConfigError, match=r"'sources\[0\].mode' must be one of"):
        load_config(SFTConfig, recipe)
    recipe.write_text("sources:\n  - {name: a, epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sources\[0\].epoch'.*'sources\[0\].epochs'"):
        load_config(SFTConfig, recipe)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(PretrainConfig, bad)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(PretrainConfig, bad)


def test_resolved_config_written_and_reloadable(tmp_path):
    cfg = load_config(PretrainConfig, None, ["train.max_steps=3"])
    path = write_resolved_config(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    again = load_config(PretrainConfig, path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["max_steps"] == 3


def test_every_shipped_recipe_loads():
    from pathlib import Path

    from mixrl.cli import recipe_schema

    recipes = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))
    assert len(recipes) >= 4, "recipes missing"
    for recipe in recipes:
        load_config(recipe_schema(recipe), recipe)


def test_a_nested_section_keeps_the_parents_defaults_for_keys_it_leaves_out():
    """`pretrain: {train: {max_minutes: 2}}` in a quickstart recipe changes that key only: the quickstart's own
    defaults for the section (500 fp32 steps, a larger math test split) stay."""
    from core.config import build
    from mixrl.config import QuickstartConfig

    default = QuickstartConfig()
    cfg = build(QuickstartConfig, {"pretrain": {"train": {"max_minutes": 2}}, "grpo": {"trainer": {"micro_batch_sequences": 8}}})
    assert cfg.pretrain.train.max_minutes == 2 and default.pretrain.train.max_minutes == 0
    assert cfg.pretrain.train.max_steps == default.pretrain.train.max_steps == 500
    assert cfg.pretrain.train.dtype == "float32" and cfg.pretrain.data.test_rows == {"math": 4000}
    assert cfg.grpo.trainer.micro_batch_sequences == 8 and cfg.grpo.trainer.optim == default.grpo.trainer.optim
    assert cfg.grpo.sources == default.grpo.sources


def test_old_checkpoint_keys_name_the_shared_vocabulary():
    with pytest.raises(ConfigError, match="did you mean 'train.checkpoint_every_steps'"):
        load_config(SFTConfig, None, ["train.save_every_steps=50"])
    with pytest.raises(ConfigError, match='"auto"'):
        load_config(SFTConfig, None, ["train.resume=true"])
    assert load_config(SFTConfig, None, ["train.resume=auto"]).train.resume == "auto"
