# Everything a fresh machine with only Python 3.11 needs: uv is bootstrapped into .tools/,
# dependencies come from uv.lock, state lives in .churn/ (see README "Settings").
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV := .tools/bin/uv
# --no-sync: the environment is what the stamps below installed (`uv run` alone would install
# every group, the dev tools included, before each command).
RUN := $(UV) run --frozen --no-sync

STATE_DIR := $(or $(CHURN_STATE_DIR),.churn)
INCOMING := $(or $(CHURN_INCOMING_DIR),data/incoming)
LOGS := $(STATE_DIR)/logs
export DAGSTER_HOME ?= $(abspath $(STATE_DIR))/dagster_home
# Modules are compiled on first import, each process writing the __pycache__ of what it uses:
# compiling all 20,000 files ahead (uv's --compile-bytecode, as the images do) took three
# minutes of a newcomer's first `make run` here. A read-only environment would compile on
# every run, so PYTHONDONTWRITEBYTECODE is not passed on to the commands.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help sync sync-dev data instance run materialize merge serve console bench bench-serving bench-scale dev \
	schedule-on schedule-off mlflow-ui production rollback snapshots demo-history demo-campaigns \
	lint test clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# uv's version and the SHA-256 of every wheel of it are in deploy/uv-bootstrap.txt: pip refuses
# anything else, so a tampered download never runs.
$(UV): deploy/uv-bootstrap.txt
	@mkdir -p "$(LOGS)"
	@echo "bootstrapping uv into .tools (log: $(LOGS)/setup.log)"
	@{ $(PYTHON) -m venv .tools && .tools/bin/pip install --quiet --disable-pip-version-check \
		--require-hashes --no-deps -r deploy/uv-bootstrap.txt; } > "$(LOGS)/setup.log" 2>&1 \
		|| { tail -n 20 "$(LOGS)/setup.log"; exit 1; }
	@touch $(UV)

# Two sets from uv.lock, each installed once per change of the lock (a stamp in .venv says so):
# what running needs (the runtime, training, serving and console groups: `make run`, `serve`,
# `console`, `dev`...)
# and everything (the deploy and dev groups too: `make test`, `lint`). --inexact: installing
# the smaller set never removes the dev tools a `make test` installed.
.venv/.synced-run: uv.lock pyproject.toml | $(UV)
	@mkdir -p "$(LOGS)"
	@echo "installing what running needs from uv.lock (log: $(LOGS)/setup.log)"
	@$(UV) sync --frozen --inexact --no-default-groups --group training --group serving --group console \
		>> "$(LOGS)/setup.log" 2>&1 || { tail -n 20 "$(LOGS)/setup.log"; exit 1; }
	@touch $@

.venv/.synced-dev: uv.lock pyproject.toml | $(UV)
	@mkdir -p "$(LOGS)"
	@echo "installing every group from uv.lock, dev tools included (log: $(LOGS)/setup.log)"
	@$(UV) sync --frozen --inexact >> "$(LOGS)/setup.log" 2>&1 \
		|| { tail -n 20 "$(LOGS)/setup.log"; exit 1; }
	@touch $@ .venv/.synced-run

sync: .venv/.synced-run  ## install what running needs into .venv (once per change of uv.lock)

sync-dev: .venv/.synced-dev  ## install every group, dev tools included (make test and lint do)

data: sync  ## synthetic customers for the default data path only; an explicit missing path fails
	$(RUN) churn ensure-data

# The local instance: run monitoring and the retrain pool (deploy/dagster/local.yaml). Copied
# once; a dagster.yaml of your own in DAGSTER_HOME is left alone.
instance:
	@mkdir -p "$(DAGSTER_HOME)"
	@test -f "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster/local.yaml "$(DAGSTER_HOME)/dagster.yaml"

run: sync instance  ## run the whole asset graph: a line per step, the promoted model, the log's path
	@$(RUN) churn run

materialize: data instance  ## one stage: make materialize SELECT=churn_model [CONFIG=run.yaml] (Dagster selection syntax)
	@test -n "$(SELECT)" || { echo "usage: make materialize SELECT=<asset selection> [CONFIG=<run config yaml>]"; exit 2; }
	$(RUN) dg launch -m churn_assets.definitions --assets "$(SELECT)" $(if $(CONFIG),--config "$(CONFIG)")

merge:  ## merge one extract into the snapshot by hand: make merge FILE=path/to/extract.csv
	@test -n "$(FILE)" || { echo "usage: make merge FILE=<extract.csv>"; exit 2; }
	@test -f "$(FILE)" || { echo "make merge: $(FILE) is not a file"; exit 2; }
	@$(MAKE) --no-print-directory data instance
	$(RUN) dg launch -m churn_assets.definitions --job merge_extract \
		--config-json '{"ops": {"customer_snapshot": {"config": {"extract_path": "$(abspath $(FILE))"}}}}'

dev: sync  ## Dagster UI + daemon (http://127.0.0.1:3000, PORT=3001 for another): sensors retrain on files in data/incoming
	@$(RUN) churn check-port $(or $(PORT),3000) --hint "choose another: make dev PORT=3001"
	@$(MAKE) --no-print-directory data instance
	@mkdir -p "$(INCOMING)"
	@$(RUN) dg dev -w workspace.yaml -h 127.0.0.1 -p $(or $(PORT),3000)

