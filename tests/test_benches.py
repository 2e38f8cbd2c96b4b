"""Smoke tests of the benchmarks in ops/: each runs as a user would run it (a subprocess, smallest `--quick`
settings, on the session's synthetic dataset) and must print one JSON object with the documented keys.
Timings are never asserted, only that they are measured (positive numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 300) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "ops" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{script} did not print one JSON object on stdout:\n{proc.stdout[-2000:]}")


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)


def test_bench_data(synth_root):
    out = run_bench("bench_data.py", "--quick", "--data", str(synth_root))
    assert isinstance(out["clips"], int) and out["clips"] > out["train_clips"] > 0
    assert positive(out["pack_clips_per_s"], out["store_epoch_clips_per_s"], out["decode_epoch_clips_per_s"],
                    out["ratio_store_vs_decode"])
    assert len(out["store_epoch_s"]) == len(out["decode_epoch_s"]) == out["epochs"] == 1
    assert out["torch_threads"] == 1


def test_bench_teachers_throughput(synth_root):
    out = run_bench("bench_teachers.py", "--quick", "--skip-concurrency", "--context-profile", "--trial-overhead", "--data", str(synth_root))
    assert "concurrency" not in out
    fixed = out["trial_overhead"]  # the demo roster through the real command: each trial's time outside its epochs
    assert [t["teacher"] for t in fixed["trials"]] == ["cpr-10s", "cpr-1s"]
    for t in fixed["trials"]:
        assert 0 < t["train_s"] < t["wall_s"] and 0 < t["outside_share"] < 1 and t["epochs"] == 1
        parts = t["outside_parts_s"]  # every part of the overhead was timed, and together they are the overhead
        assert all(parts[k] > 0 for k in ("val_s", "report_s", "score_s", "finish_s")) and parts["setup_s"] >= 0
        assert abs(sum(parts.values()) - t["outside_training_s"]) <= 0.05
    assert positive(fixed["command_wall_s"], fixed["startup_to_first_trial_s"], *fixed["startup_parts_s"].values())
    assert fixed["startup_to_first_trial_s"] + max(t["wall_s"] for t in fixed["trials"]) <= fixed["command_wall_s"]
    for window in ("4s", "10s"):  # the context teacher's step, part by part, on windows of that many seconds
        step = out["context_teacher_profile"][window]["after"]
        assert step["seconds_of_audio_per_clip"] == float(window[:-1]) and step["channels_last"] is True
        assert positive(step["parts_ms_per_step"]["front_end"], step["parts_ms_per_step"]["forward"], step["audio_s_per_s"])
    assert {(r["family"], r["size"]) for r in out["throughput"]} == {("cpresnet", "tiny"), ("passt", "tiny")}
    for row in out["throughput"]:
        assert positive(row["params"], row["clips_per_s"], row["epoch_s"])
        assert 0 <= row["data_wait_share"] < 1
    assert out["throughput_torch_threads"] == 1


@pytest.mark.slow
def test_bench_teachers_concurrency(synth_root):
    """Starts its own Ray and runs `run_teachers` three times: about two minutes on two busy cores."""
    out = run_bench("bench_teachers.py", "--quick", "--models", "cnn:tiny", "--data", str(synth_root), timeout=600)
    c = out["concurrency"]
    assert positive(c["concurrent_wall_s"], c["sequential_wall_s"], c["speedup"], c["ray_start_s_excluded"])
    assert [t["teacher"] for t in c["concurrent_trials"]] == [t["teacher"] for t in c["sequential_trials"]] == ["bench-t1", "bench-t2"]
    assert len(c["sequential_call_wall_s"]) == 2 and c["torch_threads_per_trial"] == 1
    assert isinstance(c["overhead_per_call_s"]["concurrent"], float)


def test_bench_students(synth_root):
    out = run_bench("bench_students.py", "--quick", "--data", str(synth_root))
    assert out["torch_threads"] == 1 and positive(out["front_end_clips_per_s"])
    (row,) = out["presets"]
    assert row["preset"] == "sm1" and row["model"] == "dsflexinet"
    assert positive(row["clips_per_s"], row["fp32_latency_ms"], row["int8_latency_ms"], row["ratio_int8_vs_fp32"],
                    row["fp32_cpu_ms"], row["int8_cpu_ms"], row["int8_state_dict_bytes"])
    assert 0 <= row["data_wait_share"] < 1
    assert row["dcase_int8_param_bytes"] == row["params"] and isinstance(row["params"], int)
    assert out["quantized_engine"] in row["int8_by_engine"]
    profile = row["int8_profile"]
    assert profile["top_int8_modules"] and all(positive(m["int8_ms"]) for m in profile["top_int8_modules"])
    assert profile["top_int8_ops"][0]["op"]
    shipped, rn, front = row["shipped_waveform_in"], row["residual_norm"], out["front_end_1_clip"]
    assert positive(shipped["fp32_ms"], shipped["int8_ms"], shipped["front_end_ms"], shipped["onnxruntime_fp32_ms"], shipped["onnxruntime_int8_ms"])
    assert positive(shipped["int8_batch_ms_per_clip"], shipped["int8_batch_one_pass_ms_per_clip"]) and shipped["batch_clips"] > 1
    assert positive(*(shipped[f"{part}_{kind}_ms"] for part in ("onnxruntime_model_alone", "torch_front_onnxruntime_model") for kind in ("fp32", "int8")))
    assert positive(rn["int8_rn_cpu_ms"], rn["float_island_rn_cpu_ms"], rn["bn_instead_cpu_ms"])
    assert front["banded_mel_macs"] * 10 < front["dense_mel_macs"] and front["max_abs_diff"] < 1e-4
    step = out["step_profile"]["after"]
    parts = step["parts_ms_per_step"]
    assert {"front_end", "forward", "backward_and_rest", "optimizer", "loss", "adir", "roll", "freq_mask"} <= set(parts)
    assert positive(parts["front_end"], parts["forward"], parts["backward_and_rest"], step["clips_per_s"], step["model_alone"]["clips_per_s"])
    assert step["channels_last"] is True and step["augmentations"][:2] == ["adir", "roll"]
    qat = out["step_profile"]["qat_after"]
    assert qat["qat"] is True and positive(qat["clips_per_s"], qat["parts_ms_per_step"]["forward"])


def test_bench_scale():
    out = run_bench("bench_scale.py", "--quick")
    dtypes = ("float32", "float16", "int16")
    assert out["sizes"] == [300, 600, 900] and out["tau22_clips"] == 230_350
    assert {(r["clips"], r["dtype"]) for r in out["rows"]} == {(n, d) for n in (300, 600, 900) for d in dtypes}
    for r in out["rows"]:
        assert positive(r["pack"]["clips_per_s"], r["pack"]["store_bytes"], r["read"]["store_waves_clips_per_s"],
                        r["read"]["memmap_gather_clips_per_s"], r["read"]["sequential_read_mb_per_s"])
        assert r["read"]["store_waves_equal_gather"]  # the store's decode = the plain gather's, bit for bit
        assert positive(r["train"]["clips_per_s"], r["train"]["peak_rss_mb"]) and 0 <= r["train"]["data_wait_share"] < 1
        assert r["train"]["steps"] == 3 and r["train"]["side_by_side_with"] == list(dtypes) and r["train"]["torch_threads"] == 1
    f32, f16, i16 = (next(r for r in out["rows"] if r["clips"] == 900 and r["dtype"] == d) for d in dtypes)
    for half in (f16, i16):
        assert abs(half["pack"]["store_bytes"] / f32["pack"]["store_bytes"] - 0.5) < 0.02  # half the bytes
    assert "1/32768" in i16["read"]["memmap_gather_does"]  # its physical limit includes the same decode
    assert positive(f32["score"]["clips_per_s"]) and f32["score"]["clips"] == 900
    tau = out["extrapolated_to_tau22"]
    assert tau["float32"]["store_gb"] == pytest.approx(2 * tau["float16"]["store_gb"]) == pytest.approx(2 * tau["int16"]["store_gb"])
    assert positive(tau["float32"]["score_all_clips_hours"]) and tau["int16"]["train_vs_float32_by_size"]


def test_bench_gpu_refuses_without_cuda_in_one_line():
    """The default device is CUDA: without one, exit 2 and one line naming the fix, before any work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for args, words in (((), ("CUDA is not available", "--device cpu")), (("--device", "cpu", "--parts", "passt,gpus"), ("--parts gpus",))):
        proc = subprocess.run([sys.executable, str(REPO / "ops" / "bench_gpu.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), proc.stderr


def test_bench_gpu_cpu_smoke(synth_root, tmp_path):
    """PaSST (10-s windows) and the student, bf16 then fp32, through Trainer.step; on a CPU autocast is off."""
    import shutil

    out = run_bench("bench_gpu.py", "--device", "cpu", "--quick", "--parts", "passt,student", "--data", str(synth_root),
                    "--out", str(tmp_path / "gpu.json"))
    assert json.loads((tmp_path / "gpu.json").read_text()) == out
    assert out["parts"] == ["passt", "student"] and "teachers" not in out
    assert out["environment"]["device"] == "cpu" and out["environment"]["torch"]
    passt, student = out["passt"], out["student"]
    assert passt["model"] == "passt:tiny" and passt["clip_s"] == 10.0 and passt["log_mel_shape"] == [1, 128, 1000]
    assert student["model"] == "dsflexinet:sm2"
    for part in (passt, student):
        assert part["autocast_active"] is False and positive(part["speedup_bf16_vs_fp32"], part["part_s"])
        assert (part["bf16"]["amp"], part["fp32"]["amp"]) == ("bf16", "off")
        for run in (part["bf16"], part["fp32"]):
            assert run["steps"] >= 2 and positive(run["clips_per_s"], run["step_ms"], run["seconds"])
            if shutil.which("nvidia-smi") is None:
                assert "not found" in run["gpu_utilisation"]["note"]
    if shutil.which("nvidia-smi") is None:
        assert "nvidia-smi" in out["note"]
