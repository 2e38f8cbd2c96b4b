"""Connecting to Ray: a local instance on this machine, or the cluster at `--address` (fail fast if unreachable)."""

from __future__ import annotations

import logging
import os
import socket

from asc_dist.errors import ClusterError

log = logging.getLogger(__name__)

# Environment our workers need wherever they run (a remote cluster does not inherit the driver's).
_FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TORCH_HOME")


def _probe(address: str, timeout_s: float = 3.0) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # ray:// or other forms: let ray.init judge
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head` or "
            "`ray up cluster.yaml`, or drop --address to run on this machine"
        ) from None


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """Initialise Ray once per process; returns the cluster's total resources."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env})
        if address:
            if address != "auto":
                _probe(address.removeprefix("ray://") if address.startswith("ray://") else address)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    resources = ray.cluster_resources()
    log.info("Ray: %d node(s), %s CPU, %s GPU", len([n for n in ray.nodes() if n["Alive"]]), resources.get("CPU", 0), resources.get("GPU", 0))
    return resources
