"""Screenshot an MLflow experiment's runs table with headless Chromium (Debian's `chromium` package).

    python ops/screenshot_mlflow.py --url http://127.0.0.1:5000 --experiment sweep --out docs/mlflow_sweep.png

Why not just `chromium --headless --screenshot URL`: on MLflow 3.17 that does render the runs page (with
`?workflowType=machine_learning`; the bare experiment URL opens the GenAI overview), but a fresh browser
profile shows nested runs collapsed under their parent, no metric or parameter columns, and the MLflow
Assistant panel over a quarter of the page. So this script drives the same Chromium over the DevTools
protocol on a pipe (`--remote-debugging-pipe`, standard library only): it loads the page once, edits the
page's own saved view state in localStorage (parent runs expanded; the run metrics and the parameters that
differ between runs as columns; the assistant closed), reloads, waits until the run rows are in the DOM,
and captures the page. It fails (exit 2) when no run row rendered. `--plain` takes the one-command
`--screenshot` route instead (no check, no columns).

Chromium: `apt-get install -y chromium` (Debian), or pass `--chromium PATH` / set `CHROMIUM`.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from asc_dist.cli import run_main
from asc_dist.errors import TrackingError
from asc_dist.run.atomic import atomic_path

# Flags shared by both routes: no network beyond the MLflow server, nothing left behind in $HOME.
BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
]
ASSISTANT_KEYS = {"mlflow.assistant.panelOpen_v1": "false", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}


def find_chromium(explicit: str | None = None) -> str:
    for candidate in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise TrackingError("no Chromium found; install it (Debian: `apt-get install -y chromium`) or pass --chromium PATH")


def page_url(url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the UI's model-training view (3.x opens GenAI pages otherwise)."""
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# The columns a sweep is read by; other experiments fall back to their accuracy metrics.
PREFERRED_METRICS = ("val_acc", "test_accuracy", "test_unseen_accuracy", "int8_test_accuracy", "macs")
PREFERRED_PARAMS = ("preset", "kd_lambda", "temperature")


def runs_view(url: str, experiment: str, max_metrics: int = 5, max_params: int = 3) -> dict:
    """Experiment id, run ids, parent runs and the columns worth showing, read through the tracking API."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(url)
    try:
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {url} did not answer ({exc}); start it with ops/mlflow_server.sh") from None
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "(none)"
        raise TrackingError(f"no experiment {experiment!r} at {url}; it has: {names}")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = sorted({r.data.tags["mlflow.parentRunId"] for r in runs if "mlflow.parentRunId" in r.data.tags})
    present = {k for r in runs for k in r.data.metrics}
    metrics = [k for k in PREFERRED_METRICS if k in present] or sorted(present, key=lambda k: ("acc" not in k, k))
    metrics = metrics[:max_metrics]
    values: dict[str, set] = {}
    for r in runs:
        for k, v in r.data.params.items():
            values.setdefault(k, set()).add(v)
    varying = sorted(k for k, v in values.items() if len(v) > 1)
    params = ([k for k in PREFERRED_PARAMS if k in varying] or varying)[:max_params]
    return {
        "experiment_id": exp.experiment_id, "run_ids": [r.info.run_id for r in runs], "parents": parents,
        "columns": [f"metrics.`{k}`" for k in metrics] + [f"params.`{k}`" for k in params],
    }


class ProtocolError(TrackingError):
    """Chromium answered, but with an error (e.g. a page context that a navigation just replaced)."""


class DevTools:
    """The Chrome DevTools protocol over `--remote-debugging-pipe`: JSON messages, NUL-terminated, fds 3 and 4."""

    def __init__(self, chromium: str, flags: list[str]):
        to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, from_browser_w = os.pipe()
        # Park the child's ends above fd 10 so that placing them on 3 and 4 cannot clobber each other.
        keep_r, keep_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)

        def child_fds() -> None:
            os.dup2(keep_r, 3)
            os.dup2(keep_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *flags, "--remote-debugging-pipe", "about:blank"], preexec_fn=child_fds, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        os.close(keep_r)
        os.close(keep_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser_r], [], [], left)[0]:
                raise TrackingError("Chromium stopped answering on its DevTools pipe")
            chunk = os.read(self._from_browser_r, 1 << 16)
            if not chunk:
                raise TrackingError(f"Chromium exited (code {self.proc.poll()}) while rendering the page")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, browser: bool = False, timeout_s: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if not browser and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:  # everything else is an event we did not ask for
                if "error" in reply:
                    raise ProtocolError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def open_tab(self, width: int, height: int) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        return result.get("result", {}).get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", browser=True, timeout_s=5)
            self.proc.wait(10)
        except (TrackingError, OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:  # its own process group: stop the browser and its helpers by group id
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for fd in (self._to_browser_w, self._from_browser_r):
            try:
                os.close(fd)
            except OSError:
                pass


def _count_rows(tab: DevTools, experiment_id: str, run_ids: list[str]) -> int:
    """How many of the experiment's runs have a row (a link to the run) in the rendered table; the document
    from before a reload (marked `window.__ascOldPage`) counts as none."""
    selector = f'a[href*="/experiments/{experiment_id}/runs/"]'
    try:
        hrefs = tab.evaluate(
            f"window.__ascOldPage ? [] : Array.from(document.querySelectorAll({json.dumps(selector)})).map(a => a.getAttribute('href'))"
        ) or []
    except ProtocolError:  # evaluated while the page was being replaced
        return 0
    return sum(any(h.rstrip("/").endswith(run_id) for h in hrefs) for run_id in run_ids)


def _wait_rows(tab: DevTools, view: dict, timeout_s: float, want: int) -> int:
    deadline = time.monotonic() + timeout_s
    seen, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = _count_rows(tab, view["experiment_id"], view["run_ids"])
        if n != seen:
            seen, stable_since = n, time.monotonic()
        if n >= want or (n > 0 and time.monotonic() - stable_since > 3.0):
            return n
        time.sleep(0.25)
    return max(seen, 0)


def _set_view_state(tab: DevTools, view: dict) -> bool:
    """Expand parents, choose columns, close the assistant, in the page's own saved state (same origin)."""
    js = """((expId, parents, columns, extra) => {
      for (const [k, v] of Object.entries(extra)) localStorage.setItem(k, v);
      const key = Object.keys(localStorage).find(k => k.endsWith('ExperimentPage-["' + expId + '"]-ReactComponentState'));
      if (!key) return false;
      const state = JSON.parse(localStorage.getItem(key));
      state.runsExpanded = Object.assign(state.runsExpanded || {}, Object.fromEntries(parents.map(p => [p, true])));
      if (columns.length) state.selectedColumns = columns;
      if (!(state.columnOrder || []).length) {  // widths apply only to ordered columns: widen the run names
        state.columnOrder = ["attributes.`Run Name`"];
        state.columnWidths = {"attributes.`Run Name`": 300};
      }
      localStorage.setItem(key, JSON.stringify(state));
      return true;
    })(%s, %s, %s, %s)""" % tuple(json.dumps(x) for x in (view["experiment_id"], view["parents"], view["columns"], ASSISTANT_KEYS))
    return bool(tab.evaluate(js))


