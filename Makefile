# The README's two commands: `make demo` and `make test`. Each creates .venv when missing and
# installs what it needs. TORCH names the PyTorch to install when the venv has none: the CPU
# build by default; a user with a GPU passes their own, e.g. `make demo TORCH=torch`, or
# keeps an existing one with `make demo VENV=/path/to/their/venv`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.unetkit-dev

.PHONY: demo test lint bench bench-tiling browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/unetkit demo --out results

# Debian's Chromium for the page's browser tests (tests/serve): apt-get install when it is missing (as root),
# nothing where it is installed; elsewhere those tests skip and say why.
browser:
	@.ci/install-browser

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Training throughput against the device's peak and the peers, end-to-end pipeline, tiled prediction; writes
# benchmarks/results/bench-<device>.json|.md. Extra flags: `make bench ARGS="--device cpu --quick"`.
bench: $(STAMP)
	$(BIN)/python -c "import monai" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/unetkit bench $(ARGS)

# Tiled prediction: unetkit.predict vs MONAI sliding_window_inference vs one untiled pass; writes
# benchmarks/results/tiling-<device>.json|.md. Extra flags: `make bench-tiling ARGS="--device cpu"`.
bench-tiling: $(STAMP)
	$(BIN)/python -c "import monai" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/tiling.py $(ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
