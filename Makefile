PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	scripts/install-chromium.sh
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/tdlog demo

bench: $(STAMP)  # quick sizes; see the README for the full-size commands
	$(BIN)/python benchmarks/recorder.py
	$(BIN)/python benchmarks/engine.py --small
	$(BIN)/python benchmarks/mapd.py --small
	$(BIN)/python benchmarks/select.py --small --repeats 1
	$(BIN)/python benchmarks/spark.py --small
	$(BIN)/python benchmarks/integrations.py --pairs 1

clean:
	rm -rf $(VENV) build dist *.egg-info
