"""Rewards for RL post-training (BlueLM-2.5 §2.3.5–2.3.6): pure reward functions and the reward router.

Rule reward = answer × format × repetition, plus the group-overlong length term; instruction following (IFEval);
code and reward-model rewards through client interfaces; entry points for verl, TRL and OpenRLHF.

Modules (each a set of free functions with one signature per reward, plus dataclasses at the boundary):

- `rewards.extract`     last boxed answer, GSM8K ``####``, multiple-choice letters, code blocks
- `rewards.exact`       exact comparison of rational answers (before math-verify; Math-Verify#14)
- `rewards.verify`      `VerifierPool`: math-verify in worker processes with a hard per-item deadline
- `rewards.format`      format coefficient with named rules
- `rewards.repetition`  repetition coefficient (character n-grams, end loops)
- `rewards.length`      group-overlong length term with its α schedule; DAPO soft overlong punishment
- `rewards.ifeval`      the 25 IFEval instruction checkers, strict and loose
- `rewards.clients`     `CodeExecutionClient` / `RewardModelClient` interfaces (implemented by sandbox/,
  reward_services/); the code contract's `TestSpec` is `sandbox.spec.TestSpec`
- `rewards.config`      `RewardConfig` / `DomainConfig`: domains, routes, recipe overrides
- `rewards.router`      `RewardRouter.score_batch(samples) -> list[RewardResult]`
- `rewards.compat`      verl ``compute_score``, TRL ``make_trl_reward``, OpenRLHF ``serve_rewards``

A reward that could not be computed is ``None`` (masked downstream), never 0. This package imports only the
standard library, math-verify (inside worker processes), langdetect (IFEval language checks) and the stdlib-only
``sandbox`` package below it (`sandbox.spec` for the code tests; `rewards.code` also its executors); never
``rl``, ``sft``, Ray or servers other than its own stdlib HTTP endpoint.
"""

from rewards.clients import (
    CodeExecutionClient,
    CodeTestResult,
    RewardModelClient,
    RewardModelRequest,
    TestSpec,
)
from rewards.compat import compute_score, make_reward_server, make_trl_reward, serve_rewards, set_default_router
from rewards.config import DomainConfig, RewardConfig, UnknownRouteError, reward_config_from_dict
from rewards.extract import extract_answer, last_boxed
from rewards.format import FormatConfig, format_coefficient
from rewards.ifeval import INSTRUCTIONS, ifeval_reward
from rewards.length import (
    LengthConfig,
    dapo_overlong_penalty,
    group_overlong_rewards,
    length_alpha,
)
from rewards.repetition import RepetitionConfig, repetition_coefficient
from rewards.router import RewardRouter
from rewards.types import RewardResult, Sample
from rewards.verify import Verdict, VerifierPool, default_pool, verify_answer

__all__ = [
    "INSTRUCTIONS",
    "CodeExecutionClient",
    "CodeTestResult",
    "DomainConfig",
    "FormatConfig",
    "LengthConfig",
    "RepetitionConfig",
    "RewardConfig",
    "RewardModelClient",
    "RewardModelRequest",
    "RewardResult",
    "RewardRouter",
    "Sample",
    "TestSpec",
    "UnknownRouteError",
    "Verdict",
    "VerifierPool",
    "compute_score",
    "dapo_overlong_penalty",
    "default_pool",
    "extract_answer",
    "format_coefficient",
    "group_overlong_rewards",
    "ifeval_reward",
    "last_boxed",
    "length_alpha",
    "make_reward_server",
    "make_trl_reward",
    "repetition_coefficient",
    "reward_config_from_dict",
    "serve_rewards",
    "set_default_router",
    "verify_answer",
]
