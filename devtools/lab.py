"""A lab of simulated hosts on this machine: Linux network namespaces joined by point-to-point
veth links, real TCP and real authentication between them (standard library only).

    db      PostgreSQL on TCP (scram-sha-256), database `lab` owned by `app`, not a superuser
    redis   Redis on TCP, the ACL user `app` with a password (the default user is off)
    w1..wN  worker hosts: the PostgreSQL cluster and the Redis cluster under a supervisord each
    relay   the outbox relay and the saga recoverer under a supervisord
    (ctl)   this machine's own namespace: `manage.py` commands, tests, the experiment runner

Every host has one link to `db` and one to `redis` (hosts do not talk to each other), so a
partition is a `tc qdisc ... blackhole` on one end of one link: that direction drops every
packet silently, as a cut cable or a firewall does (`out`: from the host, `in`: to it, `both`).

As root only (namespaces need it; CI is root). `up` refuses when a lab of this checkout is
already up; `down` removes every namespace, link and process the lab made, also after a crash
(it finds them by name, and kills only what runs inside its own namespaces).

    python3 devtools/lab.py up [--hosts N] [--no-processes]
    python3 devtools/lab.py down | status | env
    python3 devtools/lab.py partition HOST [db|redis|all] [both|out|in]
    python3 devtools/lab.py heal HOST
    python3 devtools/lab.py exec HOST -- CMD ...
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: python3 devtools/lab.py
    sys.path.insert(0, str(BASE_DIR))

from devtools import cli, local_postgres, local_redis, supervise  # noqa: E402
from devtools.processes import alive  # noqa: E402

VAR = BASE_DIR / "var" / "lab"
STATE = VAR / "lab.json"
KEY = hashlib.sha1(str(BASE_DIR).encode()).hexdigest()
PREFIX = f"rl{KEY[:4]}"  # namespaces rlXXXX-db, ...; interfaces in this namespace rlXXXX-db/-rd
SUBNET = f"10.231.{20 + int(KEY[4:8], 16) % 200}"  # the lab's addresses, inside its namespaces
MAX_HOSTS = 8
PG_PORT, REDIS_PORT = 5432, 6379
DB_NAME, DB_USER = "lab", "app"
PEERS = ("db", "redis")
WAYS = ("both", "out", "in")
WORKER_PROGRAMS = ["qcluster", "qcluster-redis"]
RELAY_PROGRAMS = ["relay", "recoverer"]
STOP_GRACE = 10.0


class LabError(Exception):
    pass


@dataclass(frozen=True)
class Host:
    name: str  # ctl, db, redis, relay, w1 ...
    addr: str

    @property
    def ns(self) -> str | None:
        return None if self.name == "ctl" else f"{PREFIX}-{self.name}"

    @property
    def netns(self) -> str:
        """The namespace of a simulated host (ctl, the machine itself, has none)."""
        if self.ns is None:
            raise LabError(f"{self.name} is this machine, not a simulated host")
        return self.ns

    def link(self, peer: str) -> str:
        """This host's end of its link to `peer` (db or redis)."""
        if self.name == "ctl":
            return f"{PREFIX}-{'db' if peer == 'db' else 'rd'}"
        return f"to-{peer}"

    def peer_end(self) -> str:
        """The db's (or redis's) end of this host's link."""
        return f"to-{self.name}"

    @property
    def var(self) -> Path:
        return VAR / self.name


def hosts(n: int) -> list[Host]:
    """The lab's hosts for `n` worker hosts, in start order."""
    fixed = [Host("ctl", f"{SUBNET}.1"), Host("db", f"{SUBNET}.2"), Host("redis", f"{SUBNET}.3"),
             Host("relay", f"{SUBNET}.4")]
    return fixed + [Host(f"w{i}", f"{SUBNET}.{10 + i}") for i in range(1, n + 1)]


def say(message: str) -> None:
    print(f"[lab] {message}", flush=True)


def sh(*cmd: str, ns: str | None = None, check: bool = True, **kwargs) -> str:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, **kwargs)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(full)} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


def namespaces() -> list[str]:
    """This checkout's lab namespaces that exist now."""
    out = sh("ip", "netns", "list", check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}-")]


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces): run it as root")
    if not shutil.which("ip") or not shutil.which("tc"):
        raise LabError("the lab needs iproute2's ip and tc: apt-get install iproute2")