schedule-on: sync instance  ## turn on the weekly retrain (Mondays 06:00 UTC; runs while the daemon runs)
	$(RUN) dagster schedule start weekly_retrain -m churn_assets.definitions

schedule-off: sync instance  ## turn the weekly retrain off again
	$(RUN) dagster schedule stop weekly_retrain -m churn_assets.definitions

mlflow-ui: sync  ## MLflow UI (http://127.0.0.1:5000, PORT=5001 for another; Dagster's MLflow links follow it) on the store MLFLOW_TRACKING_URI names
	@$(RUN) churn mlflow-ui --port $(or $(PORT),5000)

serve: sync  ## the churn API on http://127.0.0.1:8000 (PORT=8001 for another; docs at /docs), following production
	@$(if $(PORT),CHURN_API_PORT=$(PORT)) $(RUN) python -m serving

console: sync  ## the retention console on http://127.0.0.1:8050 (PORT=8051 for another); add users with `churn console-user NAME --role lead`
	@$(if $(PORT),CHURN_CONSOLE_PORT=$(PORT)) $(RUN) python -m console

bench: sync  ## pipeline at 7k/100k/1M/10M customers vs a plain script (WRITE_README=1 refreshes the README table)
	$(RUN) python benchmarks/pipeline.py $(if $(WRITE_README),--write-readme)

bench-scale: sync  ## scoring at 10M customers (in process, Dask 1 and 2 workers, raw Booster.predict); the whole graph on 100M out of core
	$(RUN) python benchmarks/scale.py $(if $(ROWS),--rows $(ROWS)) $(if $(OOC_ROWS),--out-of-core-rows $(OOC_ROWS))

bench-serving: sync  ## this API vs `mlflow models serve`: req/s, p50/p99, rows/s, ratios
	$(RUN) python benchmarks/serving.py

production: sync  ## show the production version and its holdout metrics
	$(RUN) churn production

rollback: sync  ## move production back to the version it replaced (TO=N for another)
	$(RUN) churn rollback $(if $(TO),--to $(TO))

snapshots: sync  ## list the training snapshots (churn snapshots restore ID to go back to one)
	$(RUN) churn snapshots

# The demo lives in its own state folder, away from yours. The question "who leaves in the next
# three weeks?" on synthetic weeks is harder than the export's status, hence its own floor.
DEMO_DIR := $(abspath .churn-demo)
DEMO_LAUNCH := $(RUN) dg launch -m churn_assets.definitions
demo-history: sync  ## 8 synthetic weeks in .churn-demo: snapshots, out-of-time gate, realized performance
	rm -rf "$(DEMO_DIR)" && mkdir -p "$(DEMO_DIR)/dagster_home"
	cp deploy/dagster/local.yaml "$(DEMO_DIR)/dagster_home/dagster.yaml"
	$(RUN) churn generate-history --weeks 8 --customers 5000 --kind full --out "$(DEMO_DIR)/data"
	set -e; export CHURN_STATE_DIR="$(DEMO_DIR)" DAGSTER_HOME="$(DEMO_DIR)/dagster_home" \
		CHURN_DATA_PATH="$$(ls "$(DEMO_DIR)"/data/customers_*.csv)" CHURN_OUTCOME_WINDOW_DAYS=21 \
		CHURN_MIN_AUC=0.6 CHURN_MAX_AUC_DROP=0.05; \
	for week in 0 1 2 3 4 5 6 7 8; do \
		if [ $$week -gt 0 ]; then \
			file=$$(ls "$(DEMO_DIR)"/data/weeks/week0$${week}_*.csv); \
			$(DEMO_LAUNCH) --job merge_extract --config-json \
				"{\"ops\": {\"customer_snapshot\": {\"config\": {\"extract_path\": \"$$file\"}}}}"; \
		fi; \
		case $$week in 0|4|8) $(DEMO_LAUNCH) --job churn_training || echo "week $$week: not promoted";; esac; \
	done; \
	$(DEMO_LAUNCH) --assets realized_performance; \
	$(RUN) churn snapshots; $(RUN) churn production; $(RUN) churn realized

CAMPAIGNS_DIR := $(abspath .churn-campaigns)

demo-campaigns: sync  ## 8 weeks of campaigns in .churn-campaigns: measured offer effects vs the truth
	rm -rf "$(CAMPAIGNS_DIR)"
	@$(RUN) churn demo-campaigns --weeks 8 --customers 5000 --start 2026-10-09 --out "$(CAMPAIGNS_DIR)"

lint: sync-dev  ## ruff (lint and format) and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

test: lint  ## lint, then the whole test suite
	$(RUN) pytest -n 2 --dist loadfile --no-loadscope-reorder  # see churn_assets_tests/conftest.py

clean:  ## remove local state (MLflow store, Dagster home, snapshots, demo); keeps data/
	rm -rf "$(STATE_DIR)" "$(DEMO_DIR)" "$(CAMPAIGNS_DIR)"
