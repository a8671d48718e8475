# Every target builds the local virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test demo scan-demo bench check lint typecheck fmt clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real Codex and OpenCode binaries run after the rest, alone: each is a heavy process tree,
# and beside the suite's timed waits on a 2-core machine they made other tests late.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --durations=15 -m "not real_agents"
	$(BIN)/python -m pytest -q -m real_agents

demo: $(STAMP)
	$(BIN)/fleet-hub demo

scan-demo: $(STAMP)
	$(BIN)/python -m node_agent.demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
