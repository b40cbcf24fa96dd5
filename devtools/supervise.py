"""`make run` under supervisor: the web server, the two django-q2 clusters (PostgreSQL, and
Redis in Sidekiq's role), the outbox relay and the saga recoverer, each started again by
supervisord when it dies (standard library only: it drives .venv/bin/supervisord).

The web server follows DEBUG (read like settings.py reads it, common/env.py): with DEBUG on,
runserver; with DEBUG off, gunicorn (WEB_CONCURRENCY workers, default 2) serving the static
files through whitenoise, after `collectstatic` into var/static (STATIC_ROOT), with its access
log in var/log/web.log (docs/production.md).

Why supervisor: honcho stops everything when one process dies and restarts nothing; circus is
less maintained; supervisor restarts what dies (autorestart), stops by the rules below
(stopsignal, stopwaitsecs, stopasgroup, killasgroup), keeps a log per program and answers
`supervisorctl status`.

Stopping keeps django-q2's rules (docs/design.md). supervisord starts each program in a process
group of its own; a stop sends SIGTERM to the main pid only (stopsignal=TERM,
stopasgroup=false: a SIGTERM to the whole group can hang qcluster), waits (stopwaitsecs: 45 s
for a cluster, 10 s for the others), then SIGKILLs the whole group (killasgroup=true: a SIGKILL
of the main pid alone leaves its children consuming the queue). After `stop`, a process still
left in a program's group is SIGKILLed too.

`start` writes the configuration from PROGRAMS to var/run/supervisord.conf. supervisord listens
on var/run/supervisor.sock only (no TCP), keeps its pid in var/run/supervisord.pid and its log
in var/log/supervisord.log; each program logs stdout and stderr to var/log/NAME.log.

    python3 devtools/supervise.py start|stop|status
    .venv/bin/supervisorctl -c var/run/supervisord.conf status|restart relay|tail -f web
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: python3 devtools/supervise.py
    sys.path.insert(0, str(BASE_DIR))

from common import env as settings_env  # noqa: E402  (standard library only)
from devtools.processes import alive, group_members  # noqa: E402

VAR = BASE_DIR / "var"
PYTHON = str(BASE_DIR / ".venv" / "bin" / "python")
START_CHECK_SECONDS = 3.0  # a program that exits within this after `start` is reported
SHUTDOWN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Program:
    # manage.py's arguments, or with `runner` that program's (from the venv's bin/);
    # "{run_addr}" is the web server's address, "{var}" the var/ directory, "{workers}" the
    # web server's worker processes
    args: list[str]
    stopwaitsecs: int = 10  # SIGTERM to the main pid, then this long before SIGKILL of the group
    env: dict[str, str] = field(default_factory=dict)
    runner: str = "manage.py"
    production: Program | None = None  # what runs instead when DEBUG is off


# The production web server: gunicorn's master forks WEB_CONCURRENCY sync workers and restarts
# any that dies; SIGTERM stops it gracefully (requests in flight get --graceful-timeout, within
# stopwaitsecs). Access log and errors go to stdout: supervisord writes them to var/log/web.log.
# Its control socket goes to var/run/, not the default ~/.gunicorn/ that every checkout shares.
GUNICORN = Program(
    ["project.wsgi:application", "--bind", "{run_addr}", "--workers", "{workers}",
     "--access-logfile", "-", "--error-logfile", "-", "--graceful-timeout", "8",
     "--control-socket", "{var}/run/gunicorn.ctl"],
    runner="gunicorn",
)

# In start order; stopped all at once.
PROGRAMS: dict[str, Program] = {
    "web": Program(["runserver", "{run_addr}", "--noreload"], production=GUNICORN),
    "qcluster": Program(["qcluster"], stopwaitsecs=45),
    # django-q2's own multi-cluster setting picks the Redis cluster's configuration (settings.py).
    "qcluster-redis": Program(["qcluster"], stopwaitsecs=45, env={"Q_CLUSTER_NAME": "redis"}),
    "relay": Program(["relay_outbox", "--follow"]),
    "recoverer": Program(["recover_sagas", "--follow"]),
}
# Demo timing (DEBUG on only): a 10 s task timeout gives a 40 s lease, so a failed or crashed
# job comes back within a minute instead of two. Set either yourself to override.
DEMO_ENV = {"Q_TIMEOUT": "10", "LOG_LEVEL": "INFO"}
PRODUCTION_ENV = {"LOG_LEVEL": "INFO"}


def debug(env: dict[str, str] | None = None) -> bool:
    """DEBUG as settings.py reads it (on unless set to 0/false/no/off)."""
    return settings_env.boolean("DEBUG", True, environ=os.environ if env is None else env)


def web_workers(env: dict[str, str] | None = None) -> int:
    """gunicorn's worker processes: WEB_CONCURRENCY (gunicorn's own variable), default 2."""
    return settings_env.integer("WEB_CONCURRENCY", 2, low=1, high=64,
                                environ=os.environ if env is None else env)


def paths(var: Path) -> dict[str, Path]:
    return {"conf": var / "run" / "supervisord.conf", "sock": var / "run" / "supervisor.sock",
            "pid": var / "run" / "supervisord.pid", "log": var / "log" / "supervisord.log"}


def shown(path: Path) -> str:
    """`path` as a person types it: relative to the checkout when it is inside it."""
    try:
        return str(path.relative_to(BASE_DIR))
    except ValueError:
        return str(path)


def config(names: list[str], *, var: Path, python: str, run_addr: str,
           env: dict[str, str] | None = None) -> str:
    """supervisord's configuration for the programs `names`; `env` (default: ours) decides
    DEBUG's web server and its workers."""
    p = paths(var)
    production = not debug(env)
    workers = web_workers(env) if production else 1

    def section(title: str, **options: object) -> str:
        lines = [f"[{title}]"]
        for key, value in options.items():
            # supervisor expands %(name)s in values: a literal % is written %%
            lines.append(f"{key}={str(value).replace('%', '%%')}")
        return "\n".join(lines) + "\n"

    parts = [
        "; Written by devtools/supervise.py at each `make run`: edit PROGRAMS there.\n",
        section("unix_http_server", file=p["sock"], chmod="0700"),
        section("supervisord", logfile=p["log"], pidfile=p["pid"], childlogdir=var / "log",
                directory=BASE_DIR,
                # as root, say so: supervisord then keeps quiet about not dropping privileges
                **({"user": "root"} if os.geteuid() == 0 else {})),
        section("rpcinterface:supervisor",
                **{"supervisor.rpcinterface_factory":
                   "supervisor.rpcinterface:make_main_rpcinterface"}),
        section("supervisorctl", serverurl=f"unix://{p['sock']}"),
    ]
    for priority, name in enumerate(names, start=1):
        program = PROGRAMS[name]
        if production and program.production:
            program = program.production
        args = [a.format(run_addr=run_addr, var=var, workers=workers) for a in program.args]
        runner = ([python, "manage.py"] if program.runner == "manage.py"
                  else [str(Path(python).parent / program.runner)])
        program_env = {"PYTHONUNBUFFERED": "1", **program.env}
        parts.append(section(
            f"program:{name}",
            command=shlex.join([*runner, *args]),  # supervisord splits it with shlex
            directory=BASE_DIR,
            environment=",".join(f'{k}="{v}"' for k, v in program_env.items()),
            priority=priority,
            autostart="true",
            autorestart="true",  # whatever the exit: a killed relay comes back by itself
            startsecs=1,  # alive 1 s counts as started
            startretries=5,  # exits within 1 s, 5 times in a row (15 s of backoff): FATAL
            stopsignal="TERM",
            stopwaitsecs=program.stopwaitsecs,
            stopasgroup="false",
            killasgroup="true",
            redirect_stderr="true",
            stdout_logfile=var / "log" / f"{name}.log",
        ))
    return "\n".join(parts)


