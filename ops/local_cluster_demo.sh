#!/usr/bin/env bash
# The issue-15 demonstration on the namespace cluster: 4 teachers across 3 nodes with a worker killed mid-training,
# fusion, a student sweep on the head's MLflow server, a replacement worker taking new trials.
# Usage (root): bash ops/local_cluster_demo.sh [LOG_DIR]     about 4 minutes on 2 cores; logs in LOG_DIR (default /var/tmp)
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${1:-/var/tmp}"
LC=".venv/bin/python ops/local_cluster.py"
H=10.213.0.2
$LC down
$LC up > ${LOGS}/cd_up.json 2> ${LOGS}/cd_up.err
$LC exec head -- "python -m asc_dist.data synth --out /shared/data/tau --clips-per-device 120 > /dev/null 2>&1 && python -m asc_dist.data pack /shared/data/tau > /dev/null 2>&1"
$LC exec head -- python -m asc_dist.teachers --n 4 --size tiny --epochs 6 --address $H:6379 --data /shared/data/tau --run /shared/runs/demo --mlflow-uri http://$H:5000 > ${LOGS}/cd_teachers.log 2>&1 &
drv=$!
for i in $(seq 1 200); do sleep 0.5; if grep -q "epoch 2/.* on 10.213.0.3" ${LOGS}/cd_teachers.log; then echo "kill at $(date +%T)"; $LC kill w1; break; fi; done
wait $drv; echo "teachers rc=$?"
$LC exec head -- python -m asc_dist.fusion --run /shared/runs/demo --mlflow-uri http://$H:5000 > ${LOGS}/cd_fusion.log 2>&1; echo "fusion rc=$?"
$LC exec head -- python -m asc_dist.tune --run /shared/runs/demo --data /shared/data/tau --presets sm1 --kd-lambda 0.02,0.5 --epochs 3 --qat-epochs 1 --address $H:6379 --mlflow-uri http://$H:5000 > ${LOGS}/cd_tune.log 2>&1; echo "tune rc=$?"
$LC up > ${LOGS}/cd_up2.json 2>&1; grep alive_nodes ${LOGS}/cd_up2.json
$LC exec head -- python -m asc_dist.teachers --n 6 --size tiny --epochs 6 --cpus-per-teacher 2 --address $H:6379 --data /shared/data/tau --run /shared/runs/demo --mlflow-uri http://$H:5000 > ${LOGS}/cd_teachers2.log 2>&1; echo "teachers2 rc=$?"
python3 - <<'PY'
import json
d = json.load(open("/var/tmp/asc-dist-cluster/shared/runs/demo/teachers.json"))["teachers"]
print({k: (v["node_ip"], v["epochs_trained"]) for k, v in d.items()})
r = json.load(open("/var/tmp/asc-dist-cluster/shared/runs/demo/sweep/results.json"))["trials"]
print([(t["name"], t["node_ip"], t["val_acc"]) for t in r])
PY
$LC exec head -- python -c "import mlflow; c = mlflow.MlflowClient('http://$H:5000'); print({e.name: sorted(r.info.status for r in c.search_runs([e.experiment_id])) for e in c.search_experiments()})"
$LC down
