"""The quickstart's pieces that need no engine: the reward-model deploy gate refuses a model below it."""

import pytest

from core.config import load_config
from mixrl.config import QuickstartConfig
from mixrl.quickstart import chain_paths, start_reward_model_service


def test_reward_model_below_the_gate_is_not_deployed(tmp_path):
    cfg = chain_paths(load_config(QuickstartConfig, None, [
        f"run_root={tmp_path}", "reward_model.train_pairs=40", "reward_model.heldout_pairs=20", "reward_model.steps=2",
        "reward_model.min_accuracy=1.01",  # no model can reach it
    ]))
    with pytest.raises(RuntimeError, match="failed validation"):
        start_reward_model_service(cfg)
    assert (tmp_path / "reward_model").exists()  # trained and validated ...
    assert not (tmp_path / "registry").exists()  # ... but nothing started or registered
