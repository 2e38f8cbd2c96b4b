"""Context teachers: recordings reassembled from the clip table, windows per clip, logits keyed by 1-s clip."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from asc_dist.data.prepare import DataConfig
from asc_dist.data.store import WaveformStore, pack
from asc_dist.data.synth import SynthConfig, generate
from asc_dist.run.logits import teacher_logits_path
from asc_dist.teach.driver import TeachersConfig, run_teachers
from asc_dist.training.context import ContextSplit, build_windows, context_parts, recording_of

# 10-part recordings, two train locations per scene (so validation gets whole locations), small.
CONTEXT_DATA = SynthConfig(clips_per_device=20, test_clips_per_device=10, devices_per_train_segment=1,
                           locations_per_scene=4, seed=3)  # fmt: skip


def test_recording_key_from_tau_names():
    assert recording_of("audio/airport-lisbon-1000-40000-3-a.wav") == ("airport-lisbon-1000-40000|a", 3)
    assert recording_of("audio/street_pedestrian-paris-1-2-10-s4.wav") == ("street_pedestrian-paris-1-2|s4", 10)
    assert recording_of("audio/oddly-named.wav") == ("oddly-named", None)


def _names(parts, device="a", seg=7):
    return np.array([f"audio/bus-lyon-1-{seg}-{p}-{device}.wav" for p in parts], dtype=object)


def test_windows_follow_part_order_whatever_the_table_order():
    order = np.random.default_rng(0).permutation(10)
    names = _names(order)
    idx = build_windows(names, 10)
    assert idx.windows.shape == (1, 10) and (idx.clip_window == 0).all()
    parts = [recording_of(names[p])[1] for p in idx.windows[0]]
    assert parts == list(range(10))  # time order, not table order


def test_windows_are_centred_and_stay_inside_the_recording():
    idx = build_windows(_names(range(10)), 3)
    parts = lambda clip: [int(p) for p in idx.windows[idx.clip_window[clip]]]  # noqa: E731
    assert parts(0) == [0, 1, 2] and parts(5) == [4, 5, 6] and parts(9) == [7, 8, 9]
    assert all(clip in parts(clip) for clip in range(10))


def test_missing_parts_give_a_shorter_tiled_context_and_are_counted():
    names = np.concatenate([_names([0, 1, 3]), _names(range(10), device="b")])
    idx = build_windows(names, 10)
    assert idx.stats["recordings"] == 2 and idx.stats["recordings_with_gaps"] == 1 and idx.stats["short_recordings"] == 1
    gap = idx.windows[idx.clip_window[0]]
    assert gap.tolist() == [0, 1, 2] * 3 + [0]  # the three parts present, in order, tiled to 10 s
    assert set(idx.clip_window[:3]) != set(idx.clip_window[3:])  # devices are separate recordings


@pytest.fixture(scope="module")
def context_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx") / "data"
    generate(root, CONTEXT_DATA)
    return root, WaveformStore(pack(root)[0])


def test_generator_writes_ten_part_recordings(context_data):
    _, store = context_data
    table = store.table()
    counts = {}
    for name in table.filename:
        key, part = recording_of(name)
        counts.setdefault(key, []).append(part)
    assert all(sorted(parts) == list(range(10)) for parts in counts.values())


def test_context_never_crosses_splits(context_data):
    _, store = context_data
    for split in ("train", "val", "test"):
        data = store.split(split)
        windows = ContextSplit(data, 10)
        assert len(data) > 0 and len(windows) == len(data) // 10  # one window per 10-s recording
        for w in windows.index.windows:
            keys = {recording_of(data.table.filename[p])[0] for p in w}
            assert len(keys) == 1  # one recording, hence one split
        waves = windows.waves(np.arange(2))
        assert waves.shape == (2, 10 * data.source.shape[1])
        np.testing.assert_array_equal(waves[0, : data.source.shape[1]], data.waves(windows.index.windows[0, :1])[0])


def test_context_teacher_logits_complete_and_keyed_by_clip(ray_session, context_data, tmp_path):
    root, store = context_data
    roster = tmp_path / "roster.yaml"
    roster.write_text("teachers:\n  - {name: cpr-10s, family: cpresnet, size: tiny, epochs: 1, batch_size: 8, context_s: 10}\n")
    run = tmp_path / "run"
    rows = run_teachers(TeachersConfig(run_dir=str(run), data=DataConfig(root=str(root)), roster=str(roster), cpus_per_teacher=1))
    assert rows[0]["context_s"] == 10 and rows[0]["init"] == "scratch" and 0 <= rows[0]["train_acc"] <= 1
    data = pq.read_table(teacher_logits_path(run, "cpr-10s")).to_pydict()
    table = store.table()
    assert sorted(data["filename"]) == sorted(table.filename.tolist()) and len(set(data["filename"])) == len(table)
    logits = np.array(data["logits"])
    assert np.isfinite(logits).all()
    by_recording = {}
    for name, row in zip(data["filename"], logits):
        by_recording.setdefault(recording_of(name)[0], []).append(row)
    # every clip of a 10-s recording is scored with the whole recording as context: one prediction per recording
    assert all(np.allclose(rows_, rows_[0], atol=1e-5) for rows_ in map(np.array, by_recording.values()))
    assert context_parts(10, store.manifest["samples"], store.sample_rate) == 10


def test_ddp_ranks_draw_their_own_augmentations_from_the_same_weights(synth_store):
    import torch

    from asc_dist.teach.roster import TeacherConfig
    from asc_dist.teach.trial import TeacherRunContext, teacher_trainer

    t = TeacherConfig(name="t", family="cnn", size="tiny", seed=5, epochs=1)
    ctx = TeacherRunContext(run_dir="", store=str(synth_store.path), val_fraction=0.15, val_seed=0,
                            fingerprint=synth_store.fingerprint, mlflow_uri="", experiment="", dirs=None)  # fmt: skip
    ranks = [teacher_trainer(t, ctx, synth_store, shard=(rank, 2)) for rank in (0, 1)]
    assert [r.cfg.seed for r in ranks] == [5, 6]  # seed + rank: different augmentation and batch draws
    for a, b in zip(ranks[0].model.state_dict().values(), ranks[1].model.state_dict().values()):
        assert torch.equal(a, b)  # identical initial weights
    assert set(ranks[0].train_data.table.filename).isdisjoint(ranks[1].train_data.table.filename)


def test_changing_the_validation_carve_retrains(tmp_path, synth_store):
    from asc_dist.run.logits import write_teacher_logits
    from asc_dist.teach.driver import is_done
    from asc_dist.teach.roster import TeacherConfig

    t = TeacherConfig(name="t", family="cnn")
    table = synth_store.table()
    write_teacher_logits(tmp_path, "t", table.filename, table.split, table.device, table.label,
                         np.zeros((len(table), len(synth_store.classes)), dtype=np.float32), synth_store.classes,
                         {"config_hash": t.config_hash(), "val_carve": [0.15, 0]}, synth_store.fingerprint)  # fmt: skip
    assert is_done(tmp_path, t, synth_store.fingerprint, (0.15, 0))
    assert not is_done(tmp_path, t, synth_store.fingerprint, (0.3, 0))
    assert not is_done(tmp_path, t, synth_store.fingerprint, (0.15, 1))
