"""Every path inside a run folder, in one place: no other module spells a file name of RUN/.

    RUN/
      .lock                              one writer at a time (asc_dist/run/lock.py)
      data/                              the embedded synthetic dataset when no --data is given
      mlflow.db, mlartifacts/            MLflow's default store (asc_dist/infra/tracking.py)
      mlflow-offline/                    tracking calls a lost MLflow server did not take (asc_dist/infra/offline.py)
      teachers.json                      what each teacher scored and where its logits are
      logits/teacher=NAME/part-0.parquet one Parquet file per teacher (docs/CONTRACTS.md)
      teachers/NAME/model.pt             a trained teacher's weights (an online teacher: --targets online:NAME)
      fused/targets.parquet              fused and averaged targets per clip
      fused/fusion.json                  the fusion's weights, biases and its report
      students/NAME/                     model.pt, model_int8.pt, result.json of one student
      sweep/                             results.json, results.md, accuracy_vs_macs.png, parent.json
      checkpoints/{teachers,sweep}/      the last epoch of every trial, for resuming
      ray_results/                       Ray Tune's own experiment folders
      pipeline.json                      the pipeline's per-step fingerprints
      report.md, accuracy_vs_macs.png    the pipeline's report
      study/, study.{md,json}, study_T.png  the study's per-job results and its tables
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIT_SPLIT = "val"  # the split the fusion is fitted on: its targets are in-sample, no student trains on them

# Inside a student folder (RUN/students/NAME/); a shipped student is one of these files.
STUDENT_CHECKPOINT = "model.pt"
STUDENT_INT8 = "model_int8.pt"
STUDENT_INT8_OPEN = "model_int8_open.pt"  # the same int8 net, log-mel in, with visible int8 weights (asc_dist/ship/open_int8.py)
DEVICES_DIR = "devices"  # RUN/students/NAME/devices/DEV/: the device copies of student NAME (asc_dist/distill/devices.py)
STUDENT_RESULT = "result.json"
STUDENT_ONNX = "model.onnx"  # python -m asc_dist.export --onnx (its int8 sibling: model_int8.onnx)


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunLayout:
        return cls(Path(run_dir))

    # the run as a whole
    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        """Beside the sqlite database, wherever that is (a run's own or one named by --mlflow-uri)."""
        return self.root / "mlartifacts"

    @property
    def mlflow_offline(self) -> Path:
        return self.root / "mlflow-offline"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    def checkpoints(self, kind: str) -> Path:
        return self.root / "checkpoints" / kind

    # teachers and fusion
    @property
    def teachers_manifest(self) -> Path:
        return self.root / "teachers.json"

    @property
    def logits_dir(self) -> Path:
        return self.root / "logits"

    def teacher_logits(self, name: str) -> Path:
        return self.logits_dir / f"teacher={name}" / "part-0.parquet"

    def teacher_model(self, name: str) -> Path:
        return self.root / "teachers" / name / "model.pt"

    def failed_once_marker(self, teacher: str) -> Path:
        return self.root / f".failed-once-{teacher}"

    @property
    def folds_dir(self) -> Path:
        """Out-of-fold teachers (teachers --folds K): one run-like folder of per-fold logits and checkpoints."""
        return self.root / "folds"

    @property
    def fused_dir(self) -> Path:
        return self.root / "fused"

    @property
    def targets(self) -> Path:
        return self.fused_dir / "targets.parquet"

    @property
    def fusion_report(self) -> Path:
        return self.fused_dir / "fusion.json"

    # students and the sweep
    def student(self, name: str) -> Path:
        return self.root / "students" / name

    @property
    def sweep_dir(self) -> Path:
        return self.root / "sweep"

    @property
    def sweep_results(self) -> Path:
        return self.sweep_dir / "results.json"

    @property
    def sweep_parent(self) -> Path:
        """The sweep's MLflow parent run, reopened when a killed sweep is resumed."""
        return self.sweep_dir / "parent.json"

    @property
    def sweep_table(self) -> Path:
        return self.sweep_dir / "results.md"

    @property
    def sweep_plot(self) -> Path:
        return self.sweep_dir / "accuracy_vs_macs.png"

    # the pipeline and the study
    @property
    def pipeline_state(self) -> Path:
        return self.root / "pipeline.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_plot(self) -> Path:
        return self.root / "accuracy_vs_macs.png"

    @property
    def study_dir(self) -> Path:
        return self.root / "study"

    @property
    def study_state(self) -> Path:
        """The study's MLflow parent run per table, reopened when a killed study is resumed."""
        return self.study_dir / "state.json"

    @property
    def study_results(self) -> Path:
        return self.study_dir / "results"

    def study_job(self, job: str) -> Path:
        """One trained student of the study (what a rerun reuses)."""
        return self.study_results / f"{job}.json"

    def study_progress(self, job: str) -> Path:
        """The last epoch of a student the study is training (its progress line reads it)."""
        return self.study_dir / "progress" / f"{job}.json"

    @property
    def study_md(self) -> Path:
        return self.root / "study.md"

    @property
    def study_json(self) -> Path:
        return self.root / "study.json"

    def study_figure(self, table: str) -> Path:
        return self.root / f"study_{table}.png"


def device_folders(student_dir: str | Path) -> dict[str, Path]:
    """The device copies a student folder holds (device -> its folder), those with a model file."""
    root = Path(student_dir) / DEVICES_DIR
    return {p.name: p for p in sorted(root.iterdir()) if (p / STUDENT_CHECKPOINT).is_file() or (p / STUDENT_INT8).is_file()} if root.is_dir() else {}
