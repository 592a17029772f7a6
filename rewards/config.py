"""The reward configuration: named domain pipelines and the routes from ``data_source``/``ability`` to them.

The dataclasses are the schema; a recipe's ``rewards:`` section holds overrides, merged field by field onto the
defaults below by `reward_config_from_dict`; an unknown key fails loudly and names the valid ones.

Recipe example (YAML)::

    rewards:
      domains:
        math:
          format: {min_reasoning_chars: 50}
          length: {min_span_tokens: 32, alpha_decay_steps: 200}
      routes:
        my_org/olympiad: math
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rewards.critique import CritiqueConfig
from rewards.format import FormatConfig
from rewards.length import LengthConfig
from rewards.repetition import RepetitionConfig

PIPELINES = ("answer", "choice", "ifeval", "code", "rm", "rouge")


@dataclass(frozen=True)
class DomainConfig:
    """How one domain is scored.

    pipeline: ``answer`` (extract + math verification), ``choice`` (multiple-choice letter), ``ifeval``,
        ``code`` (sandbox client), ``rm`` (reward-model client), ``rouge`` (ROUGE-L F1 of the answer against the
        reference: summarisation).
    extractors: tried in order on the answer part (see `rewards.extract.EXTRACTORS`).
    apply_coefficients: multiply by the format and repetition coefficients (the report's rule reward); off for
        reward-model scores, whose scale and sign are the model's.
    timeout_is_incorrect: a verification timeout scores 0 instead of masking the sample. Off by default: a
        timeout says the verifier could not decide, not that the answer is wrong.
    ifeval_loose / ifeval_mode: lm-eval's loose checking; ``all`` (1/0) or ``fraction`` of instructions followed.
    rm_model: the reward-model service identifier for the ``rm`` pipeline.
    rm_correct_threshold: for the ``rm`` pipeline, a score at or above it counts as a correct answer (so the
        group-overlong length term applies, as for rule-verified answers); None: an RM score says nothing about
        correctness. The free-form judge domain sets 0.5 (its verdicts are 1/0).
    code_timeout_s: per-test time limit passed to the sandbox.
    code_cache: run a program on a test set once per reward router and reuse the verdict (a GRPO group's samples
        often hold the same program). A program whose result depends on chance or the clock keeps its first
        verdict; false runs every sample. A sandbox failure (masked) is never reused.
    critique: the numerical-step critique as a factor or a term of the rule reward (`rewards.critique`).
    budget_hit_penalty: subtracted from the reward of a sample whose thinking budget ran out (vLLM forced
        ``</think>``: `Sample.budget_hit`), kept as the ``budget_hit`` component; 0 = no penalty. Teaches the
        policy to close its thinking within the budget instead of being cut off.
    """

    pipeline: str = "answer"
    extractors: tuple[str, ...] = ("boxed",)
    apply_coefficients: bool = True
    format: FormatConfig = field(default_factory=FormatConfig)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    timeout_is_incorrect: bool = False
    ifeval_loose: bool = False
    ifeval_mode: str = "all"
    rm_model: str = "chat-rm"
    rm_correct_threshold: float | None = None
    code_timeout_s: float = 10.0
    code_cache: bool = True
    critique: CritiqueConfig = field(default_factory=CritiqueConfig)
    budget_hit_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        if self.ifeval_mode not in ("all", "fraction"):
            raise ValueError(f"ifeval_mode must be 'all' or 'fraction', got {self.ifeval_mode!r}")
        if not 0.0 <= self.budget_hit_penalty < float("inf"):
            raise ValueError(f"budget_hit_penalty must be finite and >= 0, got {self.budget_hit_penalty!r}")


_NO_LENGTH = LengthConfig(group_overlong=False)


def default_domains() -> dict[str, DomainConfig]:
    """math, gsm8k, stem, ifeval, code, chat, judge (free-form answers judged against the ground truth by a
    generative RM, BlueLM-2.5 §2.3.6: where no rule can verify), summary (ROUGE-L)."""
    return {
        "math": DomainConfig(),
        # GSM8K answers end with "#### n"; a boxed answer is accepted too, and then at most one box.
        "gsm8k": DomainConfig(extractors=("gsm8k", "boxed"), format=FormatConfig(min_boxes=0, max_boxes=1)),
        "stem": DomainConfig(pipeline="choice", extractors=("choice",), format=FormatConfig(min_boxes=0, max_boxes=1)),
        "ifeval": DomainConfig(pipeline="ifeval", format=FormatConfig(min_boxes=0, max_boxes=None), length=_NO_LENGTH),
        "code": DomainConfig(pipeline="code", extractors=("code",), format=FormatConfig(min_boxes=0, max_boxes=None)),
        "chat": DomainConfig(
            pipeline="rm", apply_coefficients=False, format=FormatConfig(min_boxes=0, max_boxes=None), length=_NO_LENGTH
        ),
        # the judge's verdict (1 / 0, or a 0..1 score) is an answer reward: format and repetition still apply
        "judge": DomainConfig(pipeline="rm", rm_model="answer-judge", rm_correct_threshold=0.5,
                              format=FormatConfig(min_boxes=0, max_boxes=None)),
        "summary": DomainConfig(pipeline="rouge", format=FormatConfig(min_boxes=0, max_boxes=None), length=_NO_LENGTH),
    }


def default_routes() -> dict[str, str]:
    """Our data sources and verl's usual ones (``verl.utils.reward_score.default_compute_score``)."""
    routes = {
        "mixrl/synthetic_math": "math",
        "mixrl/synthetic_code": "code",
        "mixrl/synthetic_ifeval": "ifeval",
        "mixrl/synthetic_chat": "chat",
        "mixrl/synthetic_stem": "stem",
        "openai/gsm8k": "gsm8k",
        "lighteval/MATH": "math",
        "DigitalLearningGmbH/MATH-lighteval": "math",
        "HuggingFaceH4/MATH-500": "math",
        "math_dapo": "math",
        "math": "math",
        "math_dapo_reasoning": "math",
        "hiyouga/geometry3k": "math",
        "google/IFEval": "ifeval",
        "codecontests": "code",
        "apps": "code",
        "codeforces": "code",
        "taco": "code",
        # standard benchmarks as `mixrl data import` writes them (mixrl/data/importers.py)
        "openai/openai_humaneval": "code",
        "mbpp": "code",
        "cais/mmlu": "stem",
        "mixrl/synthetic_summary": "summary",
    }
    return routes


def default_route_prefixes() -> dict[str, str]:
    """Prefix routes, as verl matches ``aime*`` and ``numina_*``."""
    return {"aime": "math", "numina_": "math"}


def default_abilities() -> dict[str, str]:
    return {"math": "math", "code": "code", "ifeval": "ifeval", "chat": "chat", "stem": "stem", "summary": "summary"}


def default_styles() -> dict[str, str]:
    """``reward_model.style`` → domain, for rows whose data_source has no route: ``model`` asks for a model to
    judge the answer against the ground truth (a rule cannot verify it)."""
    return {"model": "judge"}


@dataclass(frozen=True)
class RewardConfig:
    """domains: name → pipeline config; routes: exact data_source → domain; route_prefixes: data_source prefix →
    domain; styles: ``reward_model.style`` → domain, then abilities: verl ``ability`` → domain (both used only
    when the data_source has no route, in that order)."""

    domains: dict[str, DomainConfig] = field(default_factory=default_domains)
    routes: dict[str, str] = field(default_factory=default_routes)
    route_prefixes: dict[str, str] = field(default_factory=default_route_prefixes)
    abilities: dict[str, str] = field(default_factory=default_abilities)
    styles: dict[str, str] = field(default_factory=default_styles)

    def __post_init__(self) -> None:
        for table_name in ("routes", "route_prefixes", "abilities", "styles"):
            for key, domain in getattr(self, table_name).items():
                if domain not in self.domains:
                    raise ValueError(
                        f"rewards.{table_name}[{key!r}] names domain {domain!r}; valid: {sorted(self.domains)}"
                    )

    def resolve(self, data_source: str, ability: str | None = None, style: str | None = None) -> str:
        """The domain name for a sample; raises `UnknownRouteError` naming what would have matched.

        >>> cfg = RewardConfig()
        >>> cfg.resolve("my/essays", "math", style="model"), cfg.resolve("my/essays", "math", style="rule")
        ('judge', 'math')
        >>> cfg.resolve("mixrl/synthetic_chat", "chat", style="model")  # a route wins over the style
        'chat'
        """
        if data_source in self.routes:
            return self.routes[data_source]
        for prefix, domain in self.route_prefixes.items():
            if data_source.startswith(prefix):
                return domain
        if style is not None and style in self.styles:
            return self.styles[style]
        if ability is not None and ability in self.abilities:
            return self.abilities[ability]
        raise UnknownRouteError(
            f"no reward route for data_source={data_source!r} (ability={ability!r}); add it under rewards.routes. "
            f"Known data sources: {sorted(self.routes)}; prefixes: {sorted(self.route_prefixes)}; "
            f"styles: {sorted(self.styles)}; abilities: {sorted(self.abilities)}"
        )


class UnknownRouteError(ValueError):
    """A sample's data_source/ability matches no route: a configuration error, raised, never a 0 reward."""


def _merge_dataclass(base: Any, overrides: Mapping[str, Any], path: str) -> Any:
    if not isinstance(overrides, Mapping):
        raise TypeError(f"{path}: expected a mapping, got {type(overrides).__name__}")
    valid = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in valid:
            raise KeyError(f"unknown key {path}.{key}; valid keys: {sorted(valid)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = _merge_dataclass(current, value, f"{path}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def reward_config_from_dict(data: Mapping[str, Any] | None) -> RewardConfig:
    """A `RewardConfig` from a recipe's ``rewards:`` mapping, merged onto the defaults.

    A domain that exists by default is overridden field by field; a new domain starts from `DomainConfig()`.

    >>> cfg = reward_config_from_dict({"domains": {"math": {"length": {"min_span_tokens": 32}}},
    ...                                "routes": {"my/olympiad": "math"}})
    >>> cfg.domains["math"].length.min_span_tokens, cfg.resolve("my/olympiad"), cfg.resolve("openai/gsm8k")
    (32, 'math', 'gsm8k')
    >>> reward_config_from_dict({"domains": {"math": {"lenght": {}}}})
    Traceback (most recent call last):
    ...
    KeyError: "unknown key rewards.domains.math.lenght; valid keys: ['apply_coefficients', 'budget_hit_penalty', 'code_cache', 'code_timeout_s', 'critique', 'extractors', 'format', 'ifeval_loose', 'ifeval_mode', 'length', 'pipeline', 'repetition', 'rm_correct_threshold', 'rm_model', 'timeout_is_incorrect']"
    """
    data = dict(data or {})
    valid = {"domains", "routes", "route_prefixes", "abilities", "styles"}
    unknown = set(data) - valid
    if unknown:
        raise KeyError(f"unknown key(s) rewards.{sorted(unknown)}; valid keys: {sorted(valid)}")
    domains = default_domains()
    for name, overrides in (data.get("domains") or {}).items():
        domains[name] = _merge_dataclass(domains.get(name, DomainConfig()), overrides or {}, f"rewards.domains.{name}")
    return RewardConfig(
        domains=domains,
        routes={**default_routes(), **(data.get("routes") or {})},
        route_prefixes={**default_route_prefixes(), **(data.get("route_prefixes") or {})},
        abilities={**default_abilities(), **(data.get("abilities") or {})},
        styles={**default_styles(), **(data.get("styles") or {})},
    )
