"""The project-local Redis (the talk's second store, where Sidekiq keeps its jobs).

Standard library only, like local_postgres.py: the Makefile runs it with the system Python before
the venv exists, and settings import `default_redis_url()` from it.

Debian's `redis-server`, listening on a unix socket only (no TCP), with its data, log and pid
file under var/redis/ and append-only persistence on (`appendfsync everysec`). As root it is
installed with apt when missing; otherwise it says what to install.

With REDIS_URL pointing at another server, nothing here starts or stops anything (the
project's server). Another server lives under LOCAL_REDIS_DIR, or under the `where` the functions
take: the experiments' own (var/experiment-redis, experiments/servers.py), the only one an
experiment restarts.

    python3 devtools/local_redis.py start|stop|status|url|install
    python3 devtools/local_redis.py run -- CMD...  # start if needed, run CMD, stop if we did
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: python3 devtools/local_redis.py
    sys.path.insert(0, str(BASE_DIR))

from devtools import cli  # noqa: E402

SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
INSTALL_HINT = "redis-server is not installed: sudo apt-get install redis-server"


class LocalRedisError(Exception):
    pass


@dataclass(frozen=True)
class Server:
    root: Path
    socket: Path
    pid_file: Path
    log_file: Path
    conf: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"


def server(where: str | None = None) -> Server:
    """var/redis/, or LOCAL_REDIS_DIR (relative to the project): a second local server, for
    tests that stop theirs while others run (`make test`'s browser pass); or `where`."""
    root = BASE_DIR / (where or os.environ.get("LOCAL_REDIS_DIR") or "var/redis")
    sock = root / "redis.sock"
    if len(str(sock)) > SOCKET_PATH_LIMIT:
        key = hashlib.sha1(str(root).encode()).hexdigest()[:10]
        sock = Path("/tmp") / f"reliable-redis-{key}" / "redis.sock"
    return Server(root=root, socket=sock, pid_file=root / "redis.pid",
                  log_file=root / "redis.log", conf=root / "redis.conf")


def default_redis_url() -> str:
    return server().url


def with_db(url: str, db: int) -> str:
    """The same Redis server, database `db` (unix:///path?db=N or redis://host:port/N)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if url.startswith("unix://"):
        base, _, query = url.partition("?")
        params = [(k, v) for k, v in parse_qsl(query) if k != "db"] + [("db", str(db))]
        return f"{base}?{urlencode(params)}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def external() -> bool:
    """Does REDIS_URL point at a server other than this project's own?"""
    url = os.environ.get("REDIS_URL", "")
    if not url:
        return False
    return not (url.startswith("unix://")
                and url[len("unix://"):].partition("?")[0] == str(server().socket))


def say(msg: str) -> None:
    print(f"[local_redis] {msg}", flush=True)


def available() -> bool:
    """Can a server be started here: redis-server is installed, or can be (root, apt)?"""
    return shutil.which("redis-server") is not None or (
        hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None)


def ensure_installed() -> str:
    """The path of redis-server, installing Debian's package as root when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        raise LocalRedisError(INSTALL_HINT)
    say("installing redis-server (apt) for the project-local Redis")
    policy = Path("/usr/sbin/policy-rc.d")
    guard = not policy.exists()
    if guard:  # the package must not start a system-wide Redis on port 6379
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "redis-server"]):
            r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
            if r.returncode != 0:
                raise LocalRedisError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    finally:
        if guard:
            policy.unlink()
    found = shutil.which("redis-server")
    if not found:
        raise LocalRedisError(INSTALL_HINT)
    return found


def command(s: Server, *args: str, timeout: float = 2.0) -> str:
    """Send one command over the socket (RESP), return the first reply line."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(s.socket))
        conn.sendall(payload.encode())
        return conn.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def is_running(s: Server) -> bool:
    try:
        return command(s, "PING") == "+PONG"
    except OSError:
        return False


def pid_of(s: Server) -> int | None:
    try:
        pid = int(s.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def write_conf(s: Server) -> None:
    s.root.mkdir(parents=True, exist_ok=True)
    s.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    s.conf.write_text(
        "# project-local Redis (devtools/local_redis.py)\n"
        "port 0\n"
        f"unixsocket {s.socket}\n"
        "unixsocketperm 700\n"
        "daemonize yes\n"
        f"pidfile {s.pid_file}\n"
        f"logfile {s.log_file}\n"
        f"dir {s.root}\n"
        "appendonly yes\n"
        "appendfsync everysec\n"
        'save ""\n'
        "loglevel warning\n"
    )


def start(where: str | None = None) -> bool:
    """Start the server if it is not running. True if this call started it. `where`: another
    server than the project's (REDIS_URL does not concern it)."""
    if where is None and external():
        say("REDIS_URL is set: using that server, starting nothing")
        return False
    s = server(where)
    if is_running(s):
        return False
    binary = ensure_installed()
    write_conf(s)
    say(f"starting Redis on socket {s.socket} (log {s.log_file})")
    r = subprocess.run([binary, str(s.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise LocalRedisError(f"redis-server failed to start: {r.stderr.strip()[-500:]}")
    deadline = time.monotonic() + START_TIMEOUT
    while not is_running(s):
        if time.monotonic() > deadline:
            tail = s.log_file.read_text()[-2000:] if s.log_file.exists() else ""
            raise LocalRedisError(f"Redis did not answer within {START_TIMEOUT:g} s.\n{tail}")
        time.sleep(0.05)
    return True


def stop(where: str | None = None, *, quiet: bool = False) -> None:
    """Stop the server (SIGTERM: it writes its append-only file and exits)."""
    if where is None and external():
        say("REDIS_URL is set: nothing to stop")
        return
    s = server(where)
    pid = pid_of(s)
    if pid is None:
        if not quiet:
            say("not running")
        return
    if not quiet:
        say("stopping Redis")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_of(s) == pid:
        if time.monotonic() > deadline:
            raise LocalRedisError(f"Redis (pid {pid}) did not stop within {STOP_TIMEOUT:g} s")
        time.sleep(0.05)


def status() -> int:
    if external():
        say("REDIS_URL is set: the project uses that server")
        return 0
    s = server()
    running = is_running(s)
    say(f"{'running' if running else 'stopped'}: socket {s.socket}, data {s.root}")
    return 0 if running else 3


def main(argv: list[str]) -> int:
    return cli.main(argv, name="local_redis", doc=__doc__, error=LocalRedisError, verbs={
        "start": lambda rest: start() and None,
        "stop": lambda rest: stop(),
        "status": lambda rest: status(),
        "install": lambda rest: say(f"redis-server: {ensure_installed()}"),
        "url": lambda rest: print(os.environ.get("REDIS_URL") or default_redis_url()),
        "run": cli.run_verb("local_redis", LocalRedisError, start=start, stop=stop),
    })


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