class _UnixSocketTransport(xmlrpc.client.Transport):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = str(path)

    def make_connection(self, host):
        conn = http.client.HTTPConnection("localhost")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(self.path)
        return conn


def rpc(var: Path = VAR):
    """supervisord's XML-RPC interface (`supervisor.getAllProcessInfo()`, ...)."""
    transport = _UnixSocketTransport(paths(var)["sock"])
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport).supervisor


def programs(var: Path = VAR) -> dict[str, dict]:
    """Each program's state as supervisord says: statename, pid (0 when not running), ..."""
    return {info["name"]: info for info in rpc(var).getAllProcessInfo()}


def supervisord_pid(var: Path = VAR) -> int | None:
    """The pid of the supervisord that answers on the socket, or None."""
    try:
        return rpc(var).getPID()
    except (OSError, xmlrpc.client.Error):
        return None


def ctl(var: Path, python: str, *args: str, quiet: bool = False) -> int:
    supervisorctl = str(Path(python).parent / "supervisorctl")
    return subprocess.call([supervisorctl, "-c", str(paths(var)["conf"]), *args],
                           stdout=subprocess.DEVNULL if quiet else None)


def start(names: list[str] | None = None, *, var: Path = VAR, python: str = PYTHON,
          env: dict[str, str] | None = None, run_addr: str | None = None,
          prefix: list[str] | None = None, check: bool = True) -> int:
    """Start supervisord with `names` (default: all), unless it runs already; report a
    program that exits at once (unless `check` is off: `check_started` later). `env`
    (default: ours) is the programs' environment; `prefix` runs supervisord, and so its
    programs, through a command (the lab's `ip netns exec HOST`)."""
    names = names or list(PROGRAMS)
    env = dict(os.environ if env is None else env)
    try:
        production = not debug(env)
        conf = config(names, var=var, python=python, env=env,
                      run_addr=run_addr or env.get("RUN_ADDR", "127.0.0.1:8000"))
    except settings_env.EnvError as e:
        print(e, file=sys.stderr)
        return 1
    for key, value in (PRODUCTION_ENV if production else DEMO_ENV).items():
        env.setdefault(key, value)
    p = paths(var)
    pid = supervisord_pid(var)
    if pid:
        print(f"supervisord already running (pid {pid}): make status shows its programs")
        return 0
    supervisord = Path(python).parent / "supervisord"
    if not supervisord.exists():
        print(f"{shown(supervisord)} is missing: make venv installs it", file=sys.stderr)
        return 1
    if production and "web" in names and collectstatic(python, env):
        return 1
    for d in (var / "run", var / "log"):
        d.mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(conf)
    # It returns once it listens on its socket and has forked into the background.
    if subprocess.call([*(prefix or []), str(supervisord), "-c", str(p["conf"])], env=env,
                       cwd=BASE_DIR):
        print(f"supervisord did not start; see {shown(p['log'])}", file=sys.stderr)
        return 1
    return check_started(names, var) if check else 0


