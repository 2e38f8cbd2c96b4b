"""An MLflow tracking server for asc-dist runs: sqlite backend, artifacts proxied into a local folder.

    python ops/mlflow_server.py [DIR] [--port 5000] [--host 127.0.0.1] [--allowed-hosts H]   (or ops/mlflow_server.sh DIR PORT)

DIR holds `mlflow.db` (runs, params, metrics) and `artifacts/` (plots, JSON, int8 models). Clients log over
HTTP only (`--mlflow-uri http://HOST:PORT`): with `--serve-artifacts` the server writes every uploaded
artifact into DIR/artifacts itself, so a Ray worker on another node needs no access to DIR.

Why these flags (measured here with MLflow 3.17): the server answers /health after about 13 s by default, 8 s with
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` and `--workers 1`. `mlflow server` runs its web server as a child
process, so it is started in its own process group and stopped by that group's id, never by a name.

From Python (the test fixture in tests/mlflow_server.py does this):

    url, proc = start(tmp_dir)            # a free loopback port
    ...MlflowClient(url)...
    stop(proc)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from asc_dist.cli import run_main
from asc_dist.errors import TrackingError

DEFAULT_PORT = 5000
LOG_NAME = "server.log"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; a race with another process is retried by start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0


def server_command(root: Path, host: str, port: int, allowed_hosts: str | None = None) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _launch(root: Path, host: str, port: int, timeout_s: float, allowed_hosts: str | None) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's own store comes from the flags, not the caller's env
    log_path = root / LOG_NAME
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            server_command(root, host, port, allowed_hosts), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=root, start_new_session=True,  # own process group: stop() kills the server and its workers
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TrackingError(
                    f"mlflow server exited with code {proc.returncode} before answering on port {port}; "
                    f"last lines of {log_path}:\n{_log_tail(log_path)}"
                )
            if _healthy(url):
                return proc
            time.sleep(0.25)
    except BaseException:  # Ctrl-C while waiting, or the error above: leave nothing running
        stop(proc)
        raise
    stop(proc)
    raise TrackingError(
        f"mlflow server on {url} did not answer /health within {timeout_s:.0f} s; "
        f"last lines of {log_path}:\n{_log_tail(log_path)}"
    )


def start(root_dir: str | os.PathLike, port: int | None = None, host: str = "127.0.0.1",
          timeout_s: float = 90.0, allowed_hosts: str | None = None) -> tuple[str, subprocess.Popen]:
    """Start a server storing into `root_dir`; return (tracking URL, process) once /health answers.

    `port=None` picks a free port (retried if another process takes it first). `host` is the interface to
    bind: loopback by default; `0.0.0.0` on a cluster head so Ray workers reach it by the head's private IP
    (MLflow's default allowed hosts accept localhost and private addresses; others need `allowed_hosts`,
    e.g. "mlflow.example.org,203.0.113.7:5000").
    """
    root = Path(root_dir).expanduser().resolve()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    if port is not None:
        if port_in_use(host, port):
            raise TrackingError(f"port {port} on {host} is already in use; pick another port or stop what listens there")
        proc = _launch(root, host, port, timeout_s, allowed_hosts)
    else:
        for attempt in range(3):
            port = free_port(host if host not in ("0.0.0.0", "") else "127.0.0.1")
            try:
                proc = _launch(root, host, port, timeout_s, allowed_hosts)
                break
            except TrackingError:
                if attempt == 2 or not port_in_use(host, port):
                    raise  # a real failure, not a lost race for the port
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{url_host}:{port}", proc


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop the server and its worker processes: SIGTERM to its process group, SIGKILL if it lingers."""
    if process is None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:  # the leader is gone; a group still named after it holds only its descendants
        process.poll()
        if group_alive(process.pid):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    if pgid != process.pid:  # not the leader of its own group (not started by start()): signal it alone
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; give its children the same grace, then make sure none survives
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)
        if group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting for a reaper do not count)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def experiment_url(url: str, experiment_id: str) -> str:
    """The runs table of an experiment (MLflow 3 opens a GenAI overview for the bare experiment URL)."""
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python ops/mlflow_server.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", default="runs/mlflow", help="folder for mlflow.db and artifacts/ (default runs/mlflow)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 on a cluster head)")
    p.add_argument("--allowed-hosts", default=None,
                   help="Host headers to accept besides localhost and private IPs (MLflow's DNS-rebinding guard)")
    args = p.parse_args(argv)
    url, proc = start(args.dir, port=args.port or None, host=args.host, allowed_hosts=args.allowed_hosts)
    root = Path(args.dir).expanduser().resolve()
    where = url if args.host in ("127.0.0.1", "localhost") else f"http://<this host's IP>:{url.rsplit(':', 1)[1]} (bound to {args.host})"
    print(f"MLflow server: {where}  (pid {proc.pid}; runs in {root / 'mlflow.db'}, artifacts in {root / 'artifacts'}, log {root / LOG_NAME})")
    print(f"Log to it:   python -m asc_dist.tune --run RUN --mlflow-uri {url}   (same flag for asc_dist.teachers)")
    print(f"Open a sweep: {url}/#/experiments -> 'sweep' -> Runs, or {experiment_url(url, '<experiment id>')}")
    print(f"Screenshot:  python ops/screenshot_mlflow.py --url {url} --experiment sweep --out docs/mlflow_sweep.png")
    print("Stop with Ctrl-C.", flush=True)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)  # also when started in the background, where SIGINT is ignored
    try:
        proc.wait()
        raise TrackingError(f"mlflow server exited with code {proc.returncode}; see {root / LOG_NAME}")
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


if __name__ == "__main__":
    run_main(main)
