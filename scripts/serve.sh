#!/usr/bin/env bash
# `make run`'s serving step: the executive view, the exporter and the Dagster UI, on loopback by default.
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${PULSO_HOST:-127.0.0.1}"
APP_PORT="${PULSO_APP_PORT:-8501}"
EXPORTER_PORT="${PULSO_EXPORTER_PORT:-9108}"
DAGSTER_PORT="${PULSO_DAGSTER_PORT:-3070}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p data/logs data/.secrets "$DAGSTER_HOME"
# Every DuckDB-writing asset is in pool "duckdb": one writer at a time; telemetry off.
.venv/bin/python -c 'from pipelines.build import ensure_dagster_home; ensure_dagster_home()'

# The app needs a sign-in password. Taken from the environment or Streamlit secrets when set; otherwise a
# random one is generated once into a 0600 file (never printed, never logged).
if [ -z "${PULSO_APP_PASSWORD:-}" ] && [ ! -f app/.streamlit/secrets.toml ] && [ ! -f .streamlit/secrets.toml ]; then
  secret_file=data/.secrets/app_password
  if [ ! -s "$secret_file" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(16))' > "$secret_file")
  fi
  PULSO_APP_PASSWORD="$(cat "$secret_file")"
  export PULSO_APP_PASSWORD
  password_note="sign in with the password in $secret_file"
else
  password_note="sign in with the configured password"
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

.venv/bin/dagster dev -w workspace.yaml -h "$HOST" -p "$DAGSTER_PORT" >data/logs/dagster.log 2>&1 &
pids+=($!)
.venv/bin/python -m exporters.serve --host "$HOST" --port "$EXPORTER_PORT" >data/logs/exporter.log 2>&1 &
pids+=($!)
.venv/bin/streamlit run app/streamlit_app.py --server.address "$HOST" --server.port "$APP_PORT" \
  --server.headless true --browser.gatherUsageStats false >data/logs/app.log 2>&1 &
pids+=($!)

cat <<TXT

Pulso is running (logs in data/logs/):
  Executive view   http://$HOST:$APP_PORT      ($password_note)
  Exporter         http://$HOST:$EXPORTER_PORT/metrics
  Dagster UI       http://$HOST:$DAGSTER_PORT
  Grafana          dashboards + provisioning in build/grafana/ (mount into a Grafana; see docs/architecture.md)
Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}"
echo "a service stopped; see data/logs/" >&2
exit 1
