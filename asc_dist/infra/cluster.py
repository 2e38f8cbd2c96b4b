"""Connecting to Ray: a local instance on this machine, or the cluster at `--address` (fail fast if unreachable)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

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
        from asc_dist.infra.interrupt import interrupt_on_sigterm

        interrupt_on_sigterm()  # ray.init's own SIGTERM handler exits without unwinding our context managers
    resources = ray.cluster_resources()
    log.info("Ray: %d node(s), %s CPU, %s GPU", len([n for n in ray.nodes() if n["Alive"]]), resources.get("CPU", 0), resources.get("GPU", 0))
    return resources


def _can_see(paths: dict[str, tuple[str, bool]]) -> tuple[str, list[str]]:
    """On one node: which of `paths` (what -> (path, must be writable)) it cannot use."""
    import ray

    problems = []
    for what, (path, writable) in paths.items():
        if not os.path.exists(path):
            problems.append(f"{what} {path} does not exist there")
        elif not os.access(path, os.R_OK | (os.W_OK if writable else 0)):
            problems.append(f"{what} {path} is not {'writable' if writable else 'readable'} there")
    return ray.util.get_node_ip_address(), problems


def check_shared(paths: dict[str, tuple[str, bool]]) -> None:
    """Every alive node must see the folders trials use at the same paths (a shared filesystem): ask each node with a
    zero-CPU task pinned to it, and stop with one clear error instead of a trial's stack trace on a worker."""
    import ray
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0)(_can_see)
    try:
        answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
                           for n in nodes], timeout=120)
    except (RayError, TimeoutError) as exc:
        raise ClusterError(f"could not ask every node of the cluster whether it sees this run's files: {str(exc).splitlines()[0][:300]} "
                           "(is asc-dist installed on every node, and are all nodes alive? `ray status` on the head)") from None
    blind = [(ip, problems) for ip, problems in answers if problems]
    if blind:
        detail = "; ".join(f"node {ip}: {', '.join(problems)}" for ip, problems in blind)
        raise ClusterError(f"not every node of the cluster sees this run's files ({detail}). Put the dataset, its store and "
                           "the run folder on a filesystem every node mounts at the same path (cluster.yaml: /shared over NFS, "
                           "/data and /runs point into it), see ops/README.md")


@contextlib.contextmanager
def stop_trials_on_interrupt(uri: str, experiment: str, run_dir: str | os.PathLike) -> Iterator[None]:
    """Around a step's trials: on an interrupt, end this process's Ray work (a local instance shuts down, a cluster's
    trials end with the driver), mark KILLED the MLflow runs of this run folder the trials left RUNNING, re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        import ray

        from asc_dist.infra import tracking

        if ray.is_initialized():
            ray.shutdown()
        try:
            tracking.close_abandoned(uri, experiment, run_dir)
        except Exception as exc:  # the interrupt is what the user must hear of; a tracking hiccup here is secondary
            log.warning("could not mark the interrupted MLflow runs KILLED (%s); the next run in %s does it", exc, run_dir)
        raise
