"""Pure tests of the pruning scores and surgery (`sft/pruning.py`) on tiny random Qwen2/Llama models.

Each surgery test builds a model where the removed part provably contributes nothing (an identity block, MLP
channels that never activate, heads whose output projection is zero), so the pruned model must give the same
logits: a wrong slice, a wrong GQA order or a wrong head_dim in config.json would change them.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from core.config import ConfigError
from core.model import build_model, save_checkpoint
from core.sections import ModelConfig
from sft.packing import collate_rows, pack_samples
from sft.pruning import (
    PrunePlan,
    PruneTargets,
    apply_plan,
    check_targets,
    measure_importance,
    plan_pruning,
    pruned_state_dict,
)


@pytest.fixture()
def model(tokenizer):
    cfg = ModelConfig(hidden_size=64, num_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                      max_position_embeddings=256)
    return build_model(cfg, tokenizer, seed=0).eval()


@pytest.fixture()
def batch(tokenizer):
    texts = ["What is 12 + 30?\n12 + 30 = 42", "def f(xs): return sum(xs)", "7 + 8 = 15. The answer is 15."]
    samples = [(ids, ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows, _ = pack_samples(samples, 32, pad_id=0)
    return collate_rows(rows)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits


def prune(model, batch, targets: PruneTargets):
    check_targets(model.config, targets)
    plan = plan_pruning(measure_importance(model, [batch]), model.config, targets)
    return plan, apply_plan(model, plan)


def test_nothing_to_drop_gives_identical_logits_and_config(model, batch):
    plan, pruned = prune(model, batch, PruneTargets())
    assert plan.kept_layers == [0, 1, 2] and plan.query_heads[0] == [0, 1, 2, 3]
    assert torch.equal(logits(model, batch), logits(pruned, batch))
    assert type(pruned).__name__ == "Qwen2ForCausalLM" and pruned.config.head_dim == 16


def test_identity_block_has_zero_influence_and_dropping_it_changes_nothing(model, batch):
    layer = model.model.layers[1]
    with torch.no_grad():  # attention and MLP write nothing into the residual stream: the block is the identity
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    scores = measure_importance(model, [batch])
    assert float(scores.block_influence[1]) == pytest.approx(0.0, abs=1e-6)
    assert float(scores.block_influence.min()) == float(scores.block_influence[1])
    plan, pruned = prune(model, batch, PruneTargets(num_layers=2))
    assert plan.kept_layers == [0, 2]
    assert pruned.config.num_hidden_layers == 2 and len(pruned.config.layer_types) == 2
    torch.testing.assert_close(logits(pruned, batch), logits(model, batch), rtol=0, atol=1e-5)


def test_block_influence_is_one_minus_mean_cosine(model, batch):
    """Hand-derived: hidden states from transformers' own output, the score recomputed here."""
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, output_hidden_states=True, use_cache=False)
    mask = batch.labels != -100
    h_in, h_out = out.hidden_states[0], out.hidden_states[1]  # embeddings -> layer 0's output (not the final norm)
    expected = 1 - torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)[mask].mean()
    assert float(measure_importance(model, [batch]).block_influence[0]) == pytest.approx(float(expected), abs=1e-5)


def test_dead_mlp_channels_score_zero_and_removing_them_changes_nothing(model, batch):
    dead = [3, 10, 11, 20, 40, 47]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[dead] = 0  # act(gate) * 0 = 0: these channels never fire
    scores = measure_importance(model, [batch])
    assert torch.all(scores.mlp_channels[:, dead] == 0) and torch.all(scores.mlp_channels[:, [0, 1, 2]] > 0)
    plan, pruned = prune(model, batch, PruneTargets(intermediate_size=48 - len(dead)))
    assert all(set(kept).isdisjoint(dead) for kept in plan.mlp_channels)
    assert pruned.config.intermediate_size == 42
    torch.testing.assert_close(logits(pruned, batch), logits(model, batch), rtol=0, atol=1e-5)


