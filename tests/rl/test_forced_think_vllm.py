"""`rl.algo_extras.forced_think_mask` against vLLM's own thinking-budget state machine.

vLLM's `ThinkingBudgetStateHolder` (the sampler's thinking-token-budget logic) is driven token by token as the
sampler drives it — `update_state` on the tokens so far, `apply_to_logits`, take the forced token if there is one,
else the "model's" — with no engine started. Random prompts that open, continue or close thinking; opening and
closing sequences of 1–3 tokens; budgets 1–10; natural, partial, stray and forced closes; truncation; several spans.
The tokens vLLM forced must be exactly the ones `forced_think_mask` marks, so a vLLM upgrade that changes its
budget bookkeeping fails here. Skipped without vLLM (importing it takes seconds, so it lives outside the pure tests).
"""

import random
import types

import pytest
import torch

from rl.algo_extras import forced_think_mask

VOCAB = 30
FILLER = [5, 6, 7, 8, 9]


def _replay(seed: int, holder_cls, batch_update_cls):
    rnd = random.Random(seed)
    open_ids, close_ids = [3, 4, 2][: rnd.randint(1, 3)], [17, 18, 19][: rnd.randint(1, 3)]
    budget = rnd.randint(1, 10)
    # the prompt: no thinking, opens it, opens it with thinking tokens already in it, or opens and closes it
    variant = rnd.randrange(4)
    prompt = [1, 5] + [[], open_ids, open_ids + [6, 7][: rnd.randint(1, 2)], open_ids + [6] + close_ids + [7]][variant]
    holder = holder_cls(types.SimpleNamespace(reasoning_start_token_ids=open_ids, reasoning_end_token_ids=close_ids),
                        4, 0, torch.device("cpu"), False)
    out: list[int] = []  # the request's running output list, shared with the holder as in vLLM
    params = types.SimpleNamespace(thinking_token_budget=budget)
    holder.sync_batch(batch_update_cls(batch_size=1, removed=[], added=[(0, params, prompt, out)], moved=[]))
    p_close, p_reopen = rnd.choice([0.0, 0.1, 0.4]), rnd.choice([0.0, 0.2])
    # the "model" opens thinking first unless the prompt left it open
    thinking, queue, forced = True, [] if variant in (1, 2) else list(open_ids), []
    for _ in range(rnd.randint(1, 40)):
        holder.update_state([out], None)
        logits = holder.apply_to_logits(torch.zeros(1, VOCAB), False, None)
        if logits.max() > 1e8:  # vLLM forced this token
            forced.append(len(out))
            out.append(int(logits.argmax()))
            queue = []
            continue
        if not queue:
            if thinking and rnd.random() < p_close:
                queue, thinking = list(close_ids), False
            elif not thinking and rnd.random() < p_reopen:
                queue, thinking = list(open_ids), True
            else:  # filler, sometimes a lone first closing token (a partial or, inside no span, a stray close)
                queue = [rnd.choice(FILLER + [close_ids[0]])]
        out.append(queue.pop(0))
    mask = forced_think_mask(out, close_ids, thinking_budget=budget, open_ids=open_ids, prompt_ids=prompt)
    return forced, torch.nonzero(mask).flatten().tolist(), (prompt, out, budget)


def test_forced_tokens_match_vllm_budget_state():
    state = pytest.importorskip("vllm.v1.sample.thinking_budget_state")
    interface = pytest.importorskip("vllm.v1.sample.logits_processor.interface")
    n_forced = 0
    for seed in range(600):
        theirs, ours, case = _replay(seed, state.ThinkingBudgetStateHolder, interface.BatchUpdate)
        assert ours == theirs, f"seed {seed}: prompt, response, budget = {case}"
        n_forced += bool(theirs)
    assert n_forced > 150  # the replay does exercise forcing