# --- state ----------------------------------------------------------------------------------


def load() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        raise LabError("no lab is up: make lab-up starts one") from None


def lab_hosts(state: dict | None = None) -> list[Host]:
    return hosts((state or load())["workers"])


def host(name: str, state: dict | None = None) -> Host:
    for h in lab_hosts(state):
        if h.name == name:
            return h
    names = ", ".join(h.name for h in lab_hosts(state) if h.name not in ("ctl", "db", "redis"))
    raise LabError(f"no host {name!r} in the lab; its hosts: {names}")


def database_url(state: dict) -> str:
    return (f"postgresql://{DB_USER}:{state['pg_password']}@{SUBNET}.2:{PG_PORT}/{DB_NAME}")


def redis_url(state: dict) -> str:
    return f"redis://{DB_USER}:{state['redis_password']}@{SUBNET}.3:{REDIS_PORT}/0"


def env(state: dict | None = None, *, host_name: str = "ctl") -> dict[str, str]:
    """The environment of a process on `host_name`: the same settings as production
    (DATABASE_URL, REDIS_URL), and the host's name for logs and the job history."""
    state = state or load()
    return {"DATABASE_URL": database_url(state), "REDIS_URL": redis_url(state),
            "HOST_NAME": host_name}


# --- up -------------------------------------------------------------------------------------


def up(*, workers: int = 2, processes: bool = True) -> dict:
    require_root()
    if not 1 <= workers <= MAX_HOSTS:
        raise LabError(f"worker hosts must be a whole number from 1 to {MAX_HOSTS}, "
                       f"not {workers}")
    left = namespaces()
    if left:
        raise LabError(f"a lab is already up (namespace {left[0]} exists): make lab-down "
                       "removes it")
    state = {"workers": workers, "pg_password": secrets.token_urlsafe(18),
             "redis_password": secrets.token_urlsafe(18), "started_at": time.time()}
    VAR.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    STATE.chmod(0o600)
    try:
        network(state)
        start_postgres(state)
        start_redis(state)
        if processes:
            migrate(state)
            start_hosts(state)
    except BaseException:
        with contextlib.suppress(Exception):
            down(quiet=True)
        raise
    return state


def network(state: dict) -> None:
    all_hosts = lab_hosts(state)
    for h in all_hosts:
        if h.ns:
            sh("ip", "netns", "add", h.ns)
            sh("ip", "link", "set", "lo", "up", ns=h.ns)
    for h in all_hosts:
        if h.name in ("db", "redis"):
            continue
        for peer in PEERS:
            p = host(peer, state)
            mine = ["netns", h.ns] if h.ns else []
            sh("ip", "link", "add", h.link(peer), *mine, "type", "veth",
               "peer", "name", h.peer_end(), "netns", p.netns)
            for end, at, ns, other in ((h.link(peer), h.addr, h.ns, p.addr),
                                       (h.peer_end(), p.addr, p.ns, h.addr)):
                ip = ["ip", "-n", ns] if ns else ["ip"]
                sh(*ip, "addr", "add", at, "peer", f"{other}/32", "dev", end)
                sh(*ip, "link", "set", end, "up")
    say(f"network: {len(all_hosts) - 1} namespaces ({PREFIX}-*), addresses {SUBNET}.0/24")


def pg_cluster() -> local_postgres.Cluster:
    root = Path("/tmp") / f"reliable-lab-{KEY[:10]}"
    return local_postgres.Cluster(root=root, data_dir=root / "data", socket_dir=root / "run",
                                  log_file=root / "server.log", port=PG_PORT, run_as="postgres")


