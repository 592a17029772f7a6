r"""The reward router: one pipeline per domain, chosen by ``data_source`` (or ``ability``), scored batch-wise.

``RewardRouter.score_batch(samples, global_step)`` is the trainer's entry point. Per batch:

1. route each sample to its domain (`rewards.config.RewardConfig.resolve`; an unknown route raises);
2. compute the base reward of every sample concurrently: answer verification on the `VerifierPool`, sandbox
   calls on the `CodeExecutionClient`, one batched call per reward model on the `RewardModelClient`, IFEval,
   multiple choice and ROUGE-L in-process; the numerical-step critique, where a domain enables it, in step 3;
3. rule reward = answer × format × repetition (BlueLM-2.5 §2.3.5), components kept; × or + the step critique
   (`rewards.critique`) where the domain's ``critique.mode`` says so;
4. length terms per group of samples of one prompt (``group_id``): the group-overlong term for correct samples,
   DAPO's soft overlong punishment if enabled — which is why a batch, not a sample, is the unit;
5. a sample whose base reward could not be computed (no client configured, client failure, verifier timeout,
   bad ground truth, a non-numeric score) gets ``reward=None`` and ``error`` set: the trainer masks it. Never 0.
6. the final reward is checked once (`_mask_nonfinite`, on both ways out: `score_batch` and `add_length_terms`):
   a non-finite one (a reward model answering inf or NaN) is masked with ``error`` naming the value and where it
   came from, so that no inf or NaN reaches the advantages, the loss, or a checkpoint.

Example::

    router = RewardRouter()                      # default domains and routes, default verifier pool
    results = router.score_batch([Sample("mixrl/synthetic_math", "... \\boxed{33}", "33", group_id=0)])
    results[0].reward, results[0].components     # 1.1, {'answer': 1.0, 'format': 1.0, ..., 'length': 0.1}
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rewards.clients import CodeExecutionClient, RewardModelClient, RewardModelRequest
from rewards.config import DomainConfig, RewardConfig
from rewards.critique import check_steps, critique_adjust
from rewards.extract import answer_part, extract_answer
from rewards.format import format_coefficient
from rewards.ifeval import InstructionError, ifeval_reward, parse_ifeval_ground_truth
from rewards.length import dapo_overlong_penalty, group_overlong_rewards, length_alpha
from rewards.repetition import repetition_coefficient
from rewards.summary import rouge_l
from rewards.types import RewardResult, Sample, infer_thinking
from rewards.verify import VerifierPool, default_pool, verify_answer
from sandbox.spec import spec_from_ground_truth

CODE_CACHE_SIZE = 4096  # sandbox results kept per router (`DomainConfig.code_cache`), oldest dropped first


@dataclass
class _Base:
    """The domain-specific part of a reward, before coefficients and length terms."""

    value: float | None
    correct: bool | None  # for the length penalty: only correct samples get α·λ
    components: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _choice_gold(ground_truth: str) -> str:
    """The letter of a multiple-choice ground truth.

    >>> _choice_gold(" (b) "), _choice_gold("C")
    ('B', 'C')
    """
    return ground_truth.strip().strip("()").strip().upper()


class RewardRouter:
    """Scores batches of `Sample` with the pipelines of a `RewardConfig`.

    pool: the math verifier pool (default: the process-wide one). code_client / rm_client: implementations of the
    interfaces in `rewards.clients`; a domain that needs one that is missing yields masked results with ``error``.
    max_concurrency: threads for verification and client calls (the pool itself bounds verifier processes).
    Thread-safe: several threads may call `score_batch` at once.
    """

    def __init__(
        self,
        config: RewardConfig | None = None,
        *,
        pool: VerifierPool | None = None,
        code_client: CodeExecutionClient | None = None,
        rm_client: RewardModelClient | None = None,
        max_concurrency: int = 16,
    ) -> None:
        self.config = config or RewardConfig()
        self._pool = pool
        self.code_client = code_client
        self.rm_client = rm_client
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="mixrl-reward")
        # (program, tests, limit) -> the sandbox's result, for `DomainConfig.code_cache`: a GRPO group's samples
        # often hold the same program, and each sandbox run costs a process start (~50 ms of CPU)
        self._code_results: OrderedDict[tuple[str, str, float], Future] = OrderedDict()
        self._code_lock = threading.Lock()

    @property
    def pool(self) -> VerifierPool:
        return self._pool or default_pool()

    def close(self) -> None:
        """Stop the router's threads (the verifier pool belongs to whoever created it)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ entry points

    def score(self, sample: Sample, global_step: int = 0) -> RewardResult:
        """`score_batch` of one sample (a group of one for the length penalty)."""
        return self.score_batch([sample], global_step)[0]

    def score_batch(
        self, samples: Sequence[Sample], global_step: int = 0, length_terms: bool = True
    ) -> list[RewardResult]:
        """One `RewardResult` per sample, in order. Raises `UnknownRouteError` for an unroutable sample.

        ``length_terms=False`` skips the length terms (for callers that see one sample at a time, like verl's
        ``compute_score``, where a "group" of one would add a constant α/2 to every correct answer).
        """
        domains = [self.config.resolve(s.data_source, s.ability, s.style) for s in samples]
        bases = self._base_rewards(samples, domains)
        results: list[RewardResult] = []
        for sample, domain, base in zip(samples, domains, bases):
            results.append(self._rule_reward(sample, domain, self.config.domains[domain], base))
        if length_terms:
            self._add_length_terms(samples, domains, [b.correct for b in bases], results, global_step)
        return [_mask_nonfinite(r) for r in results]

    def add_length_terms(self, samples: Sequence[Sample], results: list[RewardResult], global_step: int = 0) -> None:
        """Add the group length terms to results scored with ``length_terms=False`` once a whole group is in (the
        rollout side scores each sample as it finishes; the group-overlong term needs the group). In place."""
        domains = [r.domain or self.config.resolve(s.data_source, s.ability, s.style) for s, r in zip(samples, results)]
        self._add_length_terms(samples, domains, [r.details.get("correct") for r in results], results, global_step)
        for r in results:
            _mask_nonfinite(r)

    # ------------------------------------------------------------------ step 2: base rewards, concurrently

    def _base_rewards(self, samples: Sequence[Sample], domains: Sequence[str]) -> list[_Base]:
        futures: list[Future | _Base] = [None] * len(samples)  # type: ignore[list-item]
        rm_batches: dict[str, list[int]] = defaultdict(list)
        for i, (sample, domain) in enumerate(zip(samples, domains)):
            cfg = self.config.domains[domain]
            if cfg.pipeline == "answer":
                futures[i] = self._executor.submit(self._answer_base, sample, cfg)
            elif cfg.pipeline == "code":
                futures[i] = self._executor.submit(self._code_base, sample, cfg)
            elif cfg.pipeline == "rm":
                rm_batches[cfg.rm_model].append(i)
            elif cfg.pipeline == "choice":
                futures[i] = self._choice_base(sample, cfg)
            elif cfg.pipeline == "rouge":
                futures[i] = self._rouge_base(sample, cfg)
            else:
                futures[i] = self._ifeval_base(sample, cfg)
        rm_futures = {
            model: self._executor.submit(self._rm_bases, [samples[i] for i in idx], model,
                                         [self.config.domains[domains[i]].rm_correct_threshold for i in idx])
            for model, idx in rm_batches.items()
        }
        out: list[_Base] = []
        for i, item in enumerate(futures):
            if item is None:
                out.append(None)  # type: ignore[arg-type]  # filled from rm_futures below
            elif isinstance(item, _Base):
                out.append(item)
            else:
                try:
                    out.append(item.result())
                except Exception as e:  # noqa: BLE001 - any failure to compute is a masked sample
                    out.append(_Base(None, None, error=f"{type(e).__name__}: {e}"))
        for model, fut in rm_futures.items():
            for i, base in zip(rm_batches[model], fut.result()):
                out[i] = base
        return out

    def _answer_base(self, sample: Sample, cfg: DomainConfig) -> _Base:
        pred = extract_answer(sample.response, cfg.extractors)
        verdict = verify_answer(sample.ground_truth, pred, pool=self.pool)
        details = {"pred": pred, "verdict": verdict.status, "verify_method": verdict.method}
        if verdict.correct is None:
            if verdict.status == "timeout" and cfg.timeout_is_incorrect:
                return _Base(0.0, False, {"answer": 0.0}, details)
            return _Base(None, None, details=details, error=f"verification {verdict.status}: {verdict.detail}")
        value = 1.0 if verdict.correct else 0.0
        return _Base(value, verdict.correct, {"answer": value}, details)

    def _choice_base(self, sample: Sample, cfg: DomainConfig) -> _Base:
        pred = extract_answer(sample.response, cfg.extractors)
        gold = _choice_gold(sample.ground_truth)
        if len(gold) != 1 or not gold.isalpha():
            return _Base(None, None, error=f"multiple-choice ground truth must be one letter, got {sample.ground_truth!r}")
        correct = pred is not None and pred.upper() == gold
        value = 1.0 if correct else 0.0
        return _Base(value, correct, {"answer": value}, {"pred": pred})

    def _rouge_base(self, sample: Sample, cfg: DomainConfig) -> _Base:
        """ROUGE-L F1 of the answer part against the reference (summarisation); an empty reference is masked."""
        if not sample.ground_truth.strip():
            return _Base(None, None, error="summary ground truth is empty")
        value = rouge_l(answer_part(sample.response), sample.ground_truth)
        return _Base(value, None, {"answer": value, "rouge_l": value})

    def _ifeval_base(self, sample: Sample, cfg: DomainConfig) -> _Base:
        try:
            ids, kwargs = parse_ifeval_ground_truth(sample.ground_truth)
            result = ifeval_reward(answer_part(sample.response), ids, kwargs, loose=cfg.ifeval_loose, mode=cfg.ifeval_mode)
        except (InstructionError, ValueError, ImportError) as e:
            return _Base(None, None, error=f"ifeval: {type(e).__name__}: {e}")
        details = {"followed": dict(zip(result.instruction_ids, result.followed))}
        fraction = sum(result.followed) / len(result.followed)
        return _Base(result.reward, all(result.followed), {"answer": result.reward, "ifeval_fraction": fraction}, details)

    def _code_base(self, sample: Sample, cfg: DomainConfig) -> _Base:
        if self.code_client is None:
            return _Base(None, None, error="no code-execution client configured (domain pipeline 'code')")
        try:
            tests = spec_from_ground_truth(sample.ground_truth, sample.extra_info)
        except (ValueError, TypeError) as e:
            return _Base(None, None, error=f"bad code ground truth: {e}")
        program = extract_answer(sample.response, cfg.extractors)
        if program is None:
            return _Base(0.0, False, {"answer": 0.0}, {"pred": None})
        try:
            result = self._run_tests(program, tests, cfg)
        except Exception as e:  # noqa: BLE001 - a client failure masks the sample
            return _Base(None, None, error=f"code client failed: {type(e).__name__}: {e}")
        if result.error is not None:
            return _Base(None, None, error=f"code execution: {result.error}")
        correct = result.total > 0 and result.passed == result.total  # report: 1 only if ALL tests pass
        value = 1.0 if correct else 0.0
        fraction = result.passed / result.total if result.total else 0.0
        return _Base(value, correct, {"answer": value, "tests_passed": fraction}, {"tests": f"{result.passed}/{result.total}"})

    def _run_tests(self, program: str, tests, cfg: DomainConfig):
        """The sandbox's result for `program` on `tests`; with `cfg.code_cache`, once per (program, tests, limit):
        a sample whose program is already running waits for that run. A failed run (an error, masked) is not kept:
        whoever waited on it runs the program again."""
        run = lambda: self.code_client.run_tests(program, tests, timeout_s=cfg.code_timeout_s)  # noqa: E731
        if not cfg.code_cache:
            return run()
        key = (program, repr(tests), cfg.code_timeout_s)
        with self._code_lock:
            shared = self._code_results.get(key)
            if shared is None:
                shared = self._code_results[key] = Future()
                while len(self._code_results) > CODE_CACHE_SIZE:
                    self._code_results.popitem(last=False)
                owner = True
            else:
                self._code_results.move_to_end(key)
                owner = False
        if not owner:
            result = shared.result()
            return result if result is not None else run()
        result = None
        try:
            result = run()
        finally:
            if result is None or result.error is not None:
                with self._code_lock:
                    if self._code_results.get(key) is shared:
                        del self._code_results[key]
            shared.set_result(result if result is not None and result.error is None else None)
        return result

    def _rm_bases(self, samples: Sequence[Sample], model: str, thresholds: Sequence[float | None]) -> list[_Base]:
        if self.rm_client is None:
            return [_Base(None, None, error="no reward-model client configured (domain pipeline 'rm')") for _ in samples]
        requests = [
            RewardModelRequest(model, s.prompt or "", answer_part(s.response), s.ground_truth or None, s.extra_info)
            for s in samples
        ]
        try:
            scores = self.rm_client.score(requests)
            if len(scores) != len(requests):
                raise RuntimeError(f"{len(scores)} scores for {len(requests)} requests")
        except Exception as e:  # noqa: BLE001 - the whole batch is masked
            return [_Base(None, None, error=f"reward model {model!r} failed: {type(e).__name__}: {e}") for _ in samples]
        return [_rm_base(x, model, t) for x, t in zip(scores, thresholds)]

    # ------------------------------------------------------------------ step 3: rule reward

    def _rule_reward(self, sample: Sample, domain: str, cfg: DomainConfig, base: _Base) -> RewardResult:
        thinking = sample.thinking if sample.thinking is not None else infer_thinking(sample.prompt)
        fmt = format_coefficient(sample.response, thinking, cfg.format)
        rep = repetition_coefficient(sample.response, cfg.repetition)
        components = dict(base.components)
        components["format"] = fmt.coefficient
        components["repetition"] = rep.coefficient
        details = dict(base.details)
        details.update(format_fired=list(fmt.fired), repetition_detected=list(rep.detected), thinking=thinking, correct=base.correct)
        if base.value is None:
            return RewardResult(None, components, details, base.error or "no reward", domain)
        rule = base.value * fmt.coefficient * rep.coefficient if cfg.apply_coefficients else base.value
        if cfg.critique.mode != "off":
            critique = check_steps(sample.response)
            rule, terms = critique_adjust(rule, critique, cfg.critique)
            components.update(terms)
            if critique.first_wrong is not None:
                details["critique_first_wrong"] = f"line {critique.first_wrong.line}: {critique.first_wrong.text}"
        if sample.budget_hit and cfg.budget_hit_penalty:
            components["budget_hit"] = -cfg.budget_hit_penalty
            rule -= cfg.budget_hit_penalty
        components["rule"] = rule
        return RewardResult(rule, components, details, None, domain)

    # ------------------------------------------------------------------ step 4: length terms, per group

    def _add_length_terms(
        self,
        samples: Sequence[Sample],
        domains: Sequence[str],
        correct: Sequence[bool | None],
        results: list[RewardResult],
        global_step: int,
    ) -> None:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (sample, domain) in enumerate(zip(samples, domains)):
            key = (domain, ("sample", i) if sample.group_id is None else ("group", sample.group_id))
            groups[key].append(i)
        for (domain, _), idx in groups.items():
            lcfg = self.config.domains[domain].length
            lengths = [_length(samples[i]) for i in idx]
            if lcfg.group_overlong:
                alphas = [length_alpha(global_step, n, lcfg) for n in lengths]
                terms = group_overlong_rewards(lengths, [correct[i] for i in idx], alphas, lcfg.min_span_tokens)
                for i, term in zip(idx, terms):
                    if results[i].reward is not None and term is not None:
                        results[i].components["length"] = term
                        results[i].reward += term
            if lcfg.dapo_max_tokens is not None:
                for i, n in zip(idx, lengths):
                    if results[i].reward is not None:
                        term = lcfg.dapo_factor * dapo_overlong_penalty(n, lcfg.dapo_max_tokens, lcfg.dapo_cache_tokens)
                        results[i].components["overlong"] = term
                        results[i].reward += term


