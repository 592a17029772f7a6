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


def test_without_a_reward_model_service_the_rl_stage_leaves_chat_out(tmp_path, capsys):
    """`reward_model.instances=0` starts no service: the chat source, which only a reward model scores, leaves the
    GRPO stage (its rewards could only be masked), and the console says so; the other sources stay as they are."""
    from mixrl.data.synthetic import ensure_datasets
    from mixrl.quickstart import without_reward_model_sources

    cfg = chain_paths(load_config(QuickstartConfig, None, [
        f"run_root={tmp_path}", "reward_model.instances=0",
        "pretrain.data.train_rows={math: 300, code: 30, ifeval: 30, chat: 30}", "pretrain.data.test_rows_per_domain=10",
    ]))
    ensure_datasets(cfg.pretrain.data)
    assert [s.name for s in cfg.grpo.sources] == ["math", "code", "ifeval", "chat"]
    grpo = without_reward_model_sources(cfg.grpo)
    assert grpo.sources == cfg.grpo.sources[:3]
    assert "leaves out source(s) chat" in capsys.readouterr().out
    assert without_reward_model_sources(grpo) == grpo  # nothing left to drop
