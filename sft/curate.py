"""Long-CoT curation (report §2.3.3): SFT rows from a teacher's shortest correct thinking-mode response per query.

Run:
    mixrl curate recipes/curate_tiny.yaml [section.key=value ...]

The stages, each a function below:

1. `load_queries`: verl rows with a ground truth (optionally only some difficulties, the first `max_queries`);
2. `decontaminate`: drop queries that near-duplicate a question of any test split (`sft/dedup.py`: MinHash LSH on
   word n-grams, then cosine of embeddings from the recipe's `dedup.embedding_model_path`);
3. `sample_candidates`: `sampling.samples_per_prompt` candidates per query, thinking on, from the teacher served
   by vLLM through `core.engine.RolloutEngine` (the engine class of GRPO rollouts);
4. `judge_group`: the named filters of `sft/curation_filters.py`, then the answer verdict of the reward router
   (`rewards.verdict.score_response`: math-verify for math) against the row's ground truth; the SHORTEST
   correct candidate (fewest tokens) is kept;
5. `curated_row`: the query row with `extra_info.reasoning` / `extra_info.response` from that candidate — what
   `mixrl sft` trains on (a source `{path: RUN_DIR/sft.parquet, mode: think}`, or `fused`).

RUN_DIR gets `config.yaml` (resolved), `sft.parquet` + `sft.jsonl` (the rows), `candidates.jsonl` (every candidate
with its verdict), `duplicates.jsonl` (each dropped query with its test match) and `report.json` (counts per
filter, duplicates removed, token lengths of all candidates, all correct ones and the kept ones).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.chat import prompt_context, render_prompt, user_turn
from core.config import ConfigError, write_resolved_config
from core.data import DataError, load_rows
from core.engine import RolloutEngine, SamplingSettings
from core.run_dir import hold_run_dir
from rewards.extract import EXTRACTORS
from rewards.verdict import score_response
from sft.config import CANDIDATE_FILTERS, CurateConfig
from sft.curation_filters import Candidate, failures, split_thinking
from sft.dedup import Duplicate, minhash_duplicates, semantic_pass

ANSWER_CHECK = "answer"  # the stage after the filters: verdict against the ground truth


# ---- the recipe, checked before anything heavy starts ---------------------------------------------------------


def _resolve(path: str, cfg: CurateConfig) -> str:
    return path.replace("{data_dir}", cfg.data.out_dir)


def protected_test_files(cfg: CurateConfig) -> list[Path]:
    """The test files of `dedup.test_paths` (globs expanded); a pattern matching nothing is a ConfigError."""
    files: list[Path] = []
    for pattern in cfg.dedup.test_paths:
        matched = sorted(glob.glob(_resolve(pattern, cfg)))
        if not matched:
            raise ConfigError(f"dedup.test_paths: {pattern!r} ({_resolve(pattern, cfg)}) matches no file")
        files += [Path(m) for m in matched if Path(m) not in files]
    return files


def _require_model_dir(key: str, path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{key}: {path!r} is not a Hugging Face model folder (no config.json)")


def check_curate_settings(cfg: CurateConfig) -> None:
    """Values that cannot work fail here, naming their key, before any data is made or model loaded."""
    unknown = sorted(set(cfg.filters.disabled) - set(CANDIDATE_FILTERS))
    if unknown:
        raise ConfigError(f"filters.disabled: unknown filter(s) {unknown}; valid: {list(CANDIDATE_FILTERS)}")
    bad = sorted(set(cfg.filters.answer_extractors) - set(EXTRACTORS))
    if bad or not cfg.filters.answer_extractors:
        raise ConfigError(f"filters.answer_extractors: {bad or 'empty'}; valid: {sorted(EXTRACTORS)}")
    if cfg.filters.language:
        from langdetect.detector_factory import PROFILES_DIRECTORY

        languages = os.listdir(PROFILES_DIRECTORY)  # one profile file per language code
        if cfg.filters.language not in languages:
            raise ConfigError(f"filters.language: {cfg.filters.language!r} is not a langdetect language; "
                              f"valid: {sorted(languages)} or \"\" (lines must agree)")
    for key, value in (("dedup.minhash_threshold", cfg.dedup.minhash_threshold),
                       ("dedup.cosine_threshold", cfg.dedup.cosine_threshold)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{key}: {value} is not in (0, 1]")
    for key, value in (("sampling.samples_per_prompt", cfg.sampling.samples_per_prompt),
                       ("sampling.max_response_tokens", cfg.sampling.max_response_tokens),
                       ("dedup.ngram_words", cfg.dedup.ngram_words),
                       ("filters.loop_max_period_tokens", cfg.filters.loop_max_period_tokens),
                       ("filters.loop_min_repeats", cfg.filters.loop_min_repeats)):
        if value < 1:
            raise ConfigError(f"{key}: {value} must be at least 1")
    if cfg.sampling.max_response_tokens >= cfg.max_model_len:
        raise ConfigError(f"sampling.max_response_tokens ({cfg.sampling.max_response_tokens}) leaves no room for "
                          f"the prompt in max_model_len ({cfg.max_model_len})")


def check_curate_paths(cfg: CurateConfig) -> None:
    """The models, the queries and the test splits exist (after `mixrl curate` made the synthetic data)."""
    _require_model_dir("teacher_model_path", cfg.teacher_model_path)
    if cfg.dedup.embedding_model_path:
        _require_model_dir("dedup.embedding_model_path", cfg.dedup.embedding_model_path)
    if not Path(_resolve(cfg.queries_path, cfg)).exists():
        raise ConfigError(f"queries_path: {_resolve(cfg.queries_path, cfg)} does not exist")
    protected_test_files(cfg)


# ---- queries and decontamination -------------------------------------------------------------------------------


def query_text(row: dict) -> str:
    """The question of a verl row: its last user turn."""
    return user_turn(row, False)["content"]


def load_queries(cfg: CurateConfig) -> list[dict]:
    """The rows to curate: those of the listed difficulties (all if none are listed), the first `max_queries`."""
    path = _resolve(cfg.queries_path, cfg)
    rows = load_rows(path)
    if cfg.difficulties:
        rows = [r for r in rows if (r.get("extra_info") or {}).get("difficulty") in cfg.difficulties]
    if cfg.max_queries:
        rows = rows[: cfg.max_queries]
    if not rows:
        raise DataError(f"{path}: no rows to curate (difficulties {cfg.difficulties or 'any'})")
    return rows


def decontaminate(cfg: CurateConfig, rows: list[dict], tests: list[str]) -> tuple[list[dict], list[Duplicate]]:
    """`rows` without the queries that near-duplicate a test question (MinHash first, then the semantic pass on
    what is left); also the duplicates found (query indices refer to `rows`)."""
    texts = [query_text(r) for r in rows]
    found = minhash_duplicates(texts, tests, ngram_words=cfg.dedup.ngram_words, threshold=cfg.dedup.minhash_threshold,
                               num_perm=cfg.dedup.minhash_permutations, seed=cfg.seed + 1)
    if cfg.dedup.embedding_model_path:
        left = sorted(set(range(len(rows))) - {d.query_index for d in found})
        semantic = semantic_pass([texts[i] for i in left], tests, model_path=cfg.dedup.embedding_model_path,
                                 threshold=cfg.dedup.cosine_threshold, require_same_numbers=cfg.dedup.require_same_numbers,
                                 batch_texts=cfg.dedup.embed_batch_texts, max_tokens=cfg.dedup.embed_max_tokens)
        found += [Duplicate(left[d.query_index], d.test_index, d.method, d.similarity) for d in semantic]
    dropped = {d.query_index for d in found}
    return [r for i, r in enumerate(rows) if i not in dropped], sorted(found, key=lambda d: d.query_index)


# ---- candidates from the teacher -------------------------------------------------------------------------------


def prompt_ids(tokenizer, rows: list[dict]) -> list[list[int]]:
    """Thinking-mode prompt token ids of each row through the teacher's own chat template."""
    return [render_prompt(tokenizer, prompt_context(r) + [user_turn(r, False)], True) for r in rows]


