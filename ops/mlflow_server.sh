#!/usr/bin/env bash
# Start the asc-dist MLflow tracking server in the foreground (Ctrl-C stops it and its workers).
#
#   ops/mlflow_server.sh [DIR] [PORT]       DIR defaults to runs/mlflow, PORT to 5000
#   MLFLOW_HOST=0.0.0.0 ops/mlflow_server.sh /shared/mlflow 5000    # on a Ray head: reachable by the workers
#
# DIR gets mlflow.db (sqlite) and artifacts/ (uploaded by clients over HTTP). Python: $PYTHON, else the
# checkout's .venv, else python3 on PATH. See ops/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
  py="$repo/.venv/bin/python"
else
  py="$(command -v python3)"
fi
exec "$py" "$here/mlflow_server.py" "${1:-runs/mlflow}" --port "${2:-5000}" --host "${MLFLOW_HOST:-127.0.0.1}"
