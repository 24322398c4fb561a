# Pulso — the two commands: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
export PULSO_WAREHOUSE ?= data/warehouse.duckdb
export PULSO_PUBLISHED ?= data/published
export PULSO_SOURCES ?= data/sources/$(PROFILE)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export GX_ANALYTICS_ENABLED := False
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := 1
PULSO_APP_PORT ?= 8501
PULSO_EXPORTER_PORT ?= 9108
PULSO_DAGSTER_PORT ?= 3070

.PHONY: install sysdeps data build pipelines dashboards rules run app exporter dagster test lint bench eval mutate lock clean

install: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

# Debian packages the suite drives for real: Prometheus + promtool, Alertmanager + amtool, Chromium.
sysdeps:
	@bash .ci/sysdeps.sh

data: install
	$(PY) -m pipelines.simulate --profile $(PROFILE) --out $(PULSO_SOURCES)

pipelines: install
	$(PY) -m pipelines.build

dashboards: install
	$(PY) -m dashboards.generate

rules: install
	$(PY) -m alerts.generate

build: data pipelines dashboards rules

run: build
	@bash scripts/serve.sh

app: install
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.port $(PULSO_APP_PORT) --server.headless true

exporter: install
	$(PY) -m exporters.serve --port $(PULSO_EXPORTER_PORT)

dagster: install
	@$(PY) -c 'from pipelines.build import ensure_dagster_home; ensure_dagster_home()'
	$(VENV)/bin/dagster dev -w workspace.yaml -p $(PULSO_DAGSTER_PORT)

test: install sysdeps
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m bench.run

eval: install
	$(PY) -m alerts.evaluate

# Mutation testing of one core module (not part of `make test`): `make mutate MODULE=slack-notifier`;
# `make mutate` lists the modules (scripts/mutation.toml). MUTATE_ARGS=--record updates docs/testing.md.
mutate: install
	$(PY) scripts/mutate.py $(MODULE) $(MUTATE_ARGS)

lock:
	$(PY) -m pip freeze --exclude-editable | sed '1i # Full pinned dependency tree (pip freeze of a working .venv). Regenerate: make lock' > requirements.lock

clean:
	rm -rf data/sources data/published data/*.duckdb* .dagster_home artifacts