def start_postgres(state: dict) -> None:
    c = pg_cluster()
    bindir = local_postgres.ensure_bindir()
    if c.root.exists():
        shutil.rmtree(c.root)
    local_postgres.initdb(c, bindir)
    db = host("db", state)
    extra = (f"\n# the lab's database host (devtools/lab.py)\nlisten_addresses = '{db.addr}'\n"
             "password_encryption = 'scram-sha-256'\nmax_connections = 200\n")
    hba = ("local all postgres trust\n"
           f"host {DB_NAME} {DB_USER} {SUBNET}.0/24 scram-sha-256\n")
    for name, text, mode in (("postgresql.conf", extra, "a"), ("pg_hba.conf", hba, "w")):
        subprocess.run(["runuser", "-u", "postgres", "--", "sh", "-c",
                        f"cat {'>>' if mode == 'a' else '>'} {c.data_dir / name}"],
                       input=text.encode(), check=True)
    r = subprocess.run(["ip", "netns", "exec", db.netns, "runuser", "-u", "postgres", "--",
                        str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(c.data_dir),
                        "-l", str(c.log_file)], capture_output=True, text=True)
    if r.returncode:
        tail = c.log_file.read_text()[-1500:] if c.log_file.exists() else r.stderr
        raise LabError(f"PostgreSQL did not start on the db host:\n{tail}")
    psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{state['pg_password']}'")
    psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
    say(f"db: PostgreSQL on {db.addr}:{PG_PORT}, scram-sha-256, role {DB_USER} (not a "
        f"superuser), log {c.log_file}")


def psql(sql: str, *, database: str = "postgres") -> str:
    """As the superuser, over the server's unix socket (the lab's administrator, not the app)."""
    c = pg_cluster()
    bindir = local_postgres.ensure_bindir()
    return sh(str(bindir / "psql"), "-h", str(c.socket_dir), "-p", str(PG_PORT), "-U",
              "postgres", "-d", database, "-tAqc", sql)


def start_redis(state: dict) -> None:
    binary = local_redis.ensure_installed()
    r = host("redis", state)
    d = r.var
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "redis.conf"
    conf.write_text(
        "# the lab's Redis host (devtools/lab.py)\n"
        f"bind {r.addr}\nport {REDIS_PORT}\nprotected-mode yes\ndaemonize yes\n"
        f"pidfile {d / 'redis.pid'}\nlogfile {d / 'redis.log'}\ndir {d}\n"
        "appendonly yes\nappendfsync everysec\nsave \"\"\nloglevel warning\n"
        "user default off\n"
        f"user {DB_USER} on >{state['redis_password']} ~* &* +@all\n")
    conf.chmod(0o600)
    sh(binary, str(conf), ns=r.ns)
    deadline = time.monotonic() + 10
    while "PONG" not in sh("redis-cli", "-h", r.addr, "-p", str(REDIS_PORT), "--user", DB_USER,
                           "--pass", state["redis_password"], "--no-auth-warning", "PING",
                           check=False):
        if time.monotonic() > deadline:
            raise LabError(f"Redis did not answer on {r.addr}:{REDIS_PORT}; see {d}/redis.log")
        time.sleep(0.1)
    say(f"redis: Redis on {r.addr}:{REDIS_PORT}, ACL user {DB_USER} (default user off)")


def python() -> str:
    return str(BASE_DIR / ".venv" / "bin" / "python")


def manage(*args: str, state: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`manage.py ARGS` on the control host, against the lab's database and Redis."""
    return subprocess.run([python(), "manage.py", *args], cwd=BASE_DIR,
                          env={**os.environ, **env(state)}, **kwargs)


def migrate(state: dict) -> None:
    r = manage("migrate", "--no-input", "-v", "0", state=state, capture_output=True, text=True)
    if r.returncode:
        raise LabError(f"migrate failed on the lab's database: {r.stderr.strip()[-800:]}")
    say("db: migrated")


def host_env(state: dict, h: Host) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**base, **env(state, host_name=h.name), "LOG_LEVEL": "INFO"}


def start_hosts(state: dict) -> None:
    for h in lab_hosts(state):
        if h.name == "relay" or h.name.startswith("w"):
            names = RELAY_PROGRAMS if h.name == "relay" else WORKER_PROGRAMS
            code = supervise.start(names, var=h.var, env=host_env(state, h),
                                   prefix=["ip", "netns", "exec", h.netns], check=False)
            if code:
                raise LabError(f"supervisord did not start on {h.name}; see {h.var}/log/")
    for h in lab_hosts(state):
        if h.name == "relay" or h.name.startswith("w"):
            names = RELAY_PROGRAMS if h.name == "relay" else WORKER_PROGRAMS
            if supervise.check_started(names, h.var, quiet=True):
                raise LabError(f"a program exited at once on {h.name}; see {h.var}/log/")
    workers = ", ".join(h.name for h in lab_hosts(state) if h.name.startswith("w"))
    say(f"hosts: relay (relay, recoverer), {workers} (qcluster, qcluster-redis), each under "
        "its own supervisord")


