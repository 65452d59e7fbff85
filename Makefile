# Everything a fresh machine with only Python 3.11 needs: uv is bootstrapped into .tools/,
# dependencies come from uv.lock, state lives in .churn/ (see README "Settings").
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.8
UV := .tools/bin/uv
RUN := $(UV) run --frozen

STATE_DIR := $(or $(CHURN_STATE_DIR),.churn)
INCOMING := $(or $(CHURN_INCOMING_DIR),data/incoming)
export DAGSTER_HOME ?= $(abspath $(STATE_DIR))/dagster_home

.PHONY: help sync data instance run materialize serve bench bench-serving dev schedule-on schedule-off mlflow-ui \
	production rollback lint test clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

sync: $(UV)  ## install the locked dependencies into .venv
	$(UV) sync --frozen

data: sync  ## synthetic customers for the default data path only; an explicit missing path fails
	$(RUN) churn ensure-data

# The local instance: run monitoring and the retrain pool (deploy/dagster/local.yaml). Copied
# once; a dagster.yaml of your own in DAGSTER_HOME is left alone.
instance:
	@mkdir -p "$(DAGSTER_HOME)"
	@test -f "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster/local.yaml "$(DAGSTER_HOME)/dagster.yaml"

run: data instance  ## run the whole asset graph and show the promoted model
	$(RUN) dg launch -m churn_assets.definitions --job churn_training
	$(RUN) churn production

materialize: data instance  ## one stage: make materialize SELECT=churn_model (Dagster selection syntax)
	@test -n "$(SELECT)" || { echo "usage: make materialize SELECT=<asset selection>"; exit 2; }
	$(RUN) dg launch -m churn_assets.definitions --assets "$(SELECT)"

dev: data instance  ## Dagster UI + daemon (http://127.0.0.1:3000): sensors retrain on files in data/incoming
	@mkdir -p "$(INCOMING)"
	$(RUN) dagster dev -w workspace.yaml

schedule-on: sync instance  ## turn on the weekly retrain (Mondays 06:00 UTC; runs while the daemon runs)
	$(RUN) dagster schedule start weekly_retrain -m churn_assets.definitions

schedule-off: sync instance  ## turn the weekly retrain off again
	$(RUN) dagster schedule stop weekly_retrain -m churn_assets.definitions

mlflow-ui: sync  ## MLflow UI (http://127.0.0.1:5000) on the local store
	@mkdir -p "$(abspath $(STATE_DIR))"
	$(RUN) mlflow ui --backend-store-uri "sqlite:///$(abspath $(STATE_DIR))/mlflow.db" \
		--default-artifact-root "$(abspath $(STATE_DIR))/mlartifacts" --port 5000

serve: sync  ## the churn API on http://127.0.0.1:8000 (docs at /docs), following production
	$(RUN) python -m serving

bench: sync  ## pipeline at 7k/100k/1M/10M customers vs a plain script; refreshes the README table
	$(RUN) python benchmarks/pipeline.py --write-readme

bench-serving: sync  ## this API vs `mlflow models serve`: req/s, p50/p99, rows/s, ratios
	$(RUN) python benchmarks/serving.py

production: sync  ## show the production version and its holdout metrics
	$(RUN) churn production

rollback: sync  ## move production back to the version it replaced (TO=N for another)
	$(RUN) churn rollback $(if $(TO),--to $(TO))

lint: sync  ## ruff (lint and format) and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

test: lint  ## lint, then the whole test suite
	$(RUN) pytest -n 2 --dist loadfile  # two workers; a test file runs whole on one (module stacks)

clean:  ## remove local state (MLflow store, Dagster home); keeps data/
	rm -rf "$(STATE_DIR)"
