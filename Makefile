# Quick start: `make demo` (install + demo sweep) and `make test` (install + test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/orchestrate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(BIN)/orchestrate

demo: install
	WANDB_MODE=offline $(BIN)/orchestrate run sweeps/demo.yaml --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: install
	WANDB_MODE=offline $(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf runs .pytest_cache
