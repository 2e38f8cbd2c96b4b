"""A real MLflow tracking server for tests: sqlite backend, artifacts proxied into a folder, loopback only.

One server per pytest session (it takes 8-20 s to answer on two cores), started through ops/mlflow_server.py
exactly as a user starts it, and stopped by its process group at the end. tests/conftest.py imports the
fixtures, so every test can ask for them:

    from tests.mlflow_server import mlflow_server, mlflow_server_dir  # noqa: F401  (in conftest.py)

    def test_sweep_logs(mlflow_server, mlflow_server_dir):
        ...--mlflow-uri mlflow_server...                       # "http://127.0.0.1:<port>"
        client = mlflow.MlflowClient(mlflow_server)          # read runs, list/download artifacts over HTTP
        # uploaded files land under mlflow_server_dir / "artifacts" / <experiment id> / <run id> / "artifacts"

Importing the fixtures into several modules (or into conftest.py and a module, under either module name)
still starts one server: it is shared and reference-counted, and stopped when its last user finishes.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_OPS_SCRIPT = Path(__file__).resolve().parents[1] / "ops" / "mlflow_server.py"


def server_module():
    """ops/mlflow_server.py, loaded under a private name (ops/ is a folder of scripts, not a package)."""
    name = "_asc_ops_mlflow_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _OPS_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _shared() -> dict:
    """The one server's state, kept on the loaded ops module so that this file imported under two names
    (`mlflow_server` and `tests.mlflow_server`) still shares one server."""
    return server_module().__dict__.setdefault("_pytest_server", {"users": 0, "url": None, "root": None, "proc": None})


def mlflow_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Generator behind the `mlflow_server` fixture: yields the tracking URL of the shared server."""
    ops = server_module()
    state = _shared()
    if state["users"] == 0:
        root = tmp_path_factory.mktemp("mlflow_server")
        url, proc = ops.start(root)
        state.update(url=url, root=root, proc=proc)
    state["users"] += 1
    try:
        yield state["url"]
    finally:
        state["users"] -= 1
        if state["users"] == 0:
            proc = state["proc"]
            state.update(url=None, root=None, proc=None)
            ops.stop(proc)
            # the whole process group (server and its uvicorn worker) must be gone
            assert not ops.group_alive(proc.pid), f"mlflow server process group {proc.pid} survived stop()"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """Tracking URL (http://127.0.0.1:PORT) of a real MLflow server shared by the test session."""
    yield from mlflow_server_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def mlflow_server_dir(mlflow_server) -> Path:
    """The server's folder: `mlflow.db`, `artifacts/` (what clients uploaded) and `server.log`."""
    return _shared()["root"]