# --- faults ---------------------------------------------------------------------------------


def _ends(h: Host, peer: str, way: str, state: dict) -> list[tuple[str | None, str]]:
    """(namespace, interface) whose egress drops the packets of this partition."""
    p = host(peer, state)
    ends = []
    if way in ("both", "out"):
        ends.append((h.ns, h.link(peer)))
    if way in ("both", "in"):
        ends.append((p.ns, h.peer_end()))
    return ends


def partition(name: str, *, peer: str = "all", way: str = "both") -> None:
    """Cut `name` off from `peer` (db, redis or all), one way or both: packets are dropped
    silently (no RST, no ICMP), as on a real network."""
    state = load()
    if peer not in (*PEERS, "all"):
        raise LabError(f"a partition is from db, redis or all, not {peer!r}")
    if way not in WAYS:
        raise LabError(f"a partition's way is both, out or in, not {way!r}")
    h = host(name, state)
    if h.name in PEERS:
        raise LabError(f"{name} is a store; cut a host off from it instead")
    for p in (PEERS if peer == "all" else (peer,)):
        for ns, dev in _ends(h, p, way, state):
            tc = ["tc", "-n", ns] if ns else ["tc"]
            sh(*tc, "qdisc", "replace", "dev", dev, "root", "blackhole")


def heal(name: str) -> None:
    state = load()
    h = host(name, state)
    for p in PEERS:
        for ns, dev in _ends(h, p, "both", state):
            tc = ["tc", "-n", ns] if ns else ["tc"]
            sh(*tc, "qdisc", "del", "dev", dev, "root", check=False)


def pids(name: str) -> list[int]:
    """Every process running in host `name`'s namespace."""
    h = host(name)
    out = sh("ip", "netns", "pids", h.netns, check=False)
    return [int(p) for p in out.split()]


def programs(name: str) -> dict[str, dict]:
    """The host's supervisord programs: {name: {"pid": ..., "statename": ...}}."""
    return supervise.programs(host(name).var)


def terminate_sessions(name: str) -> int:
    """End every database session of host `name` (pg_terminate_backend), as a server or a
    proxy does to a peer it thinks is gone; returns how many."""
    h = host(name)
    out = psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
               f"WHERE client_addr = '{h.addr}'")
    return int(out.strip() or 0)


def faketime_env(seconds: float) -> dict[str, str]:
    """The environment that shifts a process's clock by `seconds` (libfaketime, Debian's
    faketime package, installed with apt as root when missing). It shifts every clock read
    through the C library, the monotonic ones too (with FAKETIME_DONT_FAKE_MONOTONIC Python's
    sleep fails with EINVAL); pgbroker.history reads the kernel's monotonic clock past it."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing faketime (apt) to shift a host's clock")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "faketime"]):
            subprocess.run(cmd, env=env, capture_output=True, check=False)
        found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise LabError("shifting a clock needs libfaketime: apt-get install faketime")
    return {"LD_PRELOAD": found[0], "FAKETIME": f"{seconds:+g}s"}


def ns_prefix(name: str) -> list[str]:
    """The command prefix that runs a program on host `name`."""
    return ["ip", "netns", "exec", host(name).netns]


def restart_postgres(*, mode: str = "immediate") -> None:
    """Restart the database host's PostgreSQL (`immediate`: a crash and its recovery)."""
    c = pg_cluster()
    bindir = local_postgres.ensure_bindir()
    r = subprocess.run([*ns_prefix("db"), "runuser", "-u", "postgres", "--",
                        str(bindir / "pg_ctl"), "restart", "-w", "-t", "60", "-m", mode,
                        "-D", str(c.data_dir), "-l", str(c.log_file)],
                       capture_output=True, text=True)
    if r.returncode:
        raise LabError(f"pg_ctl restart failed on the db host: {r.stderr.strip()[-300:]}")


def restart_redis() -> None:
    """Stop the Redis host's server (SIGTERM: it writes its append-only file) and start it."""
    state = load()
    pid_file = host("redis", state).var / "redis.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    start_redis(state)


# --- down -----------------------------------------------------------------------------------