async def _generate(cfg: CurateConfig, prompts: list[list[int]]) -> list[list[Candidate]]:
    engine = RolloutEngine(cfg.teacher_model_path, dtype=cfg.dtype, max_model_len=cfg.max_model_len, seed=cfg.seed,
                           max_num_seqs=min(256, len(prompts) * cfg.sampling.samples_per_prompt))
    await engine.start()
    try:
        groups = await engine.generate(prompts, SamplingSettings.of(cfg.sampling, seed=cfg.seed))
    finally:
        engine.shutdown()
    return [[Candidate(s.text, tuple(s.response_ids), s.finish_reason) for s in group] for group in groups]


def sample_candidates(cfg: CurateConfig, prompts: list[list[int]]) -> list[list[Candidate]]:
    """`sampling.samples_per_prompt` candidates per prompt from the teacher (one vLLM engine, started and shut
    down here; its engine core is a spawned process: call from under `if __name__ == "__main__":`)."""
    return asyncio.run(_generate(cfg, prompts))


# ---- judging one query's candidates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupVerdict:
    """Per candidate: None (passed every filter and is correct) or (stage, reason) of the first stage that
    rejected it, and the names of every filter that fires on it; `chosen` = index of the shortest correct
    candidate, None if no candidate is correct."""

    verdicts: list[tuple[str, str] | None]
    fired: list[tuple[str, ...]]
    chosen: int | None