def _rm_base(score: Any, model: str, correct_threshold: float | None = None) -> _Base:
    """One reward model's answer as a base reward; a missing or non-numeric answer is masked (a non-finite one
    is masked by `_mask_nonfinite` once the reward is composed). With ``correct_threshold`` (a judge of answers
    against the ground truth) the score also says whether the answer is correct, for the length term."""
    if score is None:
        return _Base(None, None, error=f"reward model {model!r} returned no score")
    try:
        if isinstance(score, (str, bytes)):
            raise TypeError("text")
        value = float(score)
    except (TypeError, ValueError):
        return _Base(None, None, details={"rm_model": model}, error=f"reward model {model!r} returned a non-numeric score {score!r}")
    correct = None if correct_threshold is None or not math.isfinite(value) else value >= correct_threshold
    return _Base(value, correct, {"rm_score": value}, {"rm_model": model})


def _mask_nonfinite(result: RewardResult) -> RewardResult:
    """Mask (reward None, error set) a result whose final reward is inf or NaN, naming the value and its origin.

    >>> r = _mask_nonfinite(RewardResult(float("inf"), {"rm_score": float("inf")}, {"rm_model": "chat-rm"}))
    >>> r.reward, r.error
    (None, "non-finite reward inf from reward model 'chat-rm' (components: rm_score=inf)")
    """
    if result.reward is None or math.isfinite(result.reward):
        return result
    value = result.reward
    bad = ", ".join(f"{k}={v}" for k, v in result.components.items() if not math.isfinite(v)) or "none non-finite"
    origin = f"reward model {result.details['rm_model']!r}" if "rm_model" in result.details else f"domain {result.domain!r}"
    result.reward = None
    result.error = f"non-finite reward {value} from {origin} (components: {bad})"
    return result


def _length(sample: Sample) -> int:
    # Token counts from the trainer; characters when a caller has none (the Δ_L floor is then in characters too).
    return sample.response_tokens if sample.response_tokens is not None else len(sample.response)