def screenshot_devtools(chromium: str, url: str, view: dict, out: Path, width: int, height: int, timeout_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="asc-chromium-") as profile:
        tab = DevTools(chromium, [*BASE_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"])
        try:
            tab.open_tab(width, height)
            tab.call("Page.navigate", {"url": page_url(url, view["experiment_id"])})
            if _wait_rows(tab, view, timeout_s, want=1) == 0 and view["run_ids"]:
                raise TrackingError(f"the MLflow UI at {url} rendered no run rows within {timeout_s:.0f} s")
            if _set_view_state(tab, view):
                tab.evaluate("window.__ascOldPage = true")  # rows are counted on the reloaded page only
                tab.call("Page.reload", {"ignoreCache": False})
            visible = _wait_rows(tab, view, timeout_s, want=len(view["run_ids"]))
            time.sleep(1.0)  # let cells, icons and fonts settle after the last row arrived
            png = base64.b64decode(tab.call("Page.captureScreenshot", {"format": "png"})["data"])
        finally:
            tab.close()
    with atomic_path(out) as tmp:
        tmp.write_bytes(png)
    return visible


def screenshot_plain(chromium: str, page: str, out: Path, width: int, height: int, timeout_s: float) -> None:
    """The one-command route: Chromium's own --screenshot of `page` after a virtual-time budget (no checks)."""
    with tempfile.TemporaryDirectory(prefix="asc-chromium-") as profile, atomic_path(out) as tmp:
        cmd = [chromium, *BASE_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={int(timeout_s * 1000)}", f"--screenshot={tmp}", page]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TrackingError(f"Chromium did not finish the screenshot within {timeout_s + 60:.0f} s") from None
        if not tmp.is_file():
            raise TrackingError(f"Chromium wrote no screenshot (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python ops/screenshot_mlflow.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="MLflow server, e.g. http://127.0.0.1:5000")
    p.add_argument("--experiment", default="sweep", help="experiment name (default sweep)")
    p.add_argument("--out", default="docs/mlflow_sweep.png", help="PNG to write")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=45.0, help="seconds to wait for the runs table")
    p.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH, or $CHROMIUM)")
    p.add_argument("--plain", action="store_true", help="plain `chromium --screenshot`: no DevTools, no checks")
    p.add_argument("--model", default=None, metavar="NAME[/VERSION]", help="screenshot a registered model's version page instead")
    args = p.parse_args(argv)

    url = args.url.rstrip("/")
    chromium = find_chromium(args.chromium)
    out = Path(args.out)
    if args.model:  # a registered model's version page: no runs table to set up, the plain route shows it all
        name, _, version = args.model.partition("/")
        page = f"{url}/#/models/{name}/versions/{version or 1}"
        screenshot_plain(chromium, page, out, args.width, args.height, min(args.timeout, 30.0))
        print(f"wrote {out} ({page})")
        return 0
    view = runs_view(url, args.experiment)
    if args.plain:
        screenshot_plain(chromium, page_url(url, view["experiment_id"]), out, args.width, args.height, min(args.timeout, 30.0))
        print(f"wrote {out} ({page_url(url, view['experiment_id'])}; --plain: rows not checked)")
        return 0
    visible = screenshot_devtools(chromium, url, view, out, args.width, args.height, args.timeout)
    print(f"wrote {out}: {visible} of {len(view['run_ids'])} run(s) of experiment {args.experiment!r} "
          f"(id {view['experiment_id']}) visible in the runs table")
    if view["run_ids"] and visible == 0:
        raise TrackingError(f"no run row is visible in {out}; open {page_url(url, view['experiment_id'])} to see why")
    return 0


if __name__ == "__main__":
    run_main(main)
