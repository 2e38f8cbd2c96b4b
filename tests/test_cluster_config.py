"""cluster.yaml passes Ray's own config preparation and schema validation, offline; typos are caught.

`ray up` has no dry run, so this is the check that runs without a cloud account: the same
`prepare_config` (merge with the AWS defaults) and `validate_config` (ray-schema.json) that `ray up` runs first.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt (cloud API, metadata server) fails the test instead of hanging or succeeding."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster config check tried to open a network connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(cfg))
    validate_config(out)
    return out


def test_cluster_yaml_passes_ray_preparation_and_validation():
    cfg = prepared(load())
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    assert cfg["auth"]["ssh_user"] == "ubuntu"
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert "GPU" not in head["resources"] and head["resources"]["CPU"] > 0
    gpu = [n for name, n in nodes.items() if name != cfg["head_node_type"]]
    assert gpu and all(n["resources"].get("GPU", 0) >= 1 and n["min_workers"] == 0 for n in gpu)
    assert sum(n["max_workers"] for n in gpu) <= cfg["max_workers"]
    for node in nodes.values():  # an explicit image: Ray's fallback AMI is Ubuntu 18.04 with Python 3.7
        assert node["node_config"]["ImageId"] and node["node_config"]["InstanceType"]


def test_cluster_yaml_installs_this_checkout_and_starts_ray():
    cfg = prepared(load())
    mounts = dict(cfg["file_mounts"])
    # Ray's token: the same file on every node, from the user's own ~/.ray (token auth is on in the start commands)
    assert mounts.pop("~/.ray/auth_token") == "~/.ray/auth_token"
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c)
    for remote, local in mounts.items():
        assert remote.startswith("~/asc-dist/")
        assert (REPO / local).exists(), f"file_mounts source {local} is not in the checkout"
    assert {"./asc_dist", "./pyproject.toml"} <= set(cfg["file_mounts"].values())
    assert any("pip install" in c and "-e ~/asc-dist" in c for c in cfg["setup_commands"])
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head --port=6379" in head_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "ops/mlflow_server.sh" in head_start and (REPO / "ops" / "mlflow_server.sh").is_file()
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    # workers mount the head's shared folder, which holds /data and /runs on every node
    assert any("mount -t nfs4" in c and "$RAY_HEAD_IP" in c for c in cfg["worker_setup_commands"])
    assert any("/shared/data /data" in c for c in cfg["head_setup_commands"] + cfg["worker_setup_commands"])


def test_misspelled_top_level_key_fails_validation():
    cfg = load()
    cfg["max_wrkers"] = cfg.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match=r"'max_wrkers' was unexpected"):
        prepared(cfg)


def test_misspelled_node_type_key_fails_validation():
    cfg = load()
    worker = cfg["available_node_types"]["gpu_worker"]
    worker["max_wrkers"] = worker.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match=r"'max_wrkers' was unexpected") as err:
        prepared(cfg)
    assert list(err.value.absolute_path) == ["available_node_types", "gpu_worker"]


def test_misspelled_required_node_type_key_names_the_missing_key():
    cfg = load()
    worker = cfg["available_node_types"]["gpu_worker"]
    worker["resorces"] = worker.pop("resources")
    with pytest.raises(jsonschema.ValidationError, match=r"'resources' is a required property"):
        prepared(cfg)


def test_unknown_head_node_type_fails_validation():
    cfg = load()
    cfg["head_node_type"] = "hed"
    with pytest.raises(ValueError, match="head_node_type"):
        prepared(cfg)


def test_nothing_listens_on_every_address_and_nfs_is_the_clusters_own():
    import ipaddress
    import subprocess

    cfg = load()
    commands = [c for key in ("head_setup_commands", "head_start_ray_commands", "worker_setup_commands", "worker_start_ray_commands",
                              "setup_commands") for c in cfg[key]]
    assert not any("0.0.0.0" in c for c in commands)  # dashboard, job API, MLflow: never on every interface
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert 'MLFLOW_HOST="$(hostname -I' in head_start  # the head's private address: trials on workers log there
    assert not any(net in " ".join(commands) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    assert any("ops/nfs_export.sh" in c for c in cfg["head_setup_commands"])
    line = subprocess.run(["bash", str(REPO / "ops" / "nfs_export.sh"), "--print"], capture_output=True, text=True, check=True).stdout
    path, spec = line.split()
    net = ipaddress.ip_network(spec.split("(")[0])
    assert path == "/shared" and spec.endswith("(rw,sync,no_subtree_check)")
    assert 0 < net.prefixlen and net.num_addresses <= 2**16  # one network (here: this host's), not all of 10/8
