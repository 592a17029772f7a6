"""Structured pruning of a decoder (report §2.2.1: the 3B base was pruned from a 7B model): importance scores on
calibration tokens, a plan of what to keep, and the surgery that builds the smaller model.

Importance (measured once, on the unpruned model, in one pass over the calibration rows):
- depth: the block influence of ShortGPT (Men et al., 2024), BI_l = 1 − mean_t cos(h_in_t, h_out_t), the cosine
  between a decoder layer's input and output hidden states on each calibration token. A layer that barely turns
  the residual stream scores near 0 and goes first.
- MLP channels: mean |act(gate(x)) · up(x)| of each intermediate channel (the input of `down_proj`).
- attention heads: mean L2 norm of each head's contribution to the residual stream, ‖W_o[:, head] · a_head‖,
  computed as sqrt(a_headᵀ (W_headᵀ W_head) a_head) so no [tokens, heads, hidden] tensor is ever made.

Grouped-query attention stays valid: query head h reads KV head h // (H / KV) (transformers' `repeat_kv`), so
KV groups are kept or dropped whole (`target_key_value_heads`, ranked by the sum of their query heads' scores)
and every kept group keeps the same number of its best query heads (`target_attention_heads / KV`), ordered
group by group. `head_dim` never changes and is written into config.json explicitly.

Departure for vLLM: vLLM 0.32's Qwen2 derives head_dim as hidden_size / num_attention_heads and ignores
config.head_dim (`vllm/model_executor/models/qwen2.py`), so a Qwen2 whose query heads were pruned is written as
the equivalent Llama (`LlamaForCausalLM`, `attention_bias: true` with a zero `o_proj` bias — Qwen2 has biases on
q/k/v only), whose head_dim both transformers and vLLM honour. Same weights, same logits (tested).

    scores = measure_importance(model, batches)
    plan = plan_pruning(scores, model.config, PruneTargets(num_layers=3, intermediate_size=512))
    smaller = apply_plan(model, plan)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from core.chat import IGNORE_INDEX
from core.config import ConfigError

# decoders with Llama-style parameter names (q/k/v/o_proj, gate/up/down_proj) whose surgery is the same
SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
LAYER_KEY = re.compile(r"^(?P<head>.*\blayers\.)(?P<index>\d+)\.(?P<tail>.+)$")


@dataclass
class PruneTargets:
    """What the pruned model keeps; 0 / empty = that dimension is not pruned."""

    drop_layers: tuple[int, ...] = ()  # explicit 0-based layer indices; wins over num_layers
    num_layers: int = 0  # keep this many layers, dropping those of lowest block influence
    intermediate_size: int = 0  # MLP channels kept in every layer
    num_key_value_heads: int = 0  # KV groups kept in every layer (with their query heads)
    num_attention_heads: int = 0  # query heads kept in every layer, the same number in each kept KV group


@dataclass
class ImportanceScores:
    """Importance of every prunable unit of the unpruned model; larger = more important."""

    block_influence: torch.Tensor  # [layers]
    mlp_channels: torch.Tensor  # [layers, intermediate_size]
    attention_heads: torch.Tensor  # [layers, num_attention_heads]


@dataclass
class PrunePlan:
    """Original indices of what survives, in order: layers, and per kept layer its channels and heads."""

    kept_layers: list[int]
    mlp_channels: list[list[int]]  # per kept layer, sorted
    query_heads: list[list[int]]  # per kept layer, grouped by kept KV head (the order GQA needs)
    key_value_heads: list[list[int]]  # per kept layer, sorted


def model_dimensions(config) -> dict[str, int]:
    """The prunable sizes of a Hugging Face decoder config (head_dim made explicit)."""
    return {
        "num_hidden_layers": config.num_hidden_layers,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
    }


def check_targets(config, targets: PruneTargets, *, prefix: str = "") -> None:
    """Refuse impossible targets before any work starts, naming the recipe key (`prefix` + section.key)."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{prefix}model_path: model_type {config.model_type!r} is not supported for pruning "
                          f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    dims = model_dimensions(config)
    layers, heads, kv = dims["num_hidden_layers"], dims["num_attention_heads"], dims["num_key_value_heads"]
    bad = [i for i in targets.drop_layers if not 0 <= i < layers]
    if bad:
        raise ConfigError(f"{prefix}depth.drop_layers: {bad} out of range; the model has layers 0..{layers - 1}")
    if len(set(targets.drop_layers)) != len(targets.drop_layers):
        raise ConfigError(f"{prefix}depth.drop_layers: {list(targets.drop_layers)} repeats a layer")
    if len(targets.drop_layers) >= layers:
        raise ConfigError(f"{prefix}depth.drop_layers: would drop all {layers} layers")
    if targets.drop_layers and targets.num_layers:
        raise ConfigError(f"{prefix}depth.drop_layers and {prefix}depth.target_layers are both set: give one")
    if not 0 <= targets.num_layers <= layers:
        raise ConfigError(f"{prefix}depth.target_layers={targets.num_layers}: the model has {layers} layers")
    if not 0 <= targets.intermediate_size <= dims["intermediate_size"]:
        raise ConfigError(f"{prefix}width.target_intermediate_size={targets.intermediate_size}: "
                          f"the model's intermediate_size is {dims['intermediate_size']}")
    if not 0 <= targets.num_key_value_heads <= kv:
        raise ConfigError(f"{prefix}width.target_key_value_heads={targets.num_key_value_heads}: "
                          f"the model has {kv} KV heads")
    kept_kv = targets.num_key_value_heads or kv
    kept_heads = targets.num_attention_heads or kept_kv * (heads // kv)
    if not 0 < kept_heads <= heads:
        raise ConfigError(f"{prefix}width.target_attention_heads={targets.num_attention_heads}: "
                          f"the model has {heads} attention heads")
    if kept_heads % kept_kv:
        raise ConfigError(f"{prefix}width.target_attention_heads={kept_heads} is not divisible by the {kept_kv} KV "
                          "heads kept: every KV group must keep the same number of query heads")
    if kept_heads // kept_kv > heads // kv:
        raise ConfigError(f"{prefix}width.target_attention_heads={kept_heads}: {kept_kv} KV groups hold at most "
                          f"{kept_kv * (heads // kv)} query heads ({heads // kv} each)")


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a Llama-style causal LM (`model.model.layers`)."""
    return model.model.layers


@torch.no_grad()
def measure_importance(model, batches) -> ImportanceScores:
    """Block influence, MLP channel and attention head scores over the trained tokens of packed `batches`.

    `batches` yields `sft.packing.PackedBatch`es; positions whose label is IGNORE_INDEX (padding, the first token
    of each packed sample) are not counted.
    """
    layers = decoder_layers(model)
    dims = model_dimensions(model.config)
    n_layers, head_dim = len(layers), dims["head_dim"]
    cos_sum = torch.zeros(n_layers, dtype=torch.float64)
    mlp_sum = torch.zeros(n_layers, dims["intermediate_size"], dtype=torch.float64)
    head_sum = torch.zeros(n_layers, dims["num_attention_heads"], dtype=torch.float64)
    tokens = 0
    mask: torch.Tensor | None = None  # [B, L] bool, the current batch's counted tokens

    def block_hook(index):
        def hook(module, args, kwargs, output):
            h_in = (args[0] if args else kwargs["hidden_states"]).float()  # [B, L, D]
            h_out = (output[0] if isinstance(output, tuple) else output).float()  # [B, L, D]
            cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)  # [B, L]
            cos_sum[index] += cos[mask].double().sum()
        return hook

    def mlp_hook(index):
        def hook(module, args):
            act = args[0].float().abs()  # [B, L, I] = |act(gate(x)) · up(x)|
            mlp_sum[index] += act[mask].double().sum(0)
        return hook

    def head_hook(index):
        def hook(module, args):
            a = args[0].float()  # [B, L, H*hd], attention output before o_proj
            a = a.view(*a.shape[:-1], -1, head_dim)  # [B, L, H, hd]
            w = module.weight.float().view(module.weight.shape[0], -1, head_dim)  # [D, H, hd]
            gram = torch.einsum("dhi,dhj->hij", w, w)  # [H, hd, hd]
            sq = torch.einsum("blhi,hij,blhj->blh", a, gram, a)  # [B, L, H] = ‖W_o[:, h] a_h‖²
            head_sum[index] += sq.clamp(min=0).sqrt()[mask].double().sum(0)
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(block_hook(i), with_kwargs=True))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(mlp_hook(i)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(head_hook(i)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            mask = batch.labels != IGNORE_INDEX
            tokens += int(mask.sum())
            model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise ValueError("calibration: no trained tokens in the calibration batches")
    return ImportanceScores(
        block_influence=(1 - cos_sum / tokens).float(),
        mlp_channels=(mlp_sum / tokens).float(),
        attention_heads=(head_sum / tokens).float(),
    )


def top_indices(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the `k` largest scores, in ascending index order (ties: the lower index wins).

    >>> top_indices(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2)
    [1, 3]
    """
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def plan_pruning(scores: ImportanceScores, config, targets: PruneTargets) -> PrunePlan:
    """Keep the most important units per `targets` (call `check_targets` first)."""
    dims = model_dimensions(config)
    layers, heads, kv = dims["num_hidden_layers"], dims["num_attention_heads"], dims["num_key_value_heads"]
    if targets.drop_layers:
        kept_layers = [i for i in range(layers) if i not in set(targets.drop_layers)]
    else:
        kept_layers = top_indices(scores.block_influence, targets.num_layers or layers)
    kept_kv = targets.num_key_value_heads or kv
    per_group = (targets.num_attention_heads or kept_kv * (heads // kv)) // kept_kv
    group_size = heads // kv
    channels, query, key_value = [], [], []
    for layer in kept_layers:
        channels.append(top_indices(scores.mlp_channels[layer], targets.intermediate_size or dims["intermediate_size"]))
        head_scores = scores.attention_heads[layer].view(kv, group_size)  # [KV, H/KV]
        groups = top_indices(head_scores.sum(-1), kept_kv)
        key_value.append(groups)
        query.append([g * group_size + h for g in groups for h in top_indices(head_scores[g], per_group)])
    return PrunePlan(kept_layers=kept_layers, mlp_channels=channels, query_heads=query, key_value_heads=key_value)


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """Row indices of `heads` in a [heads * head_dim, ...] projection.

    >>> head_rows([0, 2], 2).tolist()
    [0, 1, 4, 5]
    """
    return (torch.tensor(heads)[:, None] * head_dim + torch.arange(head_dim)).flatten()


def prune_layer_tensor(name: str, tensor: torch.Tensor, channels: list[int], query_heads: list[int],
                       key_value_heads: list[int], head_dim: int) -> torch.Tensor:
    """One decoder-layer parameter (`name` relative to the layer) with only the kept channels / heads."""
    if name.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
        return tensor[channels]
    if name == "mlp.down_proj.weight":
        return tensor[:, channels]
    if name.startswith("self_attn.q_proj."):
        return tensor[head_rows(query_heads, head_dim)]
    if name.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
        return tensor[head_rows(key_value_heads, head_dim)]
    if name == "self_attn.o_proj.weight":
        return tensor[:, head_rows(query_heads, head_dim)]
    return tensor


def pruned_state_dict(state: dict[str, torch.Tensor], plan: PrunePlan, head_dim: int) -> dict[str, torch.Tensor]:
    """The state dict of the pruned model: kept layers renumbered 0..n-1, their tensors sliced per `plan`."""
    new_index = {old: new for new, old in enumerate(plan.kept_layers)}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = LAYER_KEY.match(key)
        if match is None:
            out[key] = tensor.clone()
            continue
        old = int(match["index"])
        if old not in new_index:
            continue
        new = new_index[old]
        out[f"{match['head']}{new}.{match['tail']}"] = prune_layer_tensor(
            match["tail"], tensor, plan.mlp_channels[new], plan.query_heads[new], plan.key_value_heads[new], head_dim
        ).clone()
    return out


def pruned_config(config, plan: PrunePlan):
    """The pruned model's config: sizes from `plan`, head_dim explicit; a head-pruned Qwen2 becomes a Llama."""
    dims = model_dimensions(config)
    raw = config.to_dict()
    raw.update(
        num_hidden_layers=len(plan.kept_layers),
        intermediate_size=len(plan.mlp_channels[0]),
        num_attention_heads=len(plan.query_heads[0]),
        num_key_value_heads=len(plan.key_value_heads[0]),
        head_dim=dims["head_dim"],
    )
    if raw.get("layer_types") is not None:
        raw["layer_types"] = [raw["layer_types"][i] for i in plan.kept_layers]
    if config.model_type == "qwen2" and raw["num_attention_heads"] != config.num_attention_heads:
        # vLLM's Qwen2 ignores head_dim (module docstring): the same network as a Llama with q/k/v/o biases
        for key in ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types", "model_type"):
            raw.pop(key, None)
        raw.update(architectures=["LlamaForCausalLM"], attention_bias=True, mlp_bias=False)
        return AutoConfig.for_model("llama", **raw)
    raw.pop("model_type", None)
    return AutoConfig.for_model(config.model_type, **raw)


def apply_plan(model, plan: PrunePlan):
    """A new, smaller model (same dtype, generation config) holding the kept weights of `model` (left unchanged)."""
    config = pruned_config(model.config, plan)
    state = pruned_state_dict(model.state_dict(), plan, model_dimensions(model.config)["head_dim"])
    pruned = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    if getattr(config, "attention_bias", False) and config.model_type != model.config.model_type:
        for i, layer in enumerate(decoder_layers(pruned)):  # Qwen2 had no o_proj bias: the Llama's is zero
            state.setdefault(f"model.layers.{i}.self_attn.o_proj.bias", torch.zeros_like(layer.self_attn.o_proj.bias))
    pruned.load_state_dict(state, strict=True)
    pruned.generation_config = model.generation_config
    return pruned.eval()