def test_query_heads_pruned_within_groups_keep_gqa_valid_and_load_as_llama(model, batch, tokenizer, tmp_path):
    """Heads 1 and 3 (one per KV group) write nothing; keeping 2 heads keeps 0 (group 0) and 2 (group 1)."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 16:32] = 0
            layer.self_attn.o_proj.weight[:, 48:64] = 0
    scores = measure_importance(model, [batch])
    assert torch.all(scores.attention_heads[:, [1, 3]] == 0) and torch.all(scores.attention_heads[:, [0, 2]] > 0)
    plan, pruned = prune(model, batch, PruneTargets(num_attention_heads=2))
    assert plan.query_heads == [[0, 2]] * 3 and plan.key_value_heads == [[0, 1]] * 3
    c = pruned.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size) == (2, 2, 16, 64)
    assert type(pruned).__name__ == "LlamaForCausalLM" and c.attention_bias  # vLLM's Qwen2 ignores head_dim
    torch.testing.assert_close(logits(pruned, batch), logits(model, batch), rtol=0, atol=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(save_checkpoint(pruned, tokenizer, tmp_path / "pruned"))
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), rtol=0, atol=1e-5)


def test_whole_kv_group_dropped_with_its_query_heads(model, batch):
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, :32] = 0  # group 0 = query heads 0, 1
    plan, pruned = prune(model, batch, PruneTargets(num_key_value_heads=1))
    assert plan.key_value_heads == [[1]] * 3 and plan.query_heads == [[2, 3]] * 3
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    torch.testing.assert_close(logits(pruned, batch), logits(model, batch), rtol=0, atol=1e-5)


def test_llama_without_biases_prunes_in_place_of_architecture(batch):
    config = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    plan, pruned = prune(model, batch, PruneTargets())
    assert type(pruned).__name__ == "LlamaForCausalLM" and not pruned.config.attention_bias
    assert torch.equal(logits(model, batch), logits(pruned, batch))


def test_state_dict_surgery_renumbers_layers_and_slices_gqa_rows():
    hd = 2
    state = {
        "model.embed_tokens.weight": torch.zeros(5, 4),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 4),
        "model.layers.1.self_attn.q_proj.weight": torch.arange(8.0)[:, None].expand(8, 4),  # row r holds r
        "model.layers.1.self_attn.k_proj.bias": torch.arange(4.0),
        "model.layers.1.self_attn.o_proj.weight": torch.arange(8.0)[None].expand(4, 8),
        "model.layers.1.mlp.down_proj.weight": torch.arange(6.0)[None].expand(4, 6),
        "model.layers.1.mlp.gate_proj.weight": torch.arange(6.0)[:, None].expand(6, 4),
    }
    plan = PrunePlan(kept_layers=[1], mlp_channels=[[1, 4]], query_heads=[[2, 3]], key_value_heads=[[1]])
    out = pruned_state_dict(state, plan, hd)
    assert sorted(out) == sorted(k.replace("layers.1.", "layers.0.") for k in state if "layers.0." not in k)
    assert out["model.layers.0.self_attn.q_proj.weight"][:, 0].tolist() == [4, 5, 6, 7]
    assert out["model.layers.0.self_attn.k_proj.bias"].tolist() == [2, 3]
    assert out["model.layers.0.self_attn.o_proj.weight"][0].tolist() == [4, 5, 6, 7]
    assert out["model.layers.0.mlp.down_proj.weight"][0].tolist() == [1, 4]
    assert out["model.layers.0.mlp.gate_proj.weight"][:, 0].tolist() == [1, 4]


@pytest.mark.parametrize("targets, key", [
    (PruneTargets(num_layers=4), "depth.target_layers=4: the model has 3 layers"),
    (PruneTargets(drop_layers=(0, 3)), "depth.drop_layers: [3] out of range"),
    (PruneTargets(drop_layers=(0, 1, 2)), "depth.drop_layers: would drop all 3 layers"),
    (PruneTargets(drop_layers=(1,), num_layers=2), "depth.drop_layers and depth.target_layers are both set"),
    (PruneTargets(intermediate_size=49), "width.target_intermediate_size=49"),
    (PruneTargets(num_key_value_heads=3), "width.target_key_value_heads=3: the model has 2 KV heads"),
    (PruneTargets(num_attention_heads=3), "width.target_attention_heads=3 is not divisible by the 2 KV heads"),
    (PruneTargets(num_key_value_heads=1, num_attention_heads=4), "1 KV groups hold at most 2 query heads"),
    (PruneTargets(num_attention_heads=6), "width.target_attention_heads=6: the model has 4 attention heads"),
])
def test_impossible_targets_name_the_key(model, targets, key):
    with pytest.raises(ConfigError) as err:
        check_targets(model.config, targets)
    assert key in str(err.value)
