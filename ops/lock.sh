#!/usr/bin/env bash
# Regenerate the committed locks from pyproject.toml: one command, one tool (uv), hashes for every file.
#   pip install uv && bash ops/lock.sh
# requirements.lock          the run-time tree (README command 1)
# requirements-dev.lock      the same tree plus the test tools (README command 2, .ci/run)
# requirements-cluster.lock  the run-time tree plus Ray's dashboard and boto3 (cluster.yaml's setup commands)
# requirements-onnx.lock     the run-time tree plus onnx, onnxruntime and onnxscript (`export --onnx`), seeded from the
#                            dev lock so its ONNX packages are the ones the tests ran
# --universal writes one lock for every platform (markers where a package differs, e.g. numpy by Python
# version); --python-version 3.11 is the oldest Python that pyproject.toml allows.
# tests/test_lock.py fails when pyproject.toml and the locks drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--generate-hashes --universal --python-version 3.11 --quiet)
uv pip compile pyproject.toml "${common[@]}" -o requirements.lock
uv pip compile pyproject.toml --extra dev "${common[@]}" -o requirements-dev.lock
uv pip compile pyproject.toml --extra cluster "${common[@]}" -o requirements-cluster.lock
cp requirements-dev.lock requirements-onnx.lock  # uv keeps an output file's pins where it can
uv pip compile pyproject.toml --extra onnx "${common[@]}" -o requirements-onnx.lock
