"""Shared fixtures: real audio from ../shared/data, one session-wide Ray instance, small thread counts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from asc_dist.run.logits import write_targets  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SCENES = SHARED_DATA / "real-scenes"
MICIRP = SHARED_DATA / "micirp"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real audio {path} is absent (it lives in ../shared/data beside the checkout)")
    return path


def make_real_tau(out: Path, clips_per_scene: int = 4, devices: tuple[str, ...] = ("a", "b")) -> Path:
    """A TAU-layout dataset cut from the real TUT 2018 recordings: 48 kHz, stereo, 24-bit, 1-s clips.

    Device 'b' is the same segment at a different gain, so segments are shared across devices as in TAU.
    The first half of each scene's clips comes from location 1 (train), the rest from location 2 (evaluate).
    """
    src = need(REAL_SCENES / "tut2018")
    (out / "audio").mkdir(parents=True)
    (out / "evaluation_setup").mkdir()
    meta, train, evaluate = [], [], []
    for rec in sorted(src.glob("*.wav")):
        scene = rec.stem
        audio, sr = sf.read(rec, dtype="float64", always_2d=True)
        for k in range(clips_per_scene):
            loc = 1 if k < clips_per_scene // 2 else 2
            clip = audio[k * sr : (k + 1) * sr]
            for gain, device in zip((1.0, 0.5, 0.25), devices):
                name = f"audio/{scene}-helsinki-{loc}-{k}-0-{device}.wav"
                sf.write(out / name, clip * gain, sr, subtype="PCM_24")
                meta.append(f"{name}\t{scene}\thelsinki-{loc}\t{device}")
                (train if loc == 1 else evaluate).append(f"{name}\t{scene}")
    (out / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n" + "\n".join(meta) + "\n")
    setup = out / "evaluation_setup"
    (setup / "fold1_train.csv").write_text("filename\tscene_label\n" + "\n".join(train) + "\n")
    (setup / "fold1_evaluate.csv").write_text("filename\tscene_label\n" + "\n".join(evaluate) + "\n")
    (setup / "fold1_test.csv").write_text("filename\n" + "\n".join(r.split("\t")[0] for r in evaluate) + "\n")
    return out


@pytest.fixture
def real_tau(tmp_path) -> Path:
    return make_real_tau(tmp_path / "tau")


@pytest.fixture(scope="session")
def ray_session():
    """One real Ray instance on loopback for the whole test session (ray.init takes seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small embedded synthetic dataset (real wav files in the TAU layout), shared by the session."""
    from asc_dist.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(clips_per_device=24, seed=7, parts_per_segment=2))  # 2-s recordings keep the suite fast
    return root


@pytest.fixture(scope="session")
def synth_store(synth_root):
    from asc_dist.data.store import WaveformStore, pack

    return WaveformStore(pack(synth_root)[0])


@pytest.fixture(scope="session")
def int8_student(tmp_path_factory, synth_root, synth_store):
    """A student trained briefly with KD and QAT, exported to int8 TorchScript: (model_int8.pt, store, result)."""
    from asc_dist.data.prepare import DataConfig
    from asc_dist.distill.config import StudentConfig
    from asc_dist.distill.student import train_student

    run = tmp_path_factory.mktemp("shipped") / "run"
    make_targets(run, synth_store)
    cfg = StudentConfig(run_dir=str(run), data=DataConfig(root=str(synth_root)), model="dsflexinet", preset="sm1",
                        epochs=1, qat_epochs=1, batch_size=32, device="cpu")
    result = train_student(cfg)
    return Path(result["int8_torchscript"]), synth_store, result


@pytest.fixture(scope="session")
def device_student(int8_student):
    """`int8_student` plus its device copies (one epoch and one QAT epoch each): (student folder, store, result)."""
    from asc_dist.distill.devices import finetune_existing

    model_file, store, _ = int8_student
    result = finetune_existing(model_file.parent, device_epochs=1, device_lr=5e-4, qat_epochs=1, store=store)
    return model_file.parent, store, result


def make_targets(run_dir: Path, store, drop: int = 0) -> None:
    """Targets in the fusion's Parquet schema: a confident-but-noisy teacher (labels one-hot x 4 + noise)."""
    table = store.table()
    rng = np.random.default_rng(0)
    logits = 4.0 * np.eye(len(store.classes), dtype=np.float32)[table.label] + rng.normal(0, 1, (len(table), len(store.classes))).astype(np.float32)
    keep = np.arange(len(table))[drop:]
    write_targets(run_dir, table.filename[keep], table.split[keep], table.device[keep], table.label[keep],
                  logits[keep], logits[keep] * 0.5, store.classes, ["synthetic-teacher"], store.fingerprint)


def step_env() -> dict:
    """The environment a step's subprocess gets in tests: one thread, a Ray of its own."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}


def start_until(cmd: list[str], log: Path, text: str, timeout_s: float = 240) -> subprocess.Popen:
    """Start a step in its own process group (as a terminal would), stderr to `log`, and return once `text` shows
    there: the step is then mid-work, ready for a signal or a lost service."""
    import signal

    def as_from_a_terminal() -> None:  # a suite started in the background (`cmd &`) inherits SIGINT ignored: undo it
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=step_env(), start_new_session=True,
                                preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} did not show within {timeout_s} s:\n" + log.read_text()[-3000:]
        time.sleep(0.2)
    return proc


from tests.mlflow_server import mlflow_server, mlflow_server_dir  # noqa: E402,F401  (session fixtures: a real server)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Until `url` answers; fails with the server's log if it exits or the time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
