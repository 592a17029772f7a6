"""core.lean_ops: the memory-lean SwiGLU MLP and RMSNorm give the modules' own numbers (values and gradients) while
keeping fewer bytes for backward, and only modules that prove equal are swapped."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from core.lean_ops import RMSNormFunction, SwiGLUFunction, apply_lean_ops, rms_norm, swiglu


def _saved_bytes(fn) -> tuple[torch.Tensor, int]:
    """fn()'s output and the bytes autograd keeps for its backward (each storage once)."""
    storages: dict[int, int] = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def test_functions_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w_gate, w_up = (torch.randn(5, 6, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(2))
    w_down = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(SwiGLUFunction.apply, (x, w_gate, w_up, w_down))
    weight = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: RMSNormFunction.apply(a, b, 1e-6), (x, weight))


def test_swiglu_keeps_half_the_intermediate_activations():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 32, generator=g, requires_grad=True)
    w_gate, w_up = (torch.randn(128, 32, generator=g, requires_grad=True) for _ in range(2))
    w_down = torch.randn(32, 128, generator=g, requires_grad=True)
    own, own_bytes = _saved_bytes(lambda: torch.nn.functional.linear(
        torch.nn.functional.silu(x @ w_gate.t()) * (x @ w_up.t()), w_down))
    lean, lean_bytes = _saved_bytes(lambda: swiglu(x, w_gate, w_up, w_down))
    torch.testing.assert_close(lean, own)
    intermediate = 4 * 16 * 128 * 4  # one [4, 16, 128] fp32 tensor
    assert own_bytes - lean_bytes >= 2 * intermediate  # silu(gate) and the product are no longer kept
    grads_own = torch.autograd.grad(own.square().sum(), (x, w_gate, w_up, w_down))
    grads_lean = torch.autograd.grad(lean.square().sum(), (x, w_gate, w_up, w_down))
    for a, b in zip(grads_lean, grads_own):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _qwen2(**kw) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=True, **kw)).eval()


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()


@pytest.mark.parametrize("build", [_qwen2, _llama], ids=["qwen2", "llama"])
def test_model_same_logits_and_gradients_with_less_kept(build):
    own = build()
    lean = copy.deepcopy(own)
    counts = apply_lean_ops(lean)
    assert counts == {"mlp": 2, "norm": 5, "left": 0}  # per layer: MLP, two norms; and the final norm
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(2))

    def loss_of(model):
        logits = model(input_ids=ids).logits
        return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None].roll(1, 1)).mean(), logits

    (loss_own, logits_own), own_bytes = _saved_bytes(lambda: loss_of(own))
    (loss_lean, logits_lean), lean_bytes = _saved_bytes(lambda: loss_of(lean))
    assert torch.equal(logits_lean, logits_own)  # the same forward ops: the same numbers
    assert lean_bytes < 0.8 * own_bytes
    loss_own.backward()
    loss_lean.backward()
    for (name, p_own), p_lean in zip(own.named_parameters(), lean.parameters()):
        torch.testing.assert_close(p_lean.grad, p_own.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_close_to_the_modules_own():
    own = _qwen2()
    lean = copy.deepcopy(own)
    apply_lean_ops(lean)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(3))
    outs = []
    for model in (own, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        logits.float().square().mean().backward()
        outs.append((logits.float(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0.05, atol=0.05)
    for a, b in zip(outs[1][1], outs[0][1]):
        assert a.dtype == torch.float32  # master gradients stay fp32
        assert float((a - b).norm()) <= 0.05 * float(b.norm()) + 1e-6


def test_modules_with_other_semantics_are_left_alone():
    class GeluMLP(torch.nn.Module):  # the SwiGLU shape with another activation
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj = torch.nn.Linear(8, 16, bias=False), torch.nn.Linear(8, 16, bias=False)
            self.down_proj, self.act_fn = torch.nn.Linear(16, 8, bias=False), torch.nn.GELU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    class GemmaStyleRMSNorm(torch.nn.Module):  # scales by (1 + weight)
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = torch.nn.Parameter(torch.randn(8)), 1e-6

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * (1 + self.weight)

    model = torch.nn.Sequential(GemmaStyleRMSNorm(), GeluMLP())
    forwards = [m.forward for m in model]
    assert apply_lean_ops(model) == {"mlp": 0, "norm": 0, "left": 2}
    assert [m.forward for m in model] == forwards


def test_rms_norm_casts_back_like_llama():
    x = torch.randn(2, 5, 8).to(torch.bfloat16).requires_grad_()
    weight = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    y = rms_norm(x, weight, 1e-6)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16