def collectstatic(python: str, env: dict[str, str]) -> int:
    """With DEBUG off: the static files into STATIC_ROOT (var/static), compressed and
    fingerprinted, for whitenoise to serve. Its exit code (manage.py said why)."""
    code = subprocess.call([python, "manage.py", "collectstatic", "--no-input", "-v", "0"],
                           env=env, cwd=BASE_DIR)
    if code == 0:
        print(f"{'static files':<14} collected into {shown(_static_root(env))}")
    return code


def _static_root(env: dict[str, str]) -> Path:
    return Path(settings_env.text("STATIC_ROOT", str(VAR / "static"), environ=env))


def check_started(names: list[str], var: Path, *, quiet: bool = False) -> int:
    """Watch the programs for START_CHECK_SECONDS: each must be RUNNING under one pid."""
    pids: dict[str, set[int]] = {name: set() for name in names}
    deadline = time.monotonic() + START_CHECK_SECONDS
    while True:
        infos = programs(var)
        for name in names:
            if infos[name]["pid"]:
                pids[name].add(infos[name]["pid"])
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    failed = 0
    for name in names:
        info, log = infos[name], var / "log" / f"{name}.log"
        if info["statename"] == "RUNNING" and len(pids[name]) == 1:
            if not quiet:
                print(f"{name:<14} started (pid {info['pid']}, log {shown(log)})")
            continue
        failed += 1
        print(f"{name} exited at once (started {len(pids[name])} times in "
              f"{START_CHECK_SECONDS:g} s, now {info['statename']}); see {shown(log)}:\n"
              f"    {_last_line(log)}", file=sys.stderr)
    if failed:
        print("the others run on under supervisord: make status shows them, make stop stops "
              "them", file=sys.stderr)
    return 1 if failed else 0


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def stop(*, var: Path = VAR, python: str = PYTHON, quiet: bool = False) -> int:
    """Stop every program by its rules, then supervisord; then SIGKILL whatever is left in a
    program's process group."""
    pid = supervisord_pid(var)
    if pid is None:
        if not quiet:
            print("supervisord    not running")
        return 0
    groups = {name: info["pid"] for name, info in programs(var).items() if info["pid"]}
    ctl(var, python, "stop", "all", quiet=quiet)
    ctl(var, python, "shutdown", quiet=quiet)
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while alive(pid):
        if time.monotonic() > deadline:
            print(f"supervisord (pid {pid}) did not exit in {SHUTDOWN_TIMEOUT:g} s: SIGTERM",
                  file=sys.stderr)
            os.kill(pid, signal.SIGTERM)
            break
        time.sleep(0.1)
    for name, pgid in groups.items():
        left = group_members(pgid)
        if left:
            print(f"{name}: {len(left)} process(es) of its group left: SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    return 0


def status(*, var: Path = VAR, python: str = PYTHON) -> int:
    """Each program's state and pid (supervisorctl status); 3 unless all are running."""
    pid = supervisord_pid(var)
    if pid is None:
        print("supervisord    stopped")
        return 3
    print(f"supervisord    running (pid {pid}, log {shown(paths(var)['log'])})")
    return 0 if ctl(var, python, "status") == 0 else 3


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else ""
    if verb == "start":
        return start()
    if verb == "stop":
        return stop()
    if verb == "status":
        return status()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
