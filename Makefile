# Quick start: `make demo` replays the bundled BTCUSDT sample; `make test` runs lint, types and tests.
# Both create .venv when it is missing and install torch first (the CPU build where one is offered
# locally; a normal wheel elsewhere), then the project with its dev extras.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH_SPEC ?= torch==2.13.*
DEMO_DIR ?= reports/demo

.PHONY: install demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	mkdir -p $(DEMO_DIR)
	rm -f $(DEMO_DIR)/demo.db $(DEMO_DIR)/demo.db-wal $(DEMO_DIR)/demo.db-shm
	TRADER_DATABASE__URL="sqlite+aiosqlite:///$(DEMO_DIR)/demo.db" \
		$(BIN)/trader replay trader/sample_data/BTCUSDT_5m.csv.gz \
		--strategy hrm --run demo --report $(DEMO_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The coverage gate is on the packages that trade (the CLI runs in subprocesses, uncounted).
unit: install
	$(BIN)/pytest -q --cov=trader --cov=risk --cov-report=term:skip-covered --cov-fail-under=90

test: lint typecheck unit

bench: install
	$(BIN)/python bench/replay_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports
