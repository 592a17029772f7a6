"""What the console shows of vLLM: its warnings and errors, not its INFO lines nor the warnings it repeats at every
weight sync and engine start on CPU; `mixrl --verbose` (or MIXRL_VERBOSE=1) shows everything again.

vLLM configures its loggers from a `logging.config.dictConfig` file named by VLLM_LOGGING_CONFIG_PATH, read when
`vllm` is first imported — in the engine's process and in the engine-core process it starts, which inherits the
environment. `quiet_vllm_logging()` writes that file and sets the variable; call it before importing vllm.

The layerwise weight reloader warns "<Layer>: Failed to load weights" for each layer that an update does not
carry (a tied LM head, a rotary embedding): every sync pushes only the trained parameters, so the warning is
expected and repeats at every step.

vLLM-CPU's worker also prints a C++ warning at every engine start (its NUMA memory binding), through torch's C++
log: TORCH_CPP_LOG_LEVEL=ERROR, inherited by the engine's processes, keeps torch's C++ warnings from the console
too (read when torch starts in a process, so it reaches the processes started from here, not this one).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

VERBOSE_ENV = "MIXRL_VERBOSE"
# Messages vLLM logs at WARNING that are expected: at every weight push (layers an update does not carry), and at
# every vLLM-CPU engine start (eager mode, no Triton on CPU): none asks the user to act
VLLM_EXPECTED_WARNINGS = (
    "Failed to load weights",
    "Inductor compilation was disabled",
    "Triton is not installed",
    "Reset SSM cache type",
    "Model Runner V2 requires Triton",
    "Triton is installed, but doesn't include CPU backend",
    "does not officially support disabling chunked prefill",  # ours: seeded CPU requests need it off (core/engine.py)
    "Enforce eager set",
    "is not found in LD_PRELOAD",  # libtcmalloc / libiomp: a deployment tuning hint, not an error
    "Passing raw prompts to InputProcessor is deprecated",
    "force killing remaining process",  # the engine's own shutdown of its worker processes
    # the single-process CPU engine (core/engine.py): its seed and thread count are set on purpose
    "VLLM_ENABLE_V1_MULTIPROCESSING is set to False",
    "leaving Torch threads at",
)
# Python warnings vLLM's import raises on torch 2.13 (module, category): a deprecation inside vLLM, not ours
PYTHON_WARNINGS_IGNORED = (("vllm.triton_utils.dispatcher", "FutureWarning"),)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class DropExpectedVllmWarnings(logging.Filter):
    """Drop the records whose message template is one of `VLLM_EXPECTED_WARNINGS`.

    >>> record = logging.LogRecord("vllm.x", logging.WARNING, "f", 1, "%s: Failed to load weights", ("Embedding",), None)
    >>> DropExpectedVllmWarnings().filter(record)
    False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if any(expected in message for expected in VLLM_EXPECTED_WARNINGS):
            return False
        return not _engine_precision_cast(record)


# vLLM 0.32 warns once per parameter when it loads a checkpoint into an engine of lower precision ("Attempted to load
# weight %s with dtype %s into parameter with dtype %s"): an fp32 checkpoint into the bf16/fp16 engine that precision
# `auto` chose is that cast on purpose (a 28-layer model: over 100 lines at every engine start). Other mismatches stay.
LOAD_CAST_TEMPLATE = "Attempted to load weight %s with dtype %s into parameter with dtype %s"


def _engine_precision_cast(record: logging.LogRecord) -> bool:
    """Whether `record` is vLLM's load-time warning for an fp32 weight cast to a bf16/fp16 parameter.

    >>> rec = lambda src, dst: logging.LogRecord("vllm.x", 30, "f", 1, LOAD_CAST_TEMPLATE, ("norm.weight", src, dst), None)
    >>> _engine_precision_cast(rec("torch.float32", "torch.bfloat16")), _engine_precision_cast(rec("torch.bfloat16", "torch.float16"))
    (True, False)
    """
    if str(record.msg) != LOAD_CAST_TEMPLATE or not isinstance(record.args, tuple) or len(record.args) != 3:
        return False
    _, src, dst = (str(a) for a in record.args)
    return src == "torch.float32" and dst in ("torch.bfloat16", "torch.float16")


# Ray's note at every local cluster start that token authentication is on by default (it asks nothing of the user;
# the warning that it is OFF stays)
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_EXPECTED_WARNINGS = ("Token authentication is enabled for this Ray cluster",)


class DropExpectedRayNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(expected in str(record.msg) for expected in RAY_EXPECTED_WARNINGS)


def quiet_ray_notes() -> None:
    """Keep Ray's expected start-up note off the console (unless verbose); call before `ray.init`."""
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    if not verbose() and not any(isinstance(f, DropExpectedRayNotes) for f in logger.filters):
        logger.addFilter(DropExpectedRayNotes())


def vllm_logging_config(level: str = "WARNING") -> dict:
    """vLLM's own logging layout (its formatter, one stream handler) at `level`, with the expected warnings dropped."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vllm": {"()": "vllm.logging_utils.NewLineFormatter", "datefmt": "%m-%d %H:%M:%S",
                                "format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s"}},
        "filters": {"expected": {"()": f"{__name__}.DropExpectedVllmWarnings"}},
        "handlers": {"vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": level,
                              "filters": ["expected"], "stream": "ext://sys.stdout"}},
        "loggers": {"vllm": {"handlers": ["vllm"], "level": level, "propagate": False},
                    # torch warns in every process where triton is absent (the CPU install removes it: it has no
                    # CPU backend) as vLLM registers its custom ops: "Triton not available, find_triton_kernels = []"
                    "torch._library.triton": {"level": "ERROR"}},
    }


def quiet_vllm_logging() -> str | None:
    """Point VLLM_LOGGING_CONFIG_PATH at the quiet configuration (unless verbose, or the user set one) and ignore
    vLLM's own deprecation warnings here and in the processes started from here; returns the path."""
    if verbose() or os.environ.get("VLLM_LOGGING_CONFIG_PATH"):
        return None
    ignored = [f"ignore::{category}:{module}" for module, category in PYTHON_WARNINGS_IGNORED]
    for module, category in PYTHON_WARNINGS_IGNORED:
        warnings.filterwarnings("ignore", category=getattr(builtins, category), module=module.replace(".", r"\."))
    current = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
    os.environ["PYTHONWARNINGS"] = ",".join(current + [w for w in ignored if w not in current])
    text = json.dumps(vllm_logging_config(), sort_keys=True)
    path = Path(tempfile.gettempdir()) / f"mixrl_vllm_logging_{os.getuid()}.json"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return str(path)