def judge_group(row: dict, candidates: list[Candidate], cfg: CurateConfig) -> GroupVerdict:
    """Filter every candidate, verify the survivors' final answers, pick the shortest correct one (fewest
    tokens; the earliest on a tie)."""
    verdicts: list[tuple[str, str] | None] = []
    fired: list[tuple[str, ...]] = []
    for candidate in candidates:
        found = failures(candidate, cfg.filters)
        fired.append(tuple(name for name, _ in found))
        failure = found[0] if found else None
        if failure is None:
            score = score_response(row, candidate.text)
            if score is None:
                failure = (ANSWER_CHECK, "unverifiable")
            elif score < 1.0:
                failure = (ANSWER_CHECK, "incorrect")
        verdicts.append(failure)
    correct = [i for i, v in enumerate(verdicts) if v is None]
    chosen = min(correct, key=lambda i: (candidates[i].num_tokens, i)) if correct else None
    return GroupVerdict(verdicts, fired, chosen)


def curated_row(row: dict, candidate: Candidate, *, teacher: str, correct: int, candidates: int) -> dict:
    """The SFT row: the query row with the candidate's reasoning and answer as `extra_info.reasoning/response`."""
    reasoning, response = split_thinking(candidate.text)
    extra = dict(row.get("extra_info") or {})
    extra.update(reasoning=reasoning, response=response, curation={
        "teacher": teacher, "response_tokens": candidate.num_tokens, "correct_candidates": correct,
        "candidates": candidates})
    return {**row, "extra_info": extra}


# ---- the report ------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def curation_report(groups: list[list[Candidate]], judged: list[GroupVerdict], *, queries: int,
                    duplicates: list[Duplicate], skipped_long_prompts: int) -> dict:
    """Counts per stage (candidates each filter dropped, with reasons, and what remained), duplicates removed by
    method, and mean response tokens of all candidates, all correct ones (pooled, and per query with a correct
    one) and the kept ones."""
    remaining = sum(len(g) for g in groups)
    stages = []
    for stage in (*CANDIDATE_FILTERS, ANSWER_CHECK):
        reasons: dict[str, int] = {}
        for verdict in (v for j in judged for v in j.verdicts):
            if verdict is not None and verdict[0] == stage:
                reasons[verdict[1]] = reasons.get(verdict[1], 0) + 1
        dropped = sum(reasons.values())
        remaining -= dropped
        entry = {"stage": stage, "dropped": dropped, "remaining": remaining, "reasons": dict(sorted(reasons.items()))}
        if stage != ANSWER_CHECK:  # what the filter rejects on its own, earlier filters aside
            entry["fires_alone"] = sum(stage in names for j in judged for names in j.fired)
        stages.append(entry)
    all_tokens = [c.num_tokens for g in groups for c in g]
    correct_tokens = [c.num_tokens for g, j in zip(groups, judged) for c, v in zip(g, j.verdicts) if v is None]
    kept_tokens = [g[j.chosen].num_tokens for g, j in zip(groups, judged) if j.chosen is not None]
    # per query, the mean of its correct candidates: what keeping a random correct one would give (the pooled mean
    # above weighs easy queries, with many short correct candidates, more than the one row each query gets)
    per_query = [sum(c.num_tokens for c, v in zip(g, j.verdicts) if v is None) / sum(v is None for v in j.verdicts)
                 for g, j in zip(groups, judged) if j.chosen is not None]
    methods = [d.method for d in duplicates]
    return {
        "queries": queries,
        "duplicates_removed": {"total": len(duplicates), "minhash": methods.count("minhash"),
                               "semantic": methods.count("semantic")},
        "skipped_long_prompts": skipped_long_prompts,
        "queries_sampled": len(groups),
        "candidates": len(all_tokens),
        "stages": stages,
        "correct_candidates": len(correct_tokens),
        "kept": len(kept_tokens),
        "mean_tokens": {"all_candidates": _mean(all_tokens), "all_correct": _mean(correct_tokens),
                        "correct_per_query": _mean(per_query), "kept": _mean(kept_tokens)},
    }


def format_report(report: dict) -> str:
    """The report as a few readable lines (what `mixrl curate` prints)."""
    dup = report["duplicates_removed"]
    lines = [f"queries {report['queries']}, duplicates of test questions removed {dup['total']} "
             f"(minhash {dup['minhash']}, semantic {dup['semantic']}), sampled {report['queries_sampled']}, "
             f"candidates {report['candidates']}"]
    for stage in report["stages"]:
        reasons = ", ".join(f"{k} {v}" for k, v in stage["reasons"].items())
        alone = f"  (alone {stage['fires_alone']})" if "fires_alone" in stage else ""
        lines.append(f"  {stage['stage']:<15} dropped {stage['dropped']:>5}{alone:<13} remaining {stage['remaining']:>5}"
                     + (f"  {reasons}" if reasons else ""))
    tokens = report["mean_tokens"]
    lines.append(f"kept {report['kept']} rows (one per query with a correct candidate); mean response tokens: "
                 f"all candidates {tokens['all_candidates']}, all correct {tokens['all_correct']} (per query "
                 f"{tokens['correct_per_query']}), kept {tokens['kept']}")
    return "\n".join(lines)


