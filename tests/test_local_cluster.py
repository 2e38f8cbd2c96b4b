"""A real three-node Ray cluster on this machine (ops/local_cluster.py: network, mount and PID namespaces, cluster.yaml's
own start commands, token auth, the head's MLflow server): two teachers train across it, a worker host is killed
mid-training, the lost trial restarts on a surviving node from its checkpoint, and the logits hold every clip once.
Skipped with the reason where namespaces are not permitted (not root, no `ip netns`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ops"))
from local_cluster import SHARED, Cluster  # noqa: E402
from netns_host import namespaces_permitted  # noqa: E402

WHY_NOT = namespaces_permitted()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"local multi-node cluster: {WHY_NOT}")
DATA, STORE_CLIPS = f"{SHARED}/data/tau", 600


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(Path(f"/var/tmp/asc-dist-test-cluster-{os.getpid()}"), prefix=f"asct{os.getpid() % 10000}")
    c.down()  # whatever a crashed run with this prefix left
    try:
        c.up(workers=2)
        yield c
    finally:
        c.down()
        assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if c.ours(n)]


def on_head(c: Cluster, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return c.exec("head", command, capture=True, timeout=timeout)


def answer(result: subprocess.CompletedProcess) -> str:
    """The line a probe printed after its `=> ` marker (Ray's driver also prints autoscaler events to stdout)."""
    found = [line[3:] for line in result.stdout.splitlines() if line.startswith("=> ")]
    assert result.returncode == 0 and found, result.stdout + result.stderr
    return found[-1]


def test_cluster_trains_across_nodes_and_survives_a_lost_worker(cluster):
    c = cluster
    assert c.wait_nodes(3) == 3
    # token authentication is on: a client with another token is refused
    refused = on_head(c, f"RAY_AUTH_TOKEN=not-the-token python -c \"import ray; ray.init(address='{c.head_address}')\"")
    assert refused.returncode != 0 and "auth" in (refused.stderr + refused.stdout).lower()
    # the dashboard listens on the head's loopback only; MLflow answers from another host
    probe = c.exec("client", "python -c \"import socket,urllib.request; s=socket.socket(); s.settimeout(2); "
                   f"print(s.connect_ex(('{c.head.ip}', 8265)), urllib.request.urlopen('{c.mlflow_uri}/health').read().decode())\"",
                   capture=True)
    assert probe.returncode == 0 and probe.stdout.split()[0] != "0" and probe.stdout.split()[1] == "OK", probe.stdout + probe.stderr

    made = on_head(c, f"python -m asc_dist.data synth --out {DATA} --clips-per-device 6 && python -m asc_dist.data pack {DATA}")
    assert made.returncode == 0, made.stderr[-2000:]

    # a run folder only the head can see (its private /tmp): one clear error, before any training
    blind = on_head(c, f"python -m asc_dist.teachers --n 2 --size tiny --epochs 2 --address {c.head_address} --data {DATA} --run /tmp/r0")
    assert blind.returncode == 2, blind.stderr[-2000:]
    assert "Traceback" not in blind.stderr and "does not exist there" in blind.stderr and c.hosts["w1"].ip in blind.stderr

    run = f"{SHARED}/runs/r1"
    driver = c.popen("head", f"python -m asc_dist.teachers --n 2 --size tiny --epochs 6 --cpus-per-teacher 2 --max-failures 2 "
                     f"--address {c.head_address} --data {DATA} --run {run} --mlflow-uri {c.mlflow_uri}",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    workers = {h.ip: name for name, h in c.hosts.items() if name.startswith("w")}
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        for line in list(lines):
            m = re.search(r"\[(\S+)\] epoch 2/.* on (\S+)$", line.rstrip())
            if m and m.group(2) in workers:
                victim = (m.group(1), m.group(2))
        time.sleep(0.2)
    assert victim is not None, "no trial reached epoch 2 on a worker:\n" + "".join(lines)[-3000:]
    c.kill(workers[victim[1]])
    try:
        rc = driver.wait(timeout=240)
    except subprocess.TimeoutExpired:
        driver.kill()
        rc = "timed out"
    assert rc == 0, f"driver: {rc}\n" + "".join(lines)[-4000:]
    reader.join(timeout=10)
    log = "".join(lines)
    teacher, lost_ip = victim
    assert f"[{teacher}] trial failed on {lost_ip}" in log, log[-3000:]
    assert f"node {lost_ip} lost" in log, log[-3000:]
    restarted = re.search(rf"\[{re.escape(teacher)}\] restarted on (\S+) from its checkpoint: continues at epoch (\d+)", log)
    assert restarted and restarted.group(1) != lost_ip and int(restarted.group(2)) >= 3, log[-3000:]  # epochs 1-2 kept

    manifest = json.loads((c.state / "shared" / "runs" / "r1" / "teachers.json").read_text())["teachers"]
    assert manifest[teacher]["node_ip"] == restarted.group(1) and manifest[teacher]["epochs_trained"] == 6
    check = on_head(c, "python -c \"import pyarrow.parquet as pq, json; from asc_dist.run.logits import teacher_logits_path as p; "
                    f"print('=>', json.dumps([pq.read_table(p('{run}', t), columns=['filename']).column('filename').to_pylist() for t in {sorted(manifest)!r}]))\"")
    per_teacher = json.loads(answer(check))
    assert len(per_teacher) == 2 and all(len(f) == len(set(f)) == STORE_CLIPS for f in per_teacher)

    runs = on_head(c, f"python -c \"import mlflow; c = mlflow.MlflowClient('{c.mlflow_uri}'); "
                   "print('=>', sorted(r.info.status for r in c.search_runs([c.get_experiment_by_name('teachers').experiment_id])))\"")
    assert answer(runs) == "['FINISHED', 'FINISHED']"

    # a replacement worker on the lost host's address joins the cluster
    c.up(workers=2)
    alive = on_head(c, f"python -c \"import ray; ray.init(address='{c.head_address}'); "
                    "print('=>', sorted({n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))\"")
    assert f"'{lost_ip}'" in answer(alive)
