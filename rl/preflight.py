"""Checks a GRPO run makes before Ray and vLLM start: a clear `ConfigError` in seconds, not a buried one in minutes.

    preflight(cfg)   # first thing in `rl.grpo.run_grpo`

In order, each error naming the key, folder or URL at fault:

1. numbers in range and combinations a run can use (`rl.config.check_config`): `max_steps=-3`,
   `rollout.samples_per_prompt=0`, `trainer.optim.lr_peak=nan`...;
2. the model folder (`model_path`): it exists, its tokenizer loads (and its chat template can switch thinking
   mode when a source or the evaluation asks for it), it has `config.json` and weights (`*.safetensors` /
   `*.bin`) — a folder without weights used to fail inside the trainer actor after Ray and the engines had
   started;
3. the reward services the run will call: the sandbox at `sandbox_url` answers `/health`; the registry at
   `reward_model_registry` answers and lists a live service for every reward model a source routes to.

Not covered here: the datasets (read by `rl.prompts.load_sources` right after, still before Ray starts, each
bad row named with its file and row), what the Ray cluster can hold (`rl.trainer_group.check_ray_placement`
once Ray is up), and a service that goes down later (its samples are masked, and a domain fully masked is
named on the console, `rl.grpo.reward_metrics`).
"""

from __future__ import annotations

from pathlib import Path

from core.config import ConfigError
from rl.config import GRPOConfig, check_config

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
SERVICE_TIMEOUT_S = 2.0  # a live service answers a health check well within this


def preflight(cfg: GRPOConfig) -> None:
    """Raise `ConfigError` for the first problem found (see the module docstring); returns when the run can start."""
    check_config(cfg)
    thinking = any(s.mode != "direct" for s in cfg.sources) or (cfg.eval.prompts > 0 and cfg.eval.mode == "think")
    check_model_folder(cfg.model_path, thinking=thinking)
    check_reward_services(cfg)


def check_model_folder(model_path: str, key: str = "model_path", *, thinking: bool = False) -> None:
    """A local Hugging Face folder has a tokenizer that loads (with a thinking switch if `thinking`), config.json and
    weights. A hub id ("org/name", no such folder) is left to transformers."""
    folder = Path(model_path)
    if not folder.exists():
        if model_path.count("/") == 1 and not model_path.startswith((".", "/", "~")):
            return  # "org/name": a hub id, resolved (or refused) by transformers
        raise ConfigError(f"{key}: {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is not a model folder")
    from transformers import AutoTokenizer

    from core.chat import require_thinking_switch

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, the folder is the cause
        raise ConfigError(f"{key}: the tokenizer in {folder} does not load: {type(e).__name__}: {e}") from e
    if thinking:
        require_thinking_switch(tokenizer)  # `core.chat.ChatTemplateError`, naming the fix
    if not (folder / "config.json").exists():
        raise ConfigError(f"{key}: {folder} has no config.json (not a Hugging Face model folder)")
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ConfigError(f"{key}: {folder} has no weights ({' or '.join(WEIGHT_PATTERNS)}); "
                          f"found {sorted(p.name for p in folder.iterdir())}")


def check_reward_services(cfg: GRPOConfig) -> None:
    """The sandbox answers; the registry lists a live service for each reward model the sources route to."""
    if cfg.sandbox_url:
        from sandbox.client import SandboxClient

        client = SandboxClient(cfg.sandbox_url, timeout_s=SERVICE_TIMEOUT_S, max_retries=0)
        try:
            client.health()
        except Exception as e:  # noqa: BLE001 - unreachable, refused, wrong URL: all mean no code rewards
            raise ConfigError(f"sandbox_url: the sandbox service at {cfg.sandbox_url} does not answer GET /health "
                              f"({type(e).__name__}: {e}); start it (`mixrl serve-sandbox`) or leave sandbox_url empty "
                              "for a local sandbox") from e
    if cfg.reward_model_registry:
        check_reward_models(cfg)


def reward_model_routes(cfg: GRPOConfig) -> dict[tuple[str, str], str]:
    """{(source, domain): reward model} for every source whose rows route to a reward model (domain pipeline `rm`)."""
    from rewards import reward_config_from_dict
    from rl.prompts import load_sources

    rewards = reward_config_from_dict(cfg.rewards)
    routes: dict[tuple[str, str], str] = {}
    for source, rows in load_sources(cfg.sources).items():
        for row in rows:
            domain = rewards.resolve(row["data_source"], row.get("ability"), row["reward_model"].get("style"))
            if rewards.domains[domain].pipeline == "rm":
                routes.setdefault((source, domain), rewards.domains[domain].rm_model)
    return routes


def reward_models_needed(cfg: GRPOConfig) -> dict[str, str]:
    """{reward model: "source 'S', domain 'D'"}: the first source that needs each reward model."""
    needed: dict[str, str] = {}
    for (source, domain), model in reward_model_routes(cfg).items():
        needed.setdefault(model, f"source {source!r}, domain {domain!r}")
    return needed


def check_reward_models(cfg: GRPOConfig) -> None:
    """Each reward model (domain pipeline `rm`) that a source's rows route to has a live service in the registry."""
    from reward_services.registry import open_registry

    needed = reward_models_needed(cfg)
    if not needed:
        return
    spec = cfg.reward_model_registry
    try:
        registry = open_registry(spec)
        live = {model: registry.resolve(model) for model in needed}
    except Exception as e:  # noqa: BLE001 - an unreachable registry
        raise ConfigError(f"reward_model_registry: {spec} does not answer ({type(e).__name__}: {e})") from e
    missing = [f"{model!r} ({needed[model]})" for model, found in live.items() if not found]
    if missing:
        raise ConfigError(f"reward_model_registry: {spec} lists no live service for reward model(s) {', '.join(missing)}; "
                          "start one (`mixrl serve-rm`) before the run, or its samples would all be masked")
