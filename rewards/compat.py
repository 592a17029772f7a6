r"""Drop-in entry points for verl, TRL and OpenRLHF, all backed by the same `RewardRouter`.

verl (``custom_reward_function`` in the trainer config)::

    reward:
      custom_reward_function:
        path: pkg://rewards.compat        # or the file path of rewards/compat.py
        name: compute_score

TRL::

    from rewards import make_trl_reward
    GRPOTrainer(..., reward_funcs=[make_trl_reward()])

OpenRLHF (``--remote_rm_url http://HOST:PORT/get_reward``)::

    mixrl serve-rewards --port 5000                     # loopback; wired by the CLI to `serve_rewards`
    curl -s localhost:5000/get_reward -d '{"query": ["Q A \\boxed{2}"], "prompts": ["Q "], "labels": ["2"]}'
    MIXRL_REWARDS_TOKEN=... mixrl serve-rewards --host 0.0.0.0    # off loopback a token is required

What each framework cannot express, named: verl's per-sample ``compute_score`` sees no group, so it adds no
group-overlong length term, and it cannot mask, so an uncomputable reward comes back as ``score = NaN`` (loud in
verl's metrics, never a silent 0) with ``error`` set. TRL accepts ``None`` (it masks with NaN-aware sums).
OpenRLHF gets ``null``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewards.config import RewardConfig, UnknownRouteError
from rewards.router import RewardRouter
from rewards.types import RewardResult, Sample

_router: RewardRouter | None = None
_router_lock = threading.Lock()


def default_router() -> RewardRouter:
    """The process-wide router with the default configuration (what `compute_score` uses)."""
    global _router
    with _router_lock:
        if _router is None:
            _router = RewardRouter()
        return _router


def set_default_router(router: RewardRouter | None) -> None:
    """Install the router that `compute_score` (and `make_trl_reward` without one) use in this process, e.g. one
    with the recipe's `RewardConfig` and sandbox / reward-model clients. ``None`` restores the default on next use.
    """
    global _router
    with _router_lock:
        _router = router


def _as_float(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    r"""verl's reward-function signature. Returns ``score`` (final reward), ``acc`` (answer verdict before
    coefficients) and the components; ``score``/``acc`` are NaN when the reward could not be computed.

    ``extra_info`` may carry ``prompt`` (thinking-mode detection, reward models), ``thinking`` (bool), ``ability``.
    Extra keyword arguments verl passes (``reward_router_address``...) are accepted and ignored.

    >>> r = compute_score("openai/gsm8k", "3 + 4 = 7\n#### 7", "7")
    >>> r["score"], r["acc"], r["error"]
    (1.0, 1.0, '')
    """
    info = dict(extra_info or {})
    sample = Sample(
        data_source=data_source,
        response=solution_str,
        ground_truth=ground_truth if isinstance(ground_truth, str) else json.dumps(ground_truth),
        ability=info.get("ability"),
        prompt=info.get("prompt") if isinstance(info.get("prompt"), str) else None,
        thinking=info.get("thinking") if isinstance(info.get("thinking"), bool) else None,
        extra_info=info,
    )
    result = default_router().score_batch([sample], length_terms=False)[0]
    # Fixed keys and types for every sample: verl stacks each key across the batch into one array.
    return {
        "score": _as_float(result.reward),
        "acc": _as_float(result.components.get("answer")) if result.reward is not None else float("nan"),
        "format": result.components.get("format", 1.0),
        "repetition": result.components.get("repetition", 1.0),
        "masked": float(result.reward is None),
        "pred": str(result.details.get("pred", "")),
        "error": result.error or "",
    }


# ---------------------------------------------------------------------------------------------------------- TRL


def _text(x: Any) -> str:
    """A completion/prompt as text: a string, or the content of a conversational message list."""
    if isinstance(x, str):
        return x
    if isinstance(x, Mapping):
        return str(x.get("content", ""))
    if isinstance(x, Sequence):
        return "\n".join(_text(m) for m in x)
    return str(x)


def _last_user_turn(prompt: Any) -> str:
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if users:
            return str(users[-1].get("content", ""))
    return _text(prompt)


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    value = kwargs.get(name)
    return list(value) if value is not None else [None] * n


def make_trl_reward(
    router: RewardRouter | None = None,
    default_data_source: str = "mixrl/synthetic_math",
) -> Callable[..., list[float | None]]:
    r"""A TRL reward function ``f(prompts, completions, **kwargs) -> list[float | None]``.

    Dataset columns arrive as kwargs: ``data_source``, ``ability``, ``extra_info`` and the ground truth from
    ``reward_model`` (verl schema: ``{"ground_truth": ...}``) or a ``ground_truth``/``solution``/``answer`` column.
    Completions of the same prompt form a group (length penalty); ``completion_ids`` gives token lengths and
    ``trainer_state.global_step`` the α schedule's step, when TRL passes them.

    >>> f = make_trl_reward()
    >>> f(prompts=["What is 3+4?"], completions=["\\boxed{7}"], ground_truth=["7"])[0] > 1.0  # 1 + α·0.5
    True
    """

    def mixrl_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        data_sources = _column(kwargs, "data_source", n)
        abilities = _column(kwargs, "ability", n)
        extra = _column(kwargs, "extra_info", n)
        reward_model = _column(kwargs, "reward_model", n)
        fallback = next((kwargs[k] for k in ("ground_truth", "solution", "answer") if kwargs.get(k) is not None), None)
        ids = kwargs.get("completion_ids")
        state = kwargs.get("trainer_state")
        step = int(getattr(state, "global_step", 0) or 0)
        samples = []
        for i in range(n):
            rm = reward_model[i]
            gt = rm.get("ground_truth") if isinstance(rm, Mapping) else (fallback[i] if fallback is not None else None)
            if gt is None:
                raise ValueError("no ground truth: pass a 'reward_model' ({'ground_truth': ...}) or 'ground_truth' column")
            prompt = _last_user_turn(prompts[i]) if i < len(prompts) else None
            samples.append(
                Sample(
                    data_source=data_sources[i] or default_data_source,
                    response=_text(completions[i]),
                    ground_truth=gt if isinstance(gt, str) else json.dumps(gt),
                    ability=abilities[i],
                    prompt=prompt,
                    group_id=_text(prompts[i]) if i < len(prompts) else None,
                    response_tokens=len(ids[i]) if ids is not None else None,
                    extra_info=extra[i] if isinstance(extra[i], Mapping) else None,
                )
            )
        return [r.reward for r in (router or default_router()).score_batch(samples, global_step=step)]

    return mixrl_reward


# ---------------------------------------------------------------------------------------------------- OpenRLHF


class _BadRequest(ValueError):
    """Input the server answers with 400 and this message (it stays up)."""


REWARDS_TOKEN_ENV = "MIXRL_REWARDS_TOKEN"
MAX_BODY_BYTES = 8 << 20
# The repetition detector costs ~115 MB of memory per MB of text: one 8 MB response took the server to 1 GB.
# 256k characters is far past any response a policy is trained to write (~64k tokens).
MAX_QUERY_CHARS = 256 * 1024


def _openrlhf_samples(body: Any, default_data_source: str,
                      max_query_chars: int = MAX_QUERY_CHARS) -> tuple[list[Sample], int]:
    if not isinstance(body, Mapping):
        raise _BadRequest("body must be a JSON object")
    query = body.get("query")
    if not isinstance(query, list) or not all(isinstance(q, str) for q in query):
        raise _BadRequest("'query' must be a list of strings")
    for i, q in enumerate(query):
        if len(q) > max_query_chars:
            raise _BadRequest(f"'query[{i}]' has {len(q)} characters; this server scores at most {max_query_chars}")
    n = len(query)
    prompts = body.get("prompts") or [""] * n
    labels = body.get("labels")
    if not isinstance(labels, list) or len(labels) != n:
        raise _BadRequest("'labels' must be a list with one ground truth per query")
    if not isinstance(prompts, list) or len(prompts) != n:
        raise _BadRequest("'prompts' must be a list with one prompt per query")
    sources = body.get("data_sources") or [default_data_source] * n
    if not isinstance(sources, list) or len(sources) != n:
        raise _BadRequest("'data_sources' must be a list with one entry per query")
    step = body.get("global_step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**53:
        raise _BadRequest("'global_step' must be an integer in [0, 2**53)")
    samples = []
    for q, p, label, src in zip(query, prompts, labels, sources):
        p = p if isinstance(p, str) else ""
        # OpenRLHF sends prompt+response as the query; the response is what follows the prompt.
        response = q[len(p):] if p and q.startswith(p) else q
        samples.append(
            Sample(
                data_source=src,
                response=response,
                ground_truth=label if isinstance(label, str) else json.dumps(label),
                prompt=p or None,
                group_id=p or None,
            )
        )
    return samples, step


def openrlhf_response(results: Sequence[RewardResult]) -> dict[str, Any]:
    """``{"rewards", "scores", "extra_logs"}`` for OpenRLHF; ``null`` where a reward could not be computed."""
    rewards = [r.reward for r in results]
    logs: dict[str, list] = {"acc": [], "format": [], "repetition": [], "length": [], "masked": []}
    for r in results:
        logs["acc"].append(r.components.get("answer"))
        logs["format"].append(r.components.get("format"))
        logs["repetition"].append(r.components.get("repetition"))
        logs["length"].append(r.components.get("length", 0.0))
        logs["masked"].append(float(r.reward is None))
    return {"rewards": rewards, "scores": rewards, "extra_logs": logs}


def make_reward_server(
    host: str = "127.0.0.1",
    port: int = 5000,
    config: RewardConfig | None = None,
    *,
    router: RewardRouter | None = None,
    default_data_source: str = "mixrl/synthetic_math",
    token: str | None = None,
    insecure_no_token: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_query_chars: int = MAX_QUERY_CHARS,
    request_timeout_s: float = 10.0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
):
    """An OpenRLHF-compatible reward server, bound but not yet serving (call ``serve_forever``; ``port=0`` picks
    a free port, read it from ``server.server_address``). Bad input gets a 400 with a message; the server stays up.

    With ``token``, ``POST /get_reward`` needs ``Authorization: Bearer <token>`` (checked before the body is
    read; ``GET /health`` is open). A non-loopback ``host`` without a token is refused unless
    ``insecure_no_token``. Bodies past ``max_body_bytes`` are 413, a query past ``max_query_chars`` is 400 (the
    HTTP layer's protections: `sandbox.http_server`).
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    from sandbox.http_server import HTTPError, ServiceServer, is_loopback, json_endpoint, json_not_found, json_response

    if not is_loopback(host) and not token and not insecure_no_token:
        raise ValueError(f"refusing to serve rewards on {host!r} without a token: anyone who can reach it could "
                         f"load it with work; pass --token (or ${REWARDS_TOKEN_ENV}), or --insecure-no-token")
    the_router = router or RewardRouter(config)

    def get_reward(body: dict) -> dict:
        try:
            samples, step = _openrlhf_samples(body, default_data_source, max_query_chars)
            results = the_router.score_batch(samples, global_step=step)
        except (_BadRequest, UnknownRouteError) as e:
            raise HTTPError(400, str(e)) from None
        payload = openrlhf_response(results)
        payload["extra_logs"] = {
            k: [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
            for k, vals in payload["extra_logs"].items()
        }
        return payload

    async def health(request):
        return json_response(200, {"status": "ok"})

    endpoint = json_endpoint(get_reward, token=token, max_body_bytes=max_body_bytes)
    app = Starlette(routes=[Route("/health", health, methods=["GET"]),
                            Route("/get_reward", endpoint, methods=["POST"])],
                    exception_handlers=json_not_found("use POST /get_reward"))
    return ServiceServer(app, host, port, request_timeout_s=request_timeout_s, ssl_certfile=ssl_certfile,
                         ssl_keyfile=ssl_keyfile)


def serve_rewards(
    host: str = "127.0.0.1",
    port: int = 5000,
    config: RewardConfig | None = None,
    *,
    router: RewardRouter | None = None,
    default_data_source: str = "mixrl/synthetic_math",
    **server_options: Any,
) -> None:
    """Serve ``POST /get_reward`` (OpenRLHF) and ``GET /health`` until interrupted. Blocks.

    ``router`` (with sandbox / reward-model clients) takes precedence over ``config``; ``server_options`` are
    `make_reward_server`'s (``token``, ``insecure_no_token``, ``ssl_certfile``...).
    Run: ``mixrl serve-rewards --port 5000`` (``--host 0.0.0.0`` needs ``--token`` or $MIXRL_REWARDS_TOKEN).
    """
    server = make_reward_server(host, port, config, router=router, default_data_source=default_data_source,
                                **server_options)
    print(f"mixrl rewards: serving OpenRLHF /get_reward on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C ends `serve-rewards` quietly; the socket closes below
        pass
    finally:
        server.server_close()
