"""RUN/report.md: the pipeline's tables (data, teachers, fusion, sweep, int8) and pictures in one page."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from asc_dist.data.table import device_sort_key
from asc_dist.distill.sweep_report import format_results
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.layout import RunLayout


def _pct(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) else "-"


def _num(x, digits: int, sep: str = "") -> str:
    """A number for a table cell, '-' for a missing one (a trial stopped early has no test or int8 fields)."""
    return f"{x:{sep}.{digits}f}" if isinstance(x, (int, float)) else "-"


def _data_section(store) -> list[str]:
    table = store.table()
    devices = sorted(set(table.device.tolist()), key=device_sort_key)
    lines = ["## Data", "", f"Store `{store.path}` (fingerprint `{store.fingerprint}`), {len(table)} clips, {len(store.classes)} classes.", ""]
    lines += ["| split | " + " | ".join(devices) + " | total |", "|---|" + "---|" * (len(devices) + 1)]
    for split in ("train", "val", "test"):
        counts = [int(((table.split == split) & (table.device == d)).sum()) for d in devices]
        lines.append(f"| {split} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    return lines


def _teachers_section(run_dir: Path) -> list[str]:
    """Every teacher with its context, where it started from, and train next to val and test accuracy, so an
    underfitting teacher (train accuracy near val) shows at a glance; then the margin over the students."""
    path = RunLayout.of(run_dir).teachers_manifest
    if not path.is_file():
        return []
    rows = list(json.loads(path.read_text())["teachers"].values())
    lines = ["## Teachers", "", "| teacher | family | context s | init | params | train acc | val acc | test acc | unseen acc | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['teacher']} | {r['family']} | {r.get('context_s') or 1} | {r.get('init') or '-'} | {r.get('params') or 0:,} | "
                     f"{_pct(r.get('train_acc'))} | {_pct(r.get('val_acc'))} | {_pct(r.get('test_acc'))} | {_pct(r.get('unseen_acc'))} | "
                     f"{_num(r.get('wall_s'), 0)} |")
    lines += ["", _margin_sentence(rows, run_dir)]
    return lines


def _margin_sentence(teachers: list[dict], run_dir: Path) -> str:
    """Distillation needs teachers well above their students: say by how much, and when it is not enough."""
    sweep = RunLayout.of(run_dir).sweep_results
    students = json.loads(sweep.read_text())["trials"] if sweep.is_file() else []
    scored = [r for r in teachers if isinstance(r.get("test_acc"), (int, float))]
    best_t = max(scored, key=lambda r: r.get("val_acc") or 0.0, default=None)  # every "best" is chosen on val
    best_s = max((r for r in students if isinstance(r.get("test_acc"), (int, float))), key=lambda r: r.get("val_acc") or 0.0, default=None)
    if best_t is None or best_s is None:
        return "Teacher-student margin: not available yet (no scored teacher or student)."
    margin = 100 * (best_t["test_acc"] - best_s["test_acc"])
    text = (f"Best teacher on val, {best_t['teacher']}, scores {_pct(best_t['test_acc'])} % on test; the best student on val, "
            f"{best_s.get('name', '?')}, {_pct(best_s['test_acc'])} %: a margin of {margin:.1f} points.")
    if margin < 10:
        text += (" That is under the 10 points distillation needs to help reliably: this profile's budget buys too little "
                 "teacher training (more teacher epochs, context teachers or pretrained weights widen it).")
    return text


def _fusion_section(run_dir: Path) -> list[str]:
    path = RunLayout.of(run_dir).fusion_report
    if not path.is_file():
        return []
    rep = json.loads(path.read_text())
    res = rep["results"]
    systems = [(n, r) for n, r in res["teachers"].items()] + [("**average**", res["average"]), ("**fusion**", res["fusion"])]
    best = max(res["teachers"].items(), key=lambda kv: (kv[1].get("val") or {}).get("acc") or 0)[0]
    lines = ["## Fusion (eq. 4: a weight per teacher, a bias per class, fitted on val)", "",
             f"Every val number is out-of-sample: the teachers and the average never fit on val, and the fusion's are "
             f"cross-fitted ({(rep.get('crossfit') or {}).get('folds', '?')} folds of whole recordings). Penalty "
             f"{rep.get('l2', '-')} ({rep.get('l2_choice', 'given')}). The weights sum to {rep.get('scale', float('nan')):.2f}: "
             "that sum is a temperature, weight / sum is each teacher's share.", "",
             "| system | weight | val loss | val acc | test loss | test acc | unseen acc |", "|---|---|---|---|---|---|---|"]
    for name, r in systems:
        val, test = r.get("val") or {}, r.get("test") or {}
        w = rep["weights"].get(name)
        mark = " (best single)" if name == best else ""
        loss = lambda d: f"{d['loss']:.3f}" if d.get("loss") is not None else "-"  # noqa: E731
        lines.append(f"| {name}{mark} | {f'{w:.3f}' if w is not None else '-'} | {loss(val)} | {_pct(val.get('acc'))} | {loss(test)} | {_pct(test.get('acc'))} | {_pct(test.get('unseen_acc'))} |")
    fusion_test = res["fusion"].get("test") or {}
    if fusion_test.get("per_device"):
        devs = list(fusion_test["per_device"])
        lines += ["", "Test accuracy per device:", "", "| system | " + " | ".join(devs) + " |", "|---|" + "---|" * len(devs)]
        for name, r in [(best, res["teachers"][best]), ("average", res["average"]), ("fusion", res["fusion"])]:
            pd = (r.get("test") or {}).get("per_device", {})
            lines.append(f"| {name} | " + " | ".join(_pct((pd.get(d) or {}).get("acc")) for d in devs) + " |")
    return lines


def _int8_section(rows: list[dict]) -> list[str]:
    best = [r for r in rows if r.get("best_of_preset")]
    if not best:
        return []
    lines = ["## Best student per preset, fp32 and int8 (QAT)", "",
             "| student | params | MMACs | param_kb | fp32 test | fp32 unseen | int8 test | int8 unseen | int8_file_kb | fp32 ms | int8 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in best:
        lines.append(
            f"| {r.get('name', '-')} | {_num(r.get('params'), 0, ',')} | {_num((r.get('macs') or 0) / 1e6 if r.get('macs') else None, 2)} | {_num(r.get('param_kb'), 1)} | "
            f"{_pct(r.get('test_acc'))} | {_pct(r.get('unseen_acc'))} | "
            f"{_pct(r.get('int8_test_acc'))} | {_pct(r.get('int8_unseen_acc'))} | {_num(r.get('int8_file_kb'), 1)} | "
            f"{_num(r.get('fp32_latency_ms'), 2)} | {_num(r.get('int8_latency_ms'), 2)} |"
        )
    lines += ["", "param_kb: the DCASE measure, parameters x 1 byte at int8 in kB of 1000 bytes (limit 128); int8_file_kb: "
              "model_int8.pt on disk, which also holds the weights' scales and the front end's STFT window and mel matrix "
              "(constants, not model parameters). MLflow and the registry's version tags use the same names.",
              "", "ms: the traced model alone (log-mel in), batch 1, one thread, timed inside the sweep while other trials "
              "ran, so noisy; a quiet side-by-side comparison is `OMP_NUM_THREADS=1 python ops/bench_students.py`."]
    registered = [r for r in best if r.get("registered_model")]
    if registered:
        top = max(registered, key=lambda r: r.get("int8_val_acc") or r.get("val_acc") or 0.0)
        lines += ["", "Registered in MLflow (pyfunc: float32 waveform windows in, class probabilities out): "
                  + ", ".join(f"`{r['registered_model']}`" for r in registered)
                  + f". Classify files with the best of them on val ({top.get('name', '?')}):", "",
                  f"    python -m asc_dist.predict --model-file {top['int8_torchscript']} AUDIO_FILES_OR_FOLDERS --out predictions.csv"]
    return lines


def write_report(run_dir: Path, store, profile: str, wall_s: float) -> Path:
    sweep = RunLayout.of(run_dir).sweep_results
    rows = json.loads(sweep.read_text())["trials"] if sweep.is_file() else []
    lines = [f"# asc-dist pipeline report ({profile} profile)", "", f"Written {time.strftime('%Y-%m-%d %H:%M')}; this invocation took {wall_s:.0f} s.", ""]
    lines += _data_section(store) + [""] + _teachers_section(run_dir) + [""] + _fusion_section(run_dir) + [""]
    if rows:
        lines += ["## Sweep (Ray Tune, ASHA on val accuracy)", "", format_results(rows), ""]
        plot = RunLayout.of(run_dir).sweep_plot
        if plot.is_file():
            shutil.copy(plot, RunLayout.of(run_dir).report_plot)
            lines += ["![accuracy vs MACs](accuracy_vs_macs.png)", ""]
    lines += _int8_section(rows)
    path = RunLayout.of(run_dir).report
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
