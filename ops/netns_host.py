"""A "host" made of Linux namespaces: its own network (a veth into a private LAN), its own mount table (private
/tmp, a hosts file, the shared folder), its own PID and UTS namespaces (so `ray stop` there sees only that
host's processes, and killing the host's init kills everything on it). Needs root, `ip netns` and `unshare`.

A host is alive while its init process is: `kill_host` sends SIGKILL to init, and the kernel then kills every
process in its PID namespace, which is what losing a machine looks like to the rest of a cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# PID 1 of a host: reaps the daemons `ray start` and `nohup` leave behind (they are re-parented to it).
INIT = "import os, time\nwhile True:\n    try:\n        os.waitpid(-1, 0)\n    except ChildProcessError:\n        time.sleep(0.5)\n"


@dataclass
class Host:
    name: str  # also its hostname
    netns: str
    ip: str
    root: Path  # STATE/hosts/NAME: tmp/ (mounted on /tmp), home/ (its $HOME), hosts (mounted on /etc/hosts)
    init_pid: int = 0

    @property
    def home(self) -> Path:
        return self.root / "home"

    def alive(self) -> bool:
        """Its init runs: PID 1 of its own PID namespace *and* inside this host's netns (a saved PID that was reused,
        e.g. after a reboot, by another container's init is not ours)."""
        return self.init_pid > 0 and _is_init(self.init_pid) and _in_netns(self.init_pid, self.netns)

    def to_dict(self) -> dict:
        return {"name": self.name, "netns": self.netns, "ip": self.ip, "root": str(self.root), "init_pid": self.init_pid}

    @classmethod
    def from_dict(cls, d: dict) -> "Host":
        return cls(d["name"], d["netns"], d["ip"], Path(d["root"]), int(d.get("init_pid", 0)))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` exited {result.returncode}: {result.stderr.strip()}")
    return result


def namespaces_permitted() -> str | None:
    """None if this process can make network, mount and PID namespaces; else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns, unshare --mount --pid)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"ascd-probe-{os.getpid()}"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    try:
        test = sh("ip", "netns", "exec", probe, "unshare", "--mount", "--pid", "--uts", "--fork", "--mount-proc", "true", check=False)
        if test.returncode != 0:
            return f"`unshare --mount --pid` is not permitted here: {test.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def make_lan(netns: str) -> None:
    """A namespace holding only a bridge: the cluster's private LAN (no address, no route, no NAT)."""
    if netns not in list_netns():
        sh("ip", "netns", "add", netns)
        sh("ip", "-n", netns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", netns, "link", "set", "br0", "up")


def list_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def plug(host: Host, lan: str, prefix_len: int = 24) -> None:
    """The host's netns with one interface, eth0, cabled to the LAN's bridge; loopback up; no default route."""
    if host.netns not in list_netns():
        sh("ip", "netns", "add", host.netns)
        cable = f"v-{host.name}"[:15]
        sh("ip", "-n", lan, "link", "del", cable, check=False)  # a lost host's cable goes away asynchronously
        deadline = time.monotonic() + 10
        while sh("ip", "-n", lan, "link", "add", cable, "type", "veth", "peer", "name", "eth0", "netns", host.netns,
                 check=time.monotonic() > deadline).returncode != 0:
            time.sleep(0.2)
        sh("ip", "-n", lan, "link", "set", cable, "master", "br0", "up")
        sh("ip", "-n", host.netns, "addr", "add", f"{host.ip}/{prefix_len}", "dev", "eth0")
        sh("ip", "-n", host.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", host.netns, "link", "set", "lo", "up")


def boot(host: Host, hosts_file: str, binds: dict[str, str], keep: list[str]) -> int:
    """Start the host's init in fresh mount/PID/UTS namespaces inside its netns; returns init's PID.

    binds: {target: source} bind mounts (e.g. the shared folder). keep: paths under /tmp that must stay visible
    through the private /tmp (this checkout or its venv, if they live there)."""
    tmp, home = host.root / "tmp", host.root / "home"
    tmp.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (host.root / "hosts").write_text(hosts_file)
    steps = [f"hostname {host.name}", f"mount --bind {host.root / 'hosts'} /etc/hosts"]
    for target, source in binds.items():
        steps.append(f"mkdir -p {target} && mount --bind {source} {target}")
    for path in keep:
        if path.startswith("/tmp/"):
            inner = tmp / path.removeprefix("/tmp/")
            inner.mkdir(parents=True, exist_ok=True)
            steps.append(f"mount --rbind {path} {inner}")
    steps.append(f"mount --rbind {tmp} /tmp")
    steps.append(f"exec {sys.executable} -c {_quote(INIT)}")
    log = open(host.root / "init.log", "ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--pid", "--uts", "--fork", "--mount-proc",
         "--propagation", "private", "--", "sh", "-c", " && ".join(steps)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = _children(proc.pid)
        if children and _is_init(children[0]) and _runs(children[0], sys.executable):  # mounts done, init exec'd
            host.init_pid = children[0]
            return host.init_pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"host {host.name} did not start: {(host.root / 'init.log').read_text()[-800:]}")


def on_host_argv(host: Host, command: str, env: dict[str, str] | None = None) -> list[str]:
    """argv that runs `bash -c command` on the host (its network, mounts, PIDs and hostname), HOME = its private home."""
    if not host.alive():
        raise RuntimeError(f"host {host.name} is not running")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(host.home), "LANG": "C.UTF-8", **(env or {})}
    return ["nsenter", "-t", str(host.init_pid), "-m", "-n", "-p", "-u", f"--wd={host.home}", "env", "-i",
            *[f"{k}={v}" for k, v in full_env.items()], "bash", "-c", command]


def run_on(host: Host, command: str, env: dict[str, str] | None = None, check: bool = True, capture: bool = True,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(on_host_argv(host, command, env), capture_output=capture, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"on {host.name}: `{command}` exited {result.returncode}: {(result.stderr or '')[-1500:]}")
    return result


def kill_host(host: Host, timeout_s: float = 10.0) -> None:
    """SIGKILL the host's init: the kernel kills every process of its PID namespace (a lost machine)."""
    if host.init_pid <= 0 or not host.alive():
        return
    os.kill(host.init_pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and Path(f"/proc/{host.init_pid}").exists():
        time.sleep(0.05)


def remove_netns(netns: str) -> None:
    """Kill whatever still runs in the netns (by PID), then delete it (its veth goes with it)."""
    if netns not in list_netns():
        return
    for pid in sh("ip", "netns", "pids", netns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    sh("ip", "netns", "del", netns, check=False)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _is_init(pid: int) -> bool:
    """True if `pid` is PID 1 of its own PID namespace (our init, not a recycled PID)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        return False
    return False


def _in_netns(pid: int, netns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return False


def _runs(pid: int, executable: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(executable)
    except OSError:
        return False


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
