"""`python -m asc_dist.students`: train a student with KD from the teachers' fused targets, then int8 QAT.

Example: python -m asc_dist.students --model dsflexinet --preset sm2 --run runs/demo --targets fused \
             --kd-lambda 0.02 --temperature 2 --norm rn --fms 0.4,0.3 --epochs 30 --qat-epochs 6
"""

from __future__ import annotations

import argparse
import json

from asc_dist.cli import quiet_third_party, run_main, setup_logging
from asc_dist.distill import TARGET_KINDS, StudentConfig, train_student
from asc_dist.errors import ConfigError
from asc_dist.prepare import DataConfig
from asc_dist.run_lock import run_lock
from asc_dist.train import AMP_MODES


def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
        return a, b
    except ValueError:
        raise ConfigError(f"{flag} takes two numbers separated by a comma, got {text!r}") from None


def _adir(text: str | None, dir_p: float) -> tuple[float | str | None, float]:
    """--adir TAU,P | auto,P | off -> (tau, p); by default Auto-DIR (auto, 0.6) unless plain DIR is asked for."""
    if text is None:
        return (None, 0.0) if dir_p > 0 else ("auto", 0.6)
    if text == "off":
        return None, 0.0
    tau, _, p = text.partition(",")
    if tau == "auto":
        return "auto", _pair(f"0,{p or 0.6}", "--adir")[1]
    return _pair(text, "--adir")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.students", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dsflexinet", help="dsflexinet | serfr | sp4sc")
    p.add_argument("--preset", default="sm2", help="dsflexinet: sm1-sm4; serfr: w24, w32; sp4sc: default")
    p.add_argument("--run", required=True, help="run folder holding fused/targets.parquet (and the synthetic data)")
    p.add_argument("--data", default=None, help="TAU-layout dataset (default: the synthetic one in RUN/data)")
    p.add_argument("--store", default=None, help="packed waveform store (default DATA/packed/sr32000)")
    p.add_argument("--targets", default="fused", choices=TARGET_KINDS)
    p.add_argument("--kd-lambda", type=float, default=0.02, help="weight of the label loss, in [0, 1] (CP-JKU: 0.02)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--kd-reduction", default="cpjku", choices=("cpjku", "batchmean"))
    p.add_argument("--norm", default="rn", help="rn (Residual Normalization) | bn")
    p.add_argument("--fms", default="0.4,0.3", help="Freq-MixStyle P,ALPHA (0,0.3 = off)")
    p.add_argument("--adir", default=None, help="Auto-DIR TAU,P (default auto,0.6: tau = mean energy of the device-a training "
                   "clips; raw TAU22: 323,0.6); 'off' turns it off")
    p.add_argument("--dir", type=float, default=0.0, dest="dir_p", help="plain DIR probability on device-a clips (replaces Auto-DIR)")
    p.add_argument("--dirs", default=None, help="folder of device impulse responses (*.wav); default: generated responses")
    p.add_argument("--roll", type=float, default=0.125, help="max circular time shift, seconds")
    p.add_argument("--freqm", type=int, default=48)
    p.add_argument("--timem", type=int, default=0)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha (0 = off)")
    p.add_argument("--stretch", type=float, default=0.0, help="time-stretch probability")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qat-epochs", type=int, default=0, help="int8 QAT fine-tuning epochs (0 = no int8 model)")
    p.add_argument("--qat-lr", type=float, default=5e-5)
    p.add_argument("--name", default=None, help="run name (default: derived from the settings)")
    p.add_argument("--experiment", default="students")
    p.add_argument("--mlflow-uri", default=None)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--amp", default="bf16", choices=AMP_MODES, help="on a GPU: bf16 autocast of the model's forward, or off (fp32)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> StudentConfig:
    fms_p, fms_alpha = _pair(args.fms, "--fms")
    adir_tau, adir_p = _adir(args.adir, args.dir_p)
    return StudentConfig(
        run_dir=args.run, data=DataConfig(root=args.data, store=args.store, val_fraction=args.val_fraction, dirs=args.dirs),
        model=args.model, preset=args.preset, norm=args.norm, targets=args.targets, kd_lambda=args.kd_lambda,
        temperature=args.temperature, kd_reduction=args.kd_reduction, fms_p=fms_p, fms_alpha=fms_alpha if fms_alpha > 0 else 0.3,
        adir_tau=adir_tau, adir_p=adir_p, dir_p=args.dir_p, roll_s=args.roll, freqm=args.freqm, timem=args.timem,
        mixup_alpha=args.mixup, stretch_p=args.stretch, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, name=args.name, experiment=args.experiment,
        mlflow_uri=args.mlflow_uri, device=args.device, amp=args.amp,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    quiet_third_party()
    cfg = config_from_args(args)
    cfg.validate()  # before any data preparation or training
    with run_lock(cfg.run_dir):
        result = train_student(cfg)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    run_main(main)
