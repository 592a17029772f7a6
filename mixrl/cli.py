"""The `mixrl` command line: one subcommand per capability.

    mixrl data [--recipe R] [key=value ...]            generate the synthetic datasets (verl schema)
    mixrl data import LAYOUT SOURCE OUT.parquet [--split S] [--limit N]   a standard benchmark -> verl parquet
    mixrl pretrain RECIPE [section.key=value ...]      compact base-model pretraining
    mixrl prune RECIPE [section.key=value ...]         depth/width pruning of a checkpoint, then distillation from it
    mixrl sft RECIPE [section.key=value ...]           SFT with thinking-mode fusion
    mixrl curate RECIPE [section.key=value ...]        long-CoT curation: teacher candidates -> filters -> SFT rows
    mixrl eval MODEL_DIR [--recipe R] [--data D.parquet ...] [--samples K] [--budgets 32,64] [--modes think,direct]
                                                       accuracy, mean@k, pass@k per source/mode, budget sweep, switch
    mixrl quickstart [--recipe R] [section.key=value]  eval, RM service and GRPO from the shipped base (from_scratch=true: data -> pretrain -> SFT first)
    mixrl train RECIPE [section.key=value ...]         GRPO with vLLM rollouts and weight sync (grpo_*.yaml)
    mixrl plot RUN_DIR [--keys k1,k2]                  PNG curves from a run's metrics.jsonl
    mixrl serve-rewards [--host H] [--port P] [--config rewards.yaml] [--token T]   OpenRLHF-style /get_reward endpoint
    mixrl serve-sandbox [--host H] [--port P] [--token T]               SandboxFusion-compatible code sandbox
    mixrl serve-rm MODEL_DIR [--model-name N] [--registry R]            reward model as a gRPC service
    mixrl serve-rm --kind critique --model-name math-critique           the arithmetic-step critique, served
    mixrl train-rm --out DIR [--steps S]                                tiny reward model on synthetic preference pairs
    mixrl deploy-rm MODEL_DIR --name N (--local K | --render DIR | --apply)   validate, then deploy a reward model

`--verbose` anywhere on the line brings vLLM's INFO lines and expected warnings back to the console
(`core/quiet_logs.py`).

Overrides are `section.key=value` with YAML values (`train.max_steps=20`, `sources[0]` is not supported: edit
the recipe for lists). Unknown keys fail and name the closest valid ones. Every run writes its resolved
config to its run directory.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import signal
import sys
from pathlib import Path

from core.config import ConfigError, load_config
from core.run_dir import RunDirBusyError


def recipe_schema(path) -> type:
    """The schema of a shipped recipe, from its file-name prefix (pretrain_*, prune_*, sft_*, curate_*, eval_*, quickstart*)."""
    from mixrl.config import EvalConfig, QuickstartConfig
    from rl.config import GRPOConfig
    from sft.config import CurateConfig, PretrainConfig, PruneConfig, SFTConfig

    schemas = {"pretrain": PretrainConfig, "prune": PruneConfig, "sft": SFTConfig, "curate": CurateConfig, "eval": EvalConfig, "quickstart": QuickstartConfig, "grpo": GRPOConfig}
    prefix = Path(path).stem.split("_")[0]
    if prefix not in schemas:
        raise ConfigError(f"{path}: cannot tell the recipe kind from its name; expected a prefix in {sorted(schemas)}")
    return schemas[prefix]


def _cmd_data(args) -> int:
    if args.overrides[:1] == ["import"]:
        return _cmd_data_import(args.overrides[1:])
    from core.sections import SyntheticDataConfig
    from mixrl.data.synthetic import ensure_datasets

    cfg = load_config(SyntheticDataConfig, args.recipe, args.overrides)
    out = ensure_datasets(cfg)
    print(json.dumps({"out_dir": str(out), "train_rows": cfg.train_rows}))
    return 0


def _cmd_data_import(argv: list[str]) -> int:
    from mixrl.data.importers import CONVERTERS, import_dataset

    p = argparse.ArgumentParser(prog="mixrl data import", description="convert a standard benchmark into verl parquet")
    p.add_argument("layout", choices=["auto", *sorted(CONVERTERS)], help="the source's layout (auto: from its fields)")
    p.add_argument("source", help=".jsonl/.jsonl.gz/.json/.parquet file, a save_to_disk folder, or a hub dataset name")
    p.add_argument("out", help="the verl parquet to write")
    p.add_argument("--split", default=None, help="split of a DatasetDict folder or hub dataset")
    p.add_argument("--config", default=None, help="hub dataset configuration (e.g. main for openai/gsm8k)")
    p.add_argument("--limit", type=int, default=0, help="first N records only (0 = all)")
    a = p.parse_args(argv)
    print(json.dumps(import_dataset(a.layout, a.source, a.out, split=a.split, config=a.config, limit=a.limit)))
    return 0


def _cmd_pretrain(args) -> int:
    from mixrl.data.synthetic import ensure_datasets
    from sft.config import PretrainConfig
    from sft.pretrain import run_pretrain

    cfg = load_config(PretrainConfig, args.recipe, args.overrides)
    ensure_datasets(cfg.data)  # the corpus is the synthetic datasets' train splits
    run_pretrain(cfg)
    return 0


def _cmd_prune(args) -> int:
    from mixrl.data.synthetic import ensure_datasets
    from sft.config import PruneConfig
    from sft.prune import check_prune_config, run_prune

    cfg = load_config(PruneConfig, args.recipe, args.overrides)
    check_prune_config(cfg)  # impossible targets fail before any data is generated
    ensure_datasets(cfg.data)  # calibration, distillation and held-out documents are the synthetic datasets
    run_prune(cfg)
    return 0


def _cmd_sft(args) -> int:
    from mixrl.data.synthetic import ensure_datasets
    from sft.config import SFTConfig
    from sft.finetune import run_sft

    cfg = load_config(SFTConfig, args.recipe, args.overrides)
    if any("{data_dir}" in s.path for s in cfg.sources):  # sources in the synthetic datasets: make them first
        ensure_datasets(cfg.data)
    run_sft(cfg)
    return 0


def _cmd_curate(args) -> int:
    from mixrl.data.synthetic import ensure_datasets
    from sft.config import CurateConfig
    from sft.curate import check_curate_settings, run_curate

    cfg = load_config(CurateConfig, args.recipe, args.overrides)
    check_curate_settings(cfg)  # bad values fail before any data is made
    if "{data_dir}" in cfg.queries_path or any("{data_dir}" in p for p in cfg.dedup.test_paths):
        ensure_datasets(cfg.data)
    run_curate(cfg)
    return 0


def _cmd_eval(args) -> int:
    from mixrl.config import EvalConfig
    from mixrl.evaluate import run_eval

    overrides = [f"model_path={args.model_dir}"]
    if args.data:
        overrides.append(f"datasets={json.dumps(args.data)}")
    if args.samples is not None:
        overrides.append(f"samples_per_prompt={args.samples}")
    if args.budgets:
        overrides.append(f"thinking_budgets=[{args.budgets}]")
    if args.modes:
        overrides.append(f"modes=[{args.modes}]")
    if args.backend:
        overrides.append(f"backend={args.backend}")
    if args.out:
        overrides.append(f"out_dir={json.dumps(args.out)}")
    overrides += args.overrides
    run_eval(load_config(EvalConfig, args.recipe, overrides))
    return 0


def _cmd_quickstart(args) -> int:
    from mixrl.config import QuickstartConfig
    from mixrl.quickstart import run_quickstart

    run_quickstart(load_config(QuickstartConfig, args.recipe, args.overrides))
    return 0


def _cmd_train(args) -> int:
    from mixrl.data.synthetic import ensure_quickstart_data
    from rl.config import GRPOConfig
    from rl.grpo import run_grpo
    from rl.heldout import heldout_split_path

    cfg = load_config(GRPOConfig, args.recipe, args.overrides)
    heldout = ([heldout_split_path(s) for s in cfg.sources] if cfg.eval.per_source else [cfg.eval.path]) if cfg.eval.prompts else []
    ensure_quickstart_data([s.path for s in cfg.sources] + heldout)
    run_grpo(cfg)
    return 0


def _cmd_plot(args) -> int:
    from core.plots import plot_run

    for path in plot_run(args.run_dir, keys=args.keys.split(",") if args.keys else None):
        print(path)
    return 0


def _cmd_serve_rewards(args) -> int:
    import yaml

    from rewards import reward_config_from_dict, serve_rewards

    raw = {}
    if args.config:
        raw = yaml.safe_load(open(args.config)) or {}
        raw = raw.get("rewards", raw)  # a whole recipe or just its rewards section
    try:
        config = reward_config_from_dict(raw)
    except KeyError as exc:
        raise ConfigError(f"{args.config}: {exc.args[0]}") from None
    try:
        serve_rewards(args.host, args.port, config, default_data_source=args.default_data_source, token=args.token,
                      insecure_no_token=args.insecure_no_token, max_query_chars=args.max_query_chars,
                      ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    except ValueError as exc:  # a non-loopback host without a token
        print(f"mixrl serve-rewards: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_serve_sandbox(args) -> int:
    from sandbox.service import serve

    try:
        serve(args.host, args.port, token=args.token, max_concurrency=args.max_concurrency,
              max_pending=args.max_pending, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    except ValueError as exc:  # a non-loopback host without a token
        print(f"mixrl serve-sandbox: {exc}", file=sys.stderr)
        return 2
    return 0


def _chat_pairs(num_rows: int, split: str, seed: int):
    """Preference pairs from the synthetic chat rows, with their hard negatives (reward_services never imports the
    application; the CLI joins them)."""
    from mixrl.data.chat_prompts import chat_preference_pairs

    return chat_preference_pairs(num_rows, split, seed, with_hard_negatives=True)


def rule_scorer(kind: str):
    """The rule-based reward models `mixrl serve-rm --kind KIND` serves (the functions live in ``rewards``, which
    reward_services never imports; the CLI joins them)."""
    from reward_services.models import RuleScorer

    if kind == "critique":
        import rewards.critique as module

        return RuleScorer("critique", module.service_score, Path(module.__file__).read_bytes())
    raise ValueError(f"no rule-based reward model {kind!r}")


def _cmd_serve_rm(args) -> int:
    from reward_services.models import RULE_KINDS
    from reward_services.server import run_server

    return run_server(args, scorer=rule_scorer(args.kind) if args.kind in RULE_KINDS else None)


def _cmd_train_rm(args) -> int:
    from reward_services.train import train_and_save
    from core.tokenizer import train_tokenizer

    train, heldout = _chat_pairs(args.train_pairs, "train", args.seed), _chat_pairs(args.heldout_pairs, "test", args.seed + 1)
    tokenizer = train_tokenizer([f"{p.prompt}\n{p.chosen}\n{p.rejected}" for p in train], args.vocab_size)
    metrics = train_and_save(tokenizer, train, heldout, args.out, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, hidden_size=args.hidden_size, num_layers=args.num_layers, seed=args.seed,
                             device=args.device)
    print(json.dumps(metrics))
    return 0


def _cmd_deploy_rm(args) -> int:
    from reward_services import deploy
    from reward_services.train import load_pairs_jsonl

    pairs = load_pairs_jsonl(args.pairs) if args.pairs else _chat_pairs(args.heldout_pairs, "test", 1)
    report = deploy.validate(args.model_dir, pairs, min_accuracy=args.min_accuracy)
    out = {"validation": report.as_dict()}
    if not report.passed:
        print(json.dumps(out))
        print(f"mixrl deploy-rm: validation failed (accuracy {report.pairwise_accuracy:.3f} < {args.min_accuracy} "
              f"or {report.errors} errors); nothing deployed", file=sys.stderr)
        return 1
    if args.local:
        out["instances"] = deploy.start_local(args.model_dir, name=args.name, registry=args.registry,
                                              instances=args.local, token=args.token)
    else:
        docs = deploy.render_manifests(name=args.name, model_digest=report.model_digest, namespace=args.namespace,
                                       image=args.image, model_path=args.model_path, replicas=args.replicas,
                                       token=args.token)
        if args.render:
            out["manifests"] = [str(p) for p in deploy.write_manifests(docs, args.render)]
        if args.apply:
            deploy.apply_manifests(docs)
            out["applied"] = [f"{d['kind']}/{d['metadata']['name']}" for d in docs]
    print(json.dumps(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixrl", description="RL post-training toolkit for language models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="generate the synthetic datasets (math, code, ifeval, chat); `data import` converts benchmarks")
    p.add_argument("--recipe", default=None, help="YAML with SyntheticDataConfig keys")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. out_dir=runs/data train_rows.math=1000")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("pretrain", help="train a tokenizer and a tiny Qwen2 base model from scratch")
    p.add_argument("recipe", help="e.g. recipes/pretrain_tiny.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("prune", help="prune layers / MLP channels / heads by calibration importance, then distil")
    p.add_argument("recipe", help="e.g. recipes/prune_tiny.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("sft", help="supervised fine-tuning with thinking-mode fusion")
    p.add_argument("recipe", help="e.g. recipes/sft_thinking.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.set_defaults(func=_cmd_sft)

    p = sub.add_parser("curate", help="long-CoT curation: teacher candidates, named filters, answer check, "
                                      "shortest correct kept, queries deduplicated against test splits")
    p.add_argument("recipe", help="e.g. recipes/curate_tiny.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. max_queries=20 sampling.samples_per_prompt=4")
    p.set_defaults(func=_cmd_curate)

    p = sub.add_parser("eval", help="accuracy per domain and mode, thinking-switch reliability")
    p.add_argument("model_dir", help="a Hugging Face model folder")
    p.add_argument("--recipe", default=None, help="YAML with EvalConfig keys, e.g. recipes/eval_tiny.yaml")
    p.add_argument("--data", action="append", default=[], help="a verl dataset to evaluate (repeatable), e.g. from `mixrl data import`")
    p.add_argument("--samples", type=int, default=None, help="k samples per prompt for mean@k and pass@k")
    p.add_argument("--budgets", default=None, help="thinking-budget sweep, e.g. 32,64,128")
    p.add_argument("--modes", default=None, help="think,direct (default both), or one of them")
    p.add_argument("--backend", default=None, choices=["vllm", "hf", "reference"], help="reference: score the rows' own responses")
    p.add_argument("--out", default=None, help="output folder (default MODEL_DIR/eval)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. backend=hf prompts_per_domain=50 domains=[]")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="GRPO: vLLM rollouts, rewards, advantages, update, weight sync (Ray actors)")
    p.add_argument("recipe", help="e.g. recipes/grpo_math_tiny.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. max_steps=5 resume=runs/grpo_math_tiny")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("plot", help="PNG curves of a run's metrics.jsonl")
    p.add_argument("run_dir", help="a run directory (holds metrics.jsonl)")
    p.add_argument("--keys", default=None, help="comma-separated metric names (default: the main GRPO curves)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("serve-rewards", help="OpenRLHF-style POST /get_reward endpoint over the reward router")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--config", default=None, help="YAML: a recipe with a rewards: section, or the section itself")
    p.add_argument("--default-data-source", default="mixrl/synthetic_math", help="route for requests without data_sources")
    p.add_argument("--token", default=os.environ.get("MIXRL_REWARDS_TOKEN") or None,
                   help="bearer token clients must send (default: $MIXRL_REWARDS_TOKEN); required off loopback")
    p.add_argument("--insecure-no-token", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--max-query-chars", type=int, default=256 * 1024, help="longest query scored (400 beyond)")
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--ssl-keyfile", default=None, help="the private key of --ssl-certfile (PEM)")
    p.set_defaults(func=_cmd_serve_rewards)

    p = sub.add_parser("serve-sandbox", help="isolated code execution service (SandboxFusion-compatible /run_code, /run_tests)")
    p.add_argument("--host", default="127.0.0.1", help="a non-loopback address requires --token")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=os.environ.get("MIXRL_SANDBOX_TOKEN") or None,
                   help="bearer token clients must send (default: $MIXRL_SANDBOX_TOKEN)")
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--ssl-keyfile", default=None, help="the private key of --ssl-certfile (PEM)")
    p.add_argument("--max-concurrency", type=int, default=2, help="sandboxed runs at once")
    p.add_argument("--max-pending", type=int, default=None, help="queued requests before answering 429")
    p.set_defaults(func=_cmd_serve_sandbox)

    p = sub.add_parser("serve-rm", help="serve a reward model (classifier, generative judges, or the rule-based "
                                        "step critique) over gRPC")
    from reward_services.cli_args import add_deploy_arguments, add_serve_arguments, add_train_arguments

    add_serve_arguments(p)
    p.set_defaults(func=_cmd_serve_rm)

    p = sub.add_parser("train-rm", help="train a tiny reward model on synthetic preference pairs (Bradley-Terry)")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train_rm)

    p = sub.add_parser("deploy-rm", help="validate a reward model on held-out pairs, then deploy it")
    add_deploy_arguments(p)
    p.set_defaults(func=_cmd_deploy_rm)

    p = sub.add_parser("quickstart", help="data -> pretrain -> SFT -> eval on the embedded tiny default")
    p.add_argument("--recipe", default=None, help="default: the embedded defaults of recipes/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. pretrain.train.max_steps=50")
    p.set_defaults(func=_cmd_quickstart)
    return parser


def exit_on_sigterm() -> None:
    """SIGTERM (`kill PID`, a scheduler's preemption, `timeout`) ends the `mixrl` command the way Ctrl-C does: Python
    unwinds, so a run stops the engines and trainers it started and Ray stops the processes it launched, then the
    command exits with 143 (128 + SIGTERM; 15 once a run has started Ray, whose driver handler takes over). Python
    leaves SIGTERM to the kernel, which ends the process at once and left its vLLM engine-core processes running
    (2.7 GB each for the quickstart). Commands that serve
    (`serve-rm`, `serve-sandbox`) install their own handlers, which drain and exit 0; a handler someone else set is
    kept."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    from core.chat import ChatTemplateError
    from core.data import DataError
    from core.quiet_logs import VERBOSE_ENV, quiet_vllm_logging
    from mixrl.base_checkpoint import BaseCheckpointError
    from rl.trainer_group import PlacementError

    if argv is None:  # the `mixrl` command: this process ends with the command
        # After every exit hook (Ray's shutdown included), skip the interpreter's last cyclic-GC scan: with torch,
        # transformers and vLLM loaded it took 1.5 s of each command's end on a 2-core CPU, and process exit
        # reclaims the memory anyway (`core.vllm_plugin` does the same in vLLM's engine-core processes).
        atexit.register(gc.freeze)
        exit_on_sigterm()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" in argv:  # anywhere on the line: vLLM's INFO lines and expected warnings reach the console again
        argv = [a for a in argv if a != "--verbose"]
        os.environ[VERBOSE_ENV] = "1"
    quiet_vllm_logging()  # inherited by the Ray workers and engine processes this command starts
    if argv[:2] == ["data", "import"]:  # its own options (--split, --limit), parsed by _cmd_data_import
        argv = ["data", "--", *argv[1:]]
    parser = build_parser()
    # key=value overrides may also follow options (`mixrl eval M --data D domains=[]`), where argparse's
    # positional list has already been filled: collect them here
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mixrl {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"mixrl {args.command}: data error: {exc}", file=sys.stderr)
        return 2
    except ChatTemplateError as exc:
        print(f"mixrl {args.command}: chat template error: {exc}", file=sys.stderr)
        return 2
    except PlacementError as exc:
        print(f"mixrl {args.command}: placement error: {exc}", file=sys.stderr)
        return 2
    except RunDirBusyError as exc:
        print(f"mixrl {args.command}: {exc}", file=sys.stderr)
        return 2
    except BaseCheckpointError as exc:
        print(f"mixrl {args.command}: base checkpoint error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
