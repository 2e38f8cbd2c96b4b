"""`python -m asc_dist.students`: train a student with KD from the teachers' fused targets, then int8 QAT.

Example: python -m asc_dist.students --model dsflexinet --preset sm2 --run runs/demo --targets fused \
             --kd-lambda 0.3 --temperature 2 --norm rn --fms 0.4,0.3 --epochs 30 --qat-epochs 6
"""

from __future__ import annotations

import argparse
import json
import time

from asc_dist.cli import add_deprecated, add_shared, data_config, parse_list, quiet_third_party, setup_logging
from asc_dist.distill.config import TARGET_KINDS, StudentConfig
from asc_dist.distill.student import train_student
from asc_dist.errors import ConfigError
from asc_dist.infra import tracking
from asc_dist.infra.offline import say_untracked
from asc_dist.run.lock import run_lock
from asc_dist.run.writable import require_writable
from asc_dist.training.trainer import AMP_MODES


def _pair(text: str, flag: str) -> tuple[float, float]:
    values = parse_list(text, float, flag)
    if len(values) != 2:
        raise ConfigError(f"{flag} takes two numbers separated by a comma, got {text!r}")
    return values[0], values[1]


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


def build_parser() -> argparse.ArgumentParser:
    d = StudentConfig
    p = argparse.ArgumentParser(prog="python -m asc_dist.students", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help="student family: dsflexinet | serfr | sp4sc")
    p.add_argument("--preset", default=d.preset, help="dsflexinet: sm1-sm4; serfr: w24, w32; sp4sc: default")
    p.add_argument("--targets", default=d.targets, help=f"{' | '.join(TARGET_KINDS)} | teacher:NAME (one teacher's logits)")
    p.add_argument("--kd-lambda", type=float, default=d.kd_lambda, help=f"weight of the label loss, in [0, 1] (default {d.kd_lambda}; CP-JKU's is 0.02: docs/kd_diagnosis.md)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--kd-reduction", default=d.kd_reduction, choices=("cpjku", "batchmean"))
    p.add_argument("--norm", default=d.norm, help="rn (Residual Normalization) | bn")
    p.add_argument("--fms", default=f"{d.fms_p:g},{d.fms_alpha:g}", help="Freq-MixStyle P,ALPHA (0,0.3 = off)")
    p.add_argument("--adir", default=None, help="Auto-DIR TAU,P (default auto,0.6: tau = mean energy of the device-a training "
                   "clips), auto,P, or off")
    p.add_argument("--dir-p", type=float, default=d.dir_p, help="plain DIR probability on device-a clips (replaces Auto-DIR)")
    p.add_argument("--roll", type=float, default=d.roll_s, help="max circular time shift, seconds")
    p.add_argument("--freqm", type=int, default=d.freqm)
    p.add_argument("--timem", type=int, default=d.timem)
    p.add_argument("--mixup", type=float, default=d.mixup_alpha, help="mixup Beta alpha (0 = off)")
    p.add_argument("--stretch", type=float, default=d.stretch_p, help="time-stretch probability")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs, help="int8 QAT fine-tuning epochs (0 = no int8 model)")
    p.add_argument("--qat-lr", type=float, default=d.qat_lr)
    p.add_argument("--device-epochs", type=int, default=d.device_epochs,
                   help="after the general student, fine-tune one copy per training device for this many epochs (0 = off; "
                        "RUN/students/NAME/devices/DEV/, used by predict --device and the DCASE package)")
    p.add_argument("--device-lr", type=float, default=d.device_lr, help="learning rate of the device copies' fine-tuning")
    p.add_argument("--general", metavar="STUDENT_FOLDER", default=None,
                   help="fine-tune the device copies of this trained student (RUN/students/NAME) instead of training a new one; "
                        "its own recipe is used, with --device-epochs, --device-lr and --qat-epochs from the command line")
    p.add_argument("--name", default=d.name, help="run name (default: derived from the settings)")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    p.add_argument("--amp", default=d.amp, choices=AMP_MODES, help="on a GPU: bf16 autocast of the model's forward, or off (fp32)")
    add_deprecated(p, "--dir", "--dir-p", dest="dir_p", type=float)
    add_shared(p, experiment=d.experiment, cluster=False)
    return p


def config_from_args(args: argparse.Namespace) -> StudentConfig:
    fms_p, fms_alpha = _pair(args.fms, "--fms")
    adir_tau, adir_p = _adir(args.adir, args.dir_p)
    return StudentConfig(
        run_dir=args.run, data=data_config(args),
        model=args.model, preset=args.preset, norm=args.norm, targets=args.targets, kd_lambda=args.kd_lambda,
        temperature=args.temperature, kd_reduction=args.kd_reduction, fms_p=fms_p, fms_alpha=fms_alpha if fms_alpha > 0 else 0.3,
        adir_tau=adir_tau, adir_p=adir_p, dir_p=args.dir_p, roll_s=args.roll, freqm=args.freqm, timem=args.timem,
        mixup_alpha=args.mixup, stretch_p=args.stretch, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, device_epochs=args.device_epochs, device_lr=args.device_lr, name=args.name, experiment=args.experiment,
        mlflow_uri=args.mlflow_uri, device=args.device, amp=args.amp,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    quiet_third_party()
    cfg = config_from_args(args)
    cfg.validate()  # before any data preparation or training
    require_writable(cfg.run_dir, "the run folder", "pass --run to a folder you can write")
    if args.general and cfg.device_epochs < 1:
        raise ConfigError("--general fine-tunes device copies: give --device-epochs N (N >= 1)")
    started = time.time()
    with run_lock(cfg.run_dir):
        if args.general:
            from asc_dist.distill.devices import finetune_existing

            result = finetune_existing(args.general, cfg.device_epochs, cfg.device_lr, qat_epochs=cfg.qat_epochs, mlflow_uri=cfg.mlflow_uri)
        else:
            result = train_student(cfg)
            if cfg.device_epochs > 0:  # then its device copies, from the checkpoint just written
                from asc_dist.distill.devices import finetune_existing

                result = finetune_existing(cfg.out_dir, cfg.device_epochs, cfg.device_lr, mlflow_uri=cfg.mlflow_uri)
    say_untracked(cfg.run_dir, started, tracking.resolve_uri(cfg.run_dir, cfg.mlflow_uri))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0

