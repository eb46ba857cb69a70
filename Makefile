# mlloop: `make demo` runs the loop on this machine; `make test` runs the tests. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime.stamp
DEV_STAMP := $(VENV)/.dev.stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install install-dev up down status demo serve simulate test test-fast lint format bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	@echo ">> installing runtime requirements into $(VENV) (first time: a few minutes)"
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	@echo ">> installing dev requirements into $(VENV)"
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

install: $(RUNTIME_STAMP) ## Create .venv with the pinned runtime requirements

install-dev: $(DEV_STAMP) ## Create .venv with runtime + test/lint requirements

up: install ## Start Airflow (8080) and MLflow (5000) on 127.0.0.1 in the background
	$(BIN)/mlloop services up

# No install here (`make clean` on a fresh clone); a .venv from before the `mlloop` script still stops.
down: ## Stop everything `make up`/`make demo` started
	@if [ -x $(BIN)/mlloop ]; then $(BIN)/mlloop services down; \
	elif [ -x $(BIN)/python ]; then $(BIN)/python -m mlloop.ops.services down; fi

status: install ## Show which services are running
	$(BIN)/mlloop services status

demo: up ## Set up everything and run the main job (ingest several generated days) through the scheduler
	$(BIN)/mlloop demo

serve: install ## Run the scoring service in the foreground (127.0.0.1:8000; `make up` also starts it)
	$(BIN)/mlloop serve

DAYS ?= 5
DRIFT ?=
ROWS ?=
USE_CASE ?=
simulate: up ## Closed loop over DAYS days (after make demo): serve, land, monitor, retrain; DRIFT="covariate_amount@2 concept@4-6" ROWS=60000 USE_CASE=card_fraud
	$(BIN)/mlloop simulate --days $(DAYS) $(foreach d,$(DRIFT),--drift $(d)) $(if $(ROWS),--rows $(ROWS)) $(if $(USE_CASE),--use-case $(USE_CASE))

test: install-dev ## Set up and run the whole test suite (every tier)
	$(BIN)/python -m pytest

test-fast: install-dev ## Inner loop: the unit and DAG tiers only (no servers started)
	$(BIN)/python -m pytest -m "(unit or dags) and not slow"

lint: install-dev ## Lint and check formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev ## Run every benchmark in bench/ (each ends with one JSON line)
	@set -e; for script in bench/*.py; do echo ">> $$script"; $(BIN)/python $$script; done

clean: down ## Stop services and delete local state (.airflow, .mlflow, data, reports); keeps .venv
	rm -rf .airflow .mlflow data reports