# ---- the run ---------------------------------------------------------------------------------------------------


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_sft_rows(rows: list[dict], run_dir: Path) -> None:
    """RUN_DIR/sft.parquet and sft.jsonl, read back through the validating loader (a bad row fails here); with no
    rows, an earlier run's files are removed so that `mixrl sft` cannot train on stale rows."""
    path, jsonl = run_dir / "sft.parquet", run_dir / "sft.jsonl"
    if not rows:
        path.unlink(missing_ok=True)
        jsonl.unlink(missing_ok=True)
        print("[curate] no query has a correct candidate: no SFT rows written", flush=True)
        return
    pq.write_table(pa.Table.from_pylist(rows), path)
    _write_jsonl(rows, jsonl)
    if load_rows(path) != rows:
        raise RuntimeError(f"{path}: rows read back differ from rows written")


def outputs(rows: list[dict], groups: list[list[Candidate]], judged: list[GroupVerdict],
            teacher: str) -> tuple[list[dict], list[dict]]:
    """The SFT rows (one per query with a correct candidate) and the candidate log (every candidate, its
    verdict, whether it was kept)."""
    sft_rows, candidate_log = [], []
    for row, group, verdict in zip(rows, groups, judged):
        correct = sum(v is None for v in verdict.verdicts)
        if verdict.chosen is not None:
            sft_rows.append(curated_row(row, group[verdict.chosen], teacher=teacher, correct=correct,
                                        candidates=len(group)))
        for i, (candidate, v) in enumerate(zip(group, verdict.verdicts)):
            candidate_log.append({"query": query_text(row), "ground_truth": row["reward_model"]["ground_truth"],
                                  "candidate": i, "tokens": candidate.num_tokens, "finish_reason": candidate.finish_reason,
                                  "verdict": "correct" if v is None else f"{v[0]}:{v[1]}", "kept": i == verdict.chosen,
                                  "text": candidate.text})
    return sft_rows, candidate_log


def run_curate(cfg: CurateConfig) -> dict:
    """Curate the recipe's queries into RUN_DIR (see the module docstring), holding the run directory's lock
    (`core.run_dir`: a second run in it fails at once); returns the report."""
    check_curate_settings(cfg)
    check_curate_paths(cfg)
    with hold_run_dir(cfg.run_dir) as run_dir:
        return _curate(cfg, run_dir)


def _curate(cfg: CurateConfig, run_dir: Path) -> dict:
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    write_resolved_config(cfg, run_dir)
    rows = load_queries(cfg)
    test_files = protected_test_files(cfg)
    tests = [query_text(r) for f in test_files for r in load_rows(f)]
    kept_rows, duplicates = decontaminate(cfg, rows, tests)
    _write_jsonl([{"query": query_text(rows[d.query_index]), "test_question": tests[d.test_index], "method": d.method,
                   "similarity": round(d.similarity, 4)} for d in duplicates], run_dir / "duplicates.jsonl")
    print(f"[curate] {len(rows)} queries, {len(duplicates)} near-duplicates of {len(tests)} test questions "
          f"({len(test_files)} files) removed", flush=True)

    tokenizer = AutoTokenizer.from_pretrained(cfg.teacher_model_path)
    prompts = prompt_ids(tokenizer, kept_rows)
    room = cfg.max_model_len - cfg.sampling.max_response_tokens
    fits = [i for i, p in enumerate(prompts) if len(p) <= room]
    skipped = len(prompts) - len(fits)
    if skipped:
        print(f"[curate] skipping {skipped} queries longer than max_model_len - max_response_tokens = {room} tokens",
              flush=True)
    kept_rows, prompts = [kept_rows[i] for i in fits], [prompts[i] for i in fits]
    groups = sample_candidates(cfg, prompts) if prompts else []
    judged = [judge_group(row, group, cfg) for row, group in zip(kept_rows, groups)]

    sft_rows, candidate_log = outputs(kept_rows, groups, judged, cfg.teacher_model_path)
    _write_jsonl(candidate_log, run_dir / "candidates.jsonl")
    _write_sft_rows(sft_rows, run_dir)
    report = curation_report(groups, judged, queries=len(rows), duplicates=duplicates,
                             skipped_long_prompts=skipped)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report), flush=True)
    return report
