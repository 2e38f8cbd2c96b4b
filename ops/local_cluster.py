"""A three-node Ray cluster on this machine, started by cluster.yaml's own commands (needs root).

    python ops/local_cluster.py up [--workers 2]      # LAN, head + workers + a client host; idempotent: restarts dead hosts
    python ops/local_cluster.py status
    python ops/local_cluster.py exec head -- python -m asc_dist.teachers --n 4 --address 10.213.0.2:6379 \\
        --data /shared/data/tau --run /shared/runs/r1 --mlflow-uri http://10.213.0.2:5000
    python ops/local_cluster.py kill w1               # lose a worker: every process on it dies at once
    python ops/local_cluster.py down                  # every namespace, interface, mount and process it made; safe twice

Each host (head, w1, w2, ..., client) is a network namespace cabled to a private bridge (10.213.0.0/24, no default
route, no NAT: nothing leaves the LAN) with its own mount, PID and UTS namespaces: a private /tmp and $HOME, an
/etc/hosts naming the LAN's hosts, and one folder of this machine bind-mounted at /shared on all of them (the stand-in
for the head's NFS export). `~/venv` and `~/asc-dist` in each home point at this checkout and its venv, as
cluster.yaml's setup commands would have installed them. Ray's token authentication is on: one token is
generated here (`ray get-auth-token --generate`, as you would before `ray up`) and copied to `~/.ray/auth_token` on
every host (what cluster.yaml's file_mounts do); cluster.yaml's start commands set RAY_AUTH_MODE=token, and `exec`
sets it for the client's commands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netns_host import Host, boot, kill_host, list_netns, make_lan, namespaces_permitted, on_host_argv, plug, remove_netns, run_on  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.213.0"
SHARED = "/shared"
RAY_PORT, MLFLOW_PORT = 6379, 5000


class ClusterCommandError(Exception):
    """A problem with the local cluster the user can fix (wrong prefix, a host that is not running, ...)."""


class Cluster:
    """The hosts of one local cluster and their state file (STATE/cluster.json)."""

    def __init__(self, state: Path, prefix: str = "ascd", cluster_yaml: Path = REPO / "cluster.yaml"):
        self.state, self.cluster_yaml = state.resolve(), cluster_yaml
        self.file = self.state / "cluster.json"
        saved = json.loads(self.file.read_text()) if self.file.is_file() else {}
        if saved and saved.get("prefix") != prefix:
            raise ClusterCommandError(f"{self.file} belongs to the cluster with --prefix {saved.get('prefix')}; pass that prefix")
        self.prefix = prefix
        self.hosts = {d["name"]: Host.from_dict(d) for d in saved.get("hosts", [])}
        self.made_shared_dir = bool(saved.get("made_shared_dir", False))

    # --- names -------------------------------------------------------------------------------------------------
    @property
    def lan(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def head(self) -> Host:
        return self.hosts["head"]

    @property
    def head_address(self) -> str:
        return f"{self.head.ip}:{RAY_PORT}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.head.ip}:{MLFLOW_PORT}"

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise ClusterCommandError(f"no host {name!r} in {self.file} (hosts: {', '.join(self.hosts) or 'none: run up'})")
        return self.hosts[name]

    def _new_host(self, name: str, last_octet: int) -> Host:
        return self.hosts.setdefault(name, Host(name, f"{self.prefix}-{name}", f"{SUBNET}.{last_octet}", self.state / "hosts" / name))

    def save(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        doc = {"prefix": self.prefix, "made_shared_dir": self.made_shared_dir, "hosts": [h.to_dict() for h in self.hosts.values()]}
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.file)

    # --- commands from cluster.yaml ------------------------------------------------------------------------------
    def commands(self, key: str) -> list[str]:
        return list(yaml.safe_load(self.cluster_yaml.read_text())[key])

    def host_env(self, host: Host) -> dict[str, str]:
        """What a node's login shell has: the venv first on PATH (setup_commands' .bashrc line), no usage stats."""
        return {"PATH": f"{host.home / 'venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_HEAD_IP": self.head.ip}

    def run_commands(self, host: Host, key: str) -> None:
        """Run cluster.yaml's `key` commands on `host` one by one, as Ray's command runner does (bash -c, variables
        from the environment: $RAY_HEAD_IP on workers); the first failure stops."""
        for command in self.commands(key):
            print(f"[{host.name}] $ {command}", file=sys.stderr)
            result = run_on(host, command, self.host_env(host), check=False, timeout=180)
            (host.root / "commands.log").open("a").write(f"$ {command}\n{result.stdout}{result.stderr}\n")
            if result.returncode != 0:
                raise ClusterCommandError(f"on {host.name}, cluster.yaml {key} failed ({result.returncode}): {command}\n{result.stderr[-1500:]}")

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def up(self, workers: int = 2) -> None:
        why = namespaces_permitted()
        if why:
            raise ClusterCommandError(f"cannot make a local cluster here: {why}")
        self.state.mkdir(parents=True, exist_ok=True)
        shared_src = self.state / "shared"
        for sub in ("data", "runs", "mlflow"):  # what head_setup_commands' mkdir makes (NFS is replaced by a bind mount)
            (shared_src / sub).mkdir(parents=True, exist_ok=True)
        if not Path(SHARED).exists():
            Path(SHARED).mkdir()  # an empty mount point on this machine; the namespaces mount the shared folder on it
            self.made_shared_dir = True
            self.save()
        make_lan(self.lan)
        names = [("head", 2), *[(f"w{i}", 2 + i) for i in range(1, workers + 1)], ("client", 100)]
        for name, octet in names:
            self._new_host(name, octet)
        self.save()
        etc_hosts = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in self.hosts.values())
        keep = [str(REPO), os.path.realpath(sys.prefix)]
        order = ["head", *[n for n in self.hosts if n.startswith("w")], "client"]
        for name in order:
            host = self.hosts[name]
            if host.alive():
                continue
            remove_netns(host.netns)  # a lost host comes back as a fresh machine on the same address
            plug(host, self.lan)
            boot(host, etc_hosts, {SHARED: str(shared_src)}, keep)
            self._install(host)
            self.save()
            if name == "head":
                self.run_commands(host, "head_start_ray_commands")
            elif name != "client":
                self.run_commands(host, "worker_start_ray_commands")
        self.save()
        self._wait_mlflow()  # started in the background by the head's commands; it answers after 8-20 s
        nodes = self.wait_nodes(len([n for n in self.hosts if n != "client"]))
        print(json.dumps({"ray": self.head_address, "mlflow": self.mlflow_uri, "alive_nodes": nodes, "shared": SHARED,
                          "shared_on_this_machine": str(shared_src), "hosts": {n: h.ip for n, h in self.hosts.items()}}, indent=2))

    def _install(self, host: Host) -> None:
        """The node's home as setup_commands and file_mounts leave it: ~/venv, ~/asc-dist, the auth token."""
        home = host.home
        for link, target in (("venv", os.path.realpath(sys.prefix)), ("asc-dist", str(REPO))):
            if not (home / link).is_symlink():
                (home / link).symlink_to(target)
        if host.name == "head":
            self._write_bootstrap(home / "ray_bootstrap_config.yaml")
        token = self.state / "auth_token"
        if not token.is_file():  # made once, on "your machine", as `ray get-auth-token --generate` does before `ray up`
            local_home = self.state / "local"
            local_home.mkdir(exist_ok=True)
            env = {"HOME": str(local_home), "PATH": os.environ.get("PATH", ""), "RAY_USAGE_STATS_ENABLED": "0"}
            subprocess.run([str(Path(sys.prefix) / "bin" / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
            shutil.move(local_home / ".ray" / "auth_token", token)
        (home / ".ray").mkdir(exist_ok=True)  # cluster.yaml's file_mounts copy it to ~/.ray/auth_token on every node
        shutil.copy2(token, home / ".ray" / "auth_token")
        (home / ".ray" / "auth_token").chmod(0o600)

    def _write_bootstrap(self, path: Path) -> None:
        """Where `ray up` leaves the cluster's config for the head's autoscaler (head_start_ray_commands name it),
        write this cluster's: cluster.yaml with a read-only provider, since there are no machines to launch here."""
        from ray.autoscaler._private.monitor import BASE_READONLY_CONFIG

        config = {**BASE_READONLY_CONFIG, "cluster_name": yaml.safe_load(self.cluster_yaml.read_text())["cluster_name"],
                  "provider": {**BASE_READONLY_CONFIG["provider"], "use_node_id_as_ip": False}}
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _wait_mlflow(self, timeout_s: float = 90) -> None:
        check = f"~/venv/bin/python -c \"import urllib.request; urllib.request.urlopen('{self.mlflow_uri}/health', timeout=2)\""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if run_on(self.head, check, self.host_env(self.head), check=False).returncode == 0:
                return
            time.sleep(1)
        raise ClusterCommandError(f"the head's MLflow server did not answer at {self.mlflow_uri} within {timeout_s:.0f} s; "
                         f"see {self.state / 'shared' / 'mlflow' / 'console.log'}")

    def alive_nodes(self) -> int:
        """Alive Ray nodes, asked on the head (a Ray driver needs a Ray node of its own: drivers run on the head, as
        `ray exec cluster.yaml` / `ray job submit` run them)."""
        code = ("import ray, logging; ray.init(address='%s', logging_level=logging.ERROR, log_to_driver=False);"
                "print('=>', sum(n['Alive'] for n in ray.nodes()))") % self.head_address
        result = self.exec("head", f"python -c \"{code}\"", capture=True, check=False)
        found = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("=> ")]  # not Ray's own lines
        return int(found[-1]) if result.returncode == 0 and found else 0

    def wait_nodes(self, n: int, timeout_s: float = 60) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.alive_nodes()
            if alive >= n or time.monotonic() > deadline:
                return alive
            time.sleep(1)

    def exec_env(self, host: Host) -> dict[str, str]:
        env = {**self.host_env(host), "RAY_AUTH_MODE": "token"}
        for key in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TERM"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def exec(self, name: str, command: str, capture: bool = False, check: bool = False, timeout: float | None = None):
        """Run a command on a host with RAY_AUTH_MODE=token (its ~/.ray/auth_token holds the cluster's token)."""
        host = self.host(name)
        return run_on(host, command, self.exec_env(host), check=check, capture=capture, timeout=timeout)

    def popen(self, name: str, command: str, **kwargs) -> subprocess.Popen:
        """`exec` without waiting (stream the output of a long command)."""
        host = self.host(name)
        return subprocess.Popen(on_host_argv(host, command, self.exec_env(host)), stdin=subprocess.DEVNULL, **kwargs)

    def kill(self, name: str) -> None:
        if name in ("head", "client"):
            raise ClusterCommandError("only a worker can be killed (w1, w2, ...)")
        kill_host(self.host(name))
        print(f"killed host {name} ({self.host(name).ip}): every process in its namespaces is gone", file=sys.stderr)

    def ours(self, netns: str) -> bool:
        """One of the namespaces this prefix makes: PREFIX-lan, -head, -client, -w<N> (nothing of a longer prefix)."""
        return re.fullmatch(rf"{re.escape(self.prefix)}-(lan|head|client|w\d+)", netns) is not None

    def down(self) -> None:
        for host in self.hosts.values():
            kill_host(host)
        for netns in list_netns():  # also what a crashed `up` left behind, found by its exact names
            if self.ours(netns):
                remove_netns(netns)
        others = [n for n in list_netns() if n.endswith("-lan") and not self.ours(n)]  # another cluster still mounts /shared
        if self.made_shared_dir and not others and Path(SHARED).is_dir() and not any(Path(SHARED).iterdir()):
            Path(SHARED).rmdir()
        for made in ("hosts", "shared", "local"):  # only what `up` makes: a mistyped --state loses nothing else
            shutil.rmtree(self.state / made, ignore_errors=True)
        for made in ("auth_token", "cluster.json", "cluster.tmp"):
            (self.state / made).unlink(missing_ok=True)
        if self.state.is_dir() and not any(self.state.iterdir()):
            self.state.rmdir()

    def status(self) -> dict:
        hosts = {n: {"ip": h.ip, "alive": h.alive()} for n, h in self.hosts.items()}
        up = "head" in self.hosts and self.head.alive()
        return {"hosts": hosts, "ray": self.head_address if self.hosts else None, "alive_ray_nodes": self.alive_nodes() if up else 0,
                "mlflow": self.mlflow_uri if self.hosts else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--state", default="/var/tmp/asc-dist-cluster", help="folder for the hosts' /tmp, homes and the shared folder")
    p.add_argument("--prefix", default="ascd", help="name prefix of the namespaces (two clusters need two prefixes)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up").add_argument("--workers", type=int, default=2)
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("kill").add_argument("host")
    ex = sub.add_parser("exec")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    try:
        return _run(a)
    except (ClusterCommandError, RuntimeError, subprocess.SubprocessError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    cluster = Cluster(Path(a.state), a.prefix)
    if a.cmd == "up":
        cluster.up(a.workers)
    elif a.cmd == "down":
        cluster.down()
    elif a.cmd == "status":
        print(json.dumps(cluster.status(), indent=2))
    elif a.cmd == "kill":
        cluster.kill(a.host)
    elif a.cmd == "exec":
        command = a.command[1:] if a.command[:1] == ["--"] else a.command
        # one argument is a shell command line (pipes, &&); several are one command's words, quoted as given
        line = command[0] if len(command) == 1 else shlex.join(command)
        return cluster.exec(a.host, line).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