def down(*, quiet: bool = False) -> None:
    require_root()
    found = namespaces()
    for name in found:
        var = VAR / name.removeprefix(f"{PREFIX}-")
        if supervise.supervisord_pid(var):
            supervise.stop(var=var, python=python(), quiet=True)
    for name in found:  # whatever is left: the servers, a crashed run's processes
        _kill_namespace(name)
    for name in found:
        sh("ip", "netns", "delete", name, check=False)
    c = pg_cluster()
    if c.root.exists():
        shutil.rmtree(c.root, ignore_errors=True)
    for peer in ("db", "rd"):  # the veth pairs die with their other end; be sure
        sh("ip", "link", "delete", f"{PREFIX}-{peer}", check=False)
    with contextlib.suppress(FileNotFoundError):
        STATE.unlink()
    if not quiet:
        say(f"down: removed {len(found)} namespace(s) and everything in them" if found
            else "down: no lab was up")


def _kill_namespace(ns: str) -> None:
    out = sh("ip", "netns", "pids", ns, check=False)
    targets = [int(p) for p in out.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, sig)
        deadline = time.monotonic() + (STOP_GRACE if sig == signal.SIGTERM else 5)
        while any(alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        targets = [p for p in targets if alive(p)]
        if not targets:
            return


# --- the command line -----------------------------------------------------------------------


def status() -> int:
    found = namespaces()
    if not found:
        say("down")
        return 3
    state = load()
    say(f"up since {time.strftime('%H:%M:%S', time.localtime(state['started_at']))}: "
        f"{len(found)} namespaces, {state['workers']} worker host(s)")
    for h in lab_hosts(state):
        if h.name == "ctl":
            continue
        line = f"  {h.name:<6} {h.addr:<15} {len(pids(h.name))} process(es)"
        if (h.var / "run" / "supervisor.sock").exists() and supervise.supervisord_pid(h.var):
            line += "  " + ", ".join(f"{n} {i['statename'].lower()}"
                                     for n, i in programs(h.name).items())
        cut = [f"{h.name}->{peer}" if ns == h.ns else f"{peer}->{h.name}"
               for peer in (PEERS if h.name not in PEERS else ())
               for ns, dev in _ends(h, peer, "both", state)
               if "blackhole" in sh(*(["tc", "-n", ns] if ns else ["tc"]), "qdisc", "show",
                                    "dev", dev, check=False)]
        if cut:
            line += f"  PARTITIONED ({', '.join(cut)})"
        print(line)
    return 0


def _up_verb(rest: list[str]) -> None:
    workers, processes = 2, True
    args = list(rest)
    while args:
        arg = args.pop(0)
        if arg == "--hosts" and args:
            value = args.pop(0)
            try:
                workers = int(value)
            except ValueError:
                raise LabError(f"--hosts must be a whole number from 1 to {MAX_HOSTS}, "
                               f"not {value!r}") from None
        elif arg == "--no-processes":
            processes = False
        else:
            raise LabError(f"unknown argument {arg!r}: up [--hosts N] [--no-processes]")
    state = up(workers=workers, processes=processes)
    say(f"up. From this machine: {' '.join(f'{k}=...' for k in env(state))} "
        "(python3 devtools/lab.py env); stop with: make lab-down")


def _env_verb(rest: list[str]) -> None:
    for key, value in env().items():
        print(f"export {key}='{value}'")


def _partition_verb(rest: list[str]) -> None:
    if not rest:
        raise LabError("partition needs a host: partition HOST [db|redis|all] [both|out|in]")
    partition(rest[0], peer=rest[1] if len(rest) > 1 else "all",
              way=rest[2] if len(rest) > 2 else "both")


def _heal_verb(rest: list[str]) -> None:
    if not rest:
        raise LabError("heal needs a host: heal HOST")
    heal(rest[0])


def _exec_verb(rest: list[str]) -> int:
    if len(rest) < 3 or rest[1] != "--":
        raise LabError("exec needs a host and a command: exec HOST -- CMD ...")
    state = load()
    h = host(rest[0], state)
    return subprocess.call(["ip", "netns", "exec", h.netns, *rest[2:]],
                           env={**os.environ, **env(state, host_name=h.name)})


def main(argv: list[str]) -> int:
    return cli.main(argv, name="lab", doc=__doc__, error=LabError, verbs={
        "up": _up_verb,
        "down": lambda rest: down(),
        "status": lambda rest: status(),
        "env": _env_verb,
        "partition": _partition_verb,
        "heal": _heal_verb,
        "exec": _exec_verb,
    })


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
