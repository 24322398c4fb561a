#!/usr/bin/env bash
# Installs the Debian packages of the programs the suite runs for real, when any is missing where the
# tests look for it (the list and the paths: tests/fixtures/services.py, shared with the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
services=tests/fixtures/services.py
mapfile -t need < <("$python" "$services")
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  "$python" "$services" --check || true
  echo "missing Debian packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q >/dev/null
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start their services; the tests start their own on free loopback ports.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  ("${as_root[@]}" systemctl stop "$svc" || "${as_root[@]}" service "$svc" stop) >/dev/null 2>&1 || true
done
# Installed but still not where the tests run it from (e.g. another distribution's layout): say so.
if ! "$python" "$services" --check; then
  echo "installed ${need[*]}, but the programs above are still not where the tests run them from" >&2
  exit 1
fi
