"""Complexity check of a DCASE 2025 Task 1 submission module, measured the way the organisers measure it
(CPJKU/dcase2025_task1_inference, `test_complexity.py` and `complexity.py`): for each device id, the model
`get_model_for_device` returns, on the input `load_inputs` makes of `resources/dummy.wav`: torchinfo's MACs of a
float copy, and parameter bytes summed over `model.parameters()` at each parameter's dtype. Shipped by asc-dist
as the package's test_complexity.py; exits 1 if any device's model is over a limit.

    python test_complexity.py --submission_name Surname_INST_task1 --submission_index 1
"""

import argparse
import copy
import importlib
import importlib.resources
import json
import sys
from pathlib import Path

import torchinfo

MAX_MACS = 30_000_000
MAX_PARAM_BYTES = 128_000
DEVICES = ["a", "b", "c"] + [f"s{i}" for i in range(1, 11)]


def measure(model, input_size) -> tuple:
    macs = torchinfo.summary(copy.deepcopy(model).float(), input_size=tuple(input_size), verbose=0).total_mult_adds
    return int(macs), int(sum(p.numel() * p.element_size() for p in model.parameters()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submission_name", required=True, help="the package, e.g. Surname_INST_task1")
    p.add_argument("--submission_index", type=int, default=1, help="the module's index: NAME_INDEX")
    p.add_argument("--out", default=None, help="the JSON to write (default predictions/NAME_INDEX/complexity.json)")
    args = p.parse_args(argv)
    module = importlib.import_module(f"{args.submission_name}.{args.submission_name}_{args.submission_index}")
    model = module.load_model()
    with importlib.resources.as_file(importlib.resources.files(f"{args.submission_name}.resources") / "dummy.wav") as dummy:
        inputs = module.load_inputs([str(dummy)] * len(DEVICES), DEVICES, model)
    per_device, ok = {}, True
    for device, x in zip(DEVICES, inputs):
        macs, param_bytes = measure(module.get_model_for_device(model, device), x.shape)
        within = macs <= MAX_MACS and param_bytes <= MAX_PARAM_BYTES
        ok &= within
        per_device[device] = {"MACs": macs, "Params": param_bytes}
        print(f"{device:>3} | MACs {macs:>12,} | parameter bytes {param_bytes:>9,} | {'ok' if within else 'OVER'}")
    out = Path(args.out or Path("predictions") / f"{args.submission_name}_{args.submission_index}" / "complexity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"per_device": per_device, "max_MACs": max(v["MACs"] for v in per_device.values()),
                               "max_Params": max(v["Params"] for v in per_device.values())}, indent=2))
    print(f"limits: {MAX_MACS:,} MACs, {MAX_PARAM_BYTES:,} parameter bytes -> {'within' if ok else 'OVER'}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
