"""One CLI convention (asc_dist/cli.py): every step is listed by `python -m asc_dist`, and the flags steps
share have one name, help and default everywhere."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys

import pytest

from asc_dist import cli
from asc_dist.__main__ import STEPS

ENTRY = {step: f"asc_dist.{step}" if step not in ("data", "study", "pipeline") else f"asc_dist.{step}.__main__" for step in STEPS}


def parsers(step: str) -> list[argparse.ArgumentParser]:
    """The step's parser and, for `data`, its sub-commands' parsers."""
    top = importlib.import_module(ENTRY[step]).build_parser()
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return [top] + [sp for a in subs for sp in a.choices.values()]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS}


def reference() -> dict[str, argparse.Action]:
    p = argparse.ArgumentParser()
    cli.add_run(p)
    cli.add_data(p)
    cli.add_tracking(p)
    cli.add_cluster(p)
    cli.add_verbose(p)
    return options(p)


def test_python_m_asc_dist_lists_every_step():
    done = subprocess.run([sys.executable, "-m", "asc_dist"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for step in STEPS:
        assert f"\n  {step} " in done.stdout, step
        assert importlib.util.find_spec(f"asc_dist.{step}") is not None, step


@pytest.mark.parametrize("step", sorted(STEPS))
def test_shared_flags_have_one_name_help_and_default(step):
    ref = reference()
    seen = 0
    for parser in parsers(step):
        for flag, action in options(parser).items():
            if flag in ref and flag != "-h":
                seen += 1
                want = ref[flag]
                assert (action.dest, action.help, action.default) == (want.dest, want.help, want.default), (step, flag)
    if step not in ("complexity",):
        assert seen, f"{step} takes none of the shared flags"


def test_every_step_with_a_run_folder_names_it_run():
    for step in STEPS:
        flags = {f for p in parsers(step) for f in options(p)}
        assert "--out-dir" not in flags and "--run-dir" not in flags
        if step in ("teachers", "fusion", "students", "tune", "study", "pipeline"):
            assert "--run" in flags, step


def test_model_means_a_family_and_model_file_a_file():
    for step in STEPS:
        flags = {f: a for p in parsers(step) for f, a in options(p).items()}
        if "--model" in flags:
            assert "family" in flags["--model"].help, step
    assert "--model-file" in options(parsers("predict")[0]) and "--model-file" in options(parsers("export")[0])


def test_deprecated_aliases_still_work(capsys):
    from asc_dist.ship.predict import build_parser as predict
    from asc_dist.teach.driver import build_parser as teachers

    assert teachers().parse_args(["--out", "r1"]).run == "r1"
    assert predict().parse_args(["--model", "m.pt", "a.wav"]).model_file == "m.pt"
    assert "--out is deprecated; use --run" in capsys.readouterr().err


def test_lists_are_parsed_by_one_function():
    assert cli.parse_list("sm1, sm2,,") == ["sm1", "sm2"]
    assert cli.parse_list("0.02,0.5", float) == [0.02, 0.5]
    assert cli.parse_list(None) is None
    with pytest.raises(cli.ConfigError, match="--kd-lambda"):
        cli.parse_list("0.1,x", float, "--kd-lambda")


def test_first_cause_names_the_real_error_of_a_trial():
    """A trial's failure reaches the driver wrapped (Ray Train's WorkerGroupError holds the worker's traceback as
    text): the step names the innermost error, not "Training failed due to worker errors:"."""
    from asc_dist.errors import first_cause

    class Wrapped(Exception):
        pass

    text = "Training failed due to worker errors:\n[Rank 0]:\n  File \"x.py\", line 1\nTypeError: Run.__init__() missing 2 arguments"
    assert first_cause(Wrapped(text)) == "TypeError: Run.__init__() missing 2 arguments"
    inner = ValueError("bad value\nmore")
    outer = RuntimeError("outer")
    outer.__cause__ = inner
    assert first_cause(outer) == "ValueError: bad value"
