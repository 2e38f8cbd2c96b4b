"""Progress lines on the driver for work that runs in Ray trials (whose own logs stay on the workers)."""

from __future__ import annotations

import logging
import time

from ray import tune

log = logging.getLogger("asc_dist.infra.progress")


class EpochProgress(tune.Callback):
    """One line per trial per epoch: loss, accuracy, clips/s and ETA, from what the trial reports."""

    def __init__(self, name_key: str = "teacher"):
        self.name_key = name_key
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or result.get("finished"):
            return
        name = result.get(self.name_key, trial.trial_id)
        epoch, epochs = int(result["epoch"]), int(result.get("epochs", result["epoch"]))
        eta = result.get("epoch_s", 0.0) * (epochs - epoch)
        val = f" val_acc {result['val_acc']:.3f}" if "val_acc" in result else ""
        if not val and result.get("val_every", 1) > 1:
            val = f" (validating every {int(result['val_every'])} epochs)"
        node = f" | on {result['node_ip']}" if result.get("node_ip") else ""
        log.info(
            "[%s] epoch %d/%d loss %.3f acc %.3f%s | %.0f clips/s | ETA %.0f s%s",
            name, epoch, epochs, result.get("train_loss", float("nan")), result.get("train_acc", float("nan")), val,
            result.get("clips_per_s", 0.0), eta, node,
        )


class NodeWatch(tune.Callback):
    """Names what a cluster user needs to know when a machine dies: which node was lost, which trials ran on it,
    and where and from which epoch each restarted trial continues (from its epoch checkpoint, FailureConfig)."""

    def __init__(self, name_key: str = "teacher", every_s: float = 2.0):
        self.name_key, self.every_s = name_key, every_s
        self.node_of: dict[str, str] = {}  # trial id -> node IP of its last report
        self.epoch_of: dict[str, int] = {}  # trial id -> last epoch reported
        self.name_of: dict[str, str] = {}
        self.failed_after: dict[str, int] = {}  # trial id -> last epoch reported before it failed
        self.ran_on: dict[str, set[str]] = {}  # node IP -> names of the trials that reported from it
        self.dead: set[str] = set()
        self.last_check = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        self.name_of[tid] = str(result.get(self.name_key, tid))
        if result.get("node_ip"):
            self.node_of[tid] = result["node_ip"]
            self.ran_on.setdefault(result["node_ip"], set()).add(self.name_of[tid])
        if "epoch" not in result or result.get("finished"):
            return
        epoch = int(result["epoch"])
        if tid in self.failed_after:
            before = self.failed_after.pop(tid)
            log.warning("[%s] restarted on %s from its checkpoint: continues at epoch %d (had reported epoch %d before the "
                        "failure; %d whole epoch(s) redone, plus the part of the epoch it was in)",
                        self.name_of[tid], result.get("node_ip", "?"), epoch, before, max(0, before - epoch + 1))
        self.epoch_of[tid] = epoch

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial that FailureConfig restarts (on_trial_error is only for its last failure)."""
        self.on_trial_error(iteration, trials, trial, **info)

    def on_trial_error(self, iteration, trials, trial, **info):
        tid = trial.trial_id
        self._check_nodes(trials, force=True)
        node = self.node_of.get(tid, "?")
        if node != "?" and node not in self.dead and not _answers(node):
            self.dead.add(node)
            log.warning("node %s lost (its raylet does not answer); trials that ran there: %s", node, ", ".join(sorted(self.ran_on.get(node, ()))))
        lost = " (its node was lost)" if node in self.dead else ""
        self.failed_after[tid] = self.epoch_of.get(tid, 0)
        log.warning("[%s] trial failed on %s%s after epoch %d; Tune restarts it from its last checkpoint if retries remain",
                    self.name_of.get(tid, tid), node, lost, self.epoch_of.get(tid, 0))

    def on_step(self, iteration, trials, **info):
        self._check_nodes(trials)

    def _check_nodes(self, trials, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_check < self.every_s:
            return
        self.last_check = time.monotonic()
        import ray

        nodes = ray.nodes()
        alive = {n.get("NodeManagerAddress") for n in nodes if n.get("Alive")}
        self.dead -= alive  # a replacement machine on a lost node's address is alive again
        for ip in {n.get("NodeManagerAddress") for n in nodes if not n.get("Alive")} - alive:
            if ip in self.dead:
                continue
            self.dead.add(ip)
            if ip in self.ran_on:  # else a node that died before this run (Ray remembers dead nodes)
                log.warning("node %s lost (Ray marks it dead); trials that ran there: %s", ip, ", ".join(sorted(self.ran_on[ip])))


def _answers(ip: str, timeout_s: float = 2.0) -> bool:
    """Does the raylet of the node at `ip` accept connections (a dead machine's does not)?"""
    import socket

    import ray

    ports = [n["NodeManagerPort"] for n in ray.nodes() if n.get("NodeManagerAddress") == ip and n.get("Alive")]
    if not ports:
        return False
    try:
        with socket.create_connection((ip, ports[0]), timeout=timeout_s):
            return True
    except OSError:
        return False
