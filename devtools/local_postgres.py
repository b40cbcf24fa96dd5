"""The project-local PostgreSQL cluster (the talk's `make pg-init pg-start`).

Standard library only: the Makefile runs it with the system Python before the venv exists,
and settings import `default_database_url()` from it, so both agree on where the cluster is.

The cluster listens on a unix socket only (no TCP), in a directory of its own, on port
PGPORT (default 54329, which names the socket file). As a normal user it runs as that user
with its data under var/pg/. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` system user with its data under /tmp/reliable-pg-<hash of the checkout path>/,
which that user can reach and which two clones never share.

With DATABASE_URL set, nothing here starts or stops anything (the project's cluster). Another
cluster lives under LOCAL_PG_DIR (relative to the project, default var/pg), or under the
`where` the functions take: the experiments' own (var/experiment-pg, experiments/servers.py),
the only one an experiment restarts.

    python3 devtools/local_postgres.py start|stop|status|reset|url
    python3 devtools/local_postgres.py restart [fast|immediate]
    python3 devtools/local_postgres.py run -- CMD...  # start if needed, run CMD, stop if we did
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: python3 devtools/local_postgres.py
    sys.path.insert(0, str(BASE_DIR))

from devtools import cli  # noqa: E402

DB_NAME = os.environ.get("PGDATABASE_NAME", "reliable")
DB_USER = "postgres"
SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


class LocalPostgresError(Exception):
    pass


@dataclass(frozen=True)
class Cluster:
    root: Path
    data_dir: Path
    socket_dir: Path
    log_file: Path
    port: int
    run_as: str | None  # system user to run the server as (root case), or None for ourselves
    where: str = ""  # the project's directory for it (var/pg): a link to `root` as root

    @property
    def url(self) -> str:
        quoted = str(self.socket_dir).replace("/", "%2F")
        return f"postgresql://{DB_USER}@{quoted}:{self.port}/{DB_NAME}"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


DEFAULT_DIR = "var/pg"


def cluster(where: str | None = None) -> Cluster:
    """The cluster under `where` (default: LOCAL_PG_DIR, else var/pg), relative to the project."""
    where = where or os.environ.get("LOCAL_PG_DIR") or DEFAULT_DIR
    port = int(os.environ.get("PGPORT_LOCAL", "54329"))
    # var/pg's key is the checkout's path alone, as it always was; another cluster's has `where`
    key = hashlib.sha1((str(BASE_DIR) if where == DEFAULT_DIR else f"{BASE_DIR}/{where}")
                       .encode()).hexdigest()[:10]
    if is_root():
        root = Path("/tmp") / f"reliable-pg-{key}"
        run_as = "postgres"
    else:
        root = BASE_DIR / where
        run_as = None
    socket_dir = root / "run"
    if len(str(socket_dir)) + 16 > SOCKET_PATH_LIMIT:
        socket_dir = Path("/tmp") / f"reliable-pg-sock-{key}"
    return Cluster(
        root=root,
        data_dir=root / "data",
        socket_dir=socket_dir,
        log_file=root / "server.log",
        port=port,
        run_as=run_as,
        where=where,
    )


def default_database_url() -> str:
    return cluster().url


def available() -> bool:
    """Can a cluster be started here: the server programs are installed, or can be (root)?"""
    return find_bindir() is not None or (is_root() and shutil.which("apt-get") is not None)


def find_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def ensure_bindir() -> Path:
    bindir = find_bindir()
    if bindir:
        return bindir
    if is_root() and shutil.which("apt-get"):
        say("PostgreSQL server binaries not found: installing them with apt-get (postgresql)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        bindir = find_bindir()
        if bindir:
            return bindir
    raise LocalPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under "
        "/usr/lib/postgresql/*/bin.\nInstall them, e.g. 'sudo apt-get install postgresql' on "
        "Debian/Ubuntu or 'brew install postgresql@15' on macOS, or set DATABASE_URL to an "
        "existing server."
    )


def say(message: str) -> None:
    print(f"[local_postgres] {message}", flush=True)


def _as_owner(cmd: list[str], c: Cluster) -> list[str]:
    if c.run_as:
        return ["runuser", "-u", c.run_as, "--", *cmd]
    return cmd


def _run(cmd: list[str], c: Cluster, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_as_owner(cmd, c), **kwargs)


def _prepare_dirs(c: Cluster) -> None:
    for d in (c.root, c.socket_dir):
        d.mkdir(parents=True, exist_ok=True)
        if c.run_as:
            shutil.chown(d, user=c.run_as, group=c.run_as)
        d.chmod(0o700)
    if c.run_as:
        # Point var/pg at the real location so people can find the logs.
        link = BASE_DIR / (c.where or DEFAULT_DIR)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(c.root)


def initdb(c: Cluster, bindir: Path) -> None:
    if (c.data_dir / "PG_VERSION").exists():
        return
    _prepare_dirs(c)
    say(f"initdb {c.data_dir}")
    _run(
        [
            str(bindir / "initdb"),
            "-D", str(c.data_dir),
            "-U", DB_USER,
            "--auth=trust",  # unix socket only, in a 0700 directory: only this user (and root)
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        c,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    conf = c.data_dir / "postgresql.conf"
    extra = (
        "\n# project-local cluster (devtools/local_postgres.py)\n"
        "listen_addresses = ''\n"
        f"port = {c.port}\n"
        f"unix_socket_directories = '{c.socket_dir}'\n"
        "max_connections = 100\n"
        "shared_buffers = 128MB\n"
        "fsync = on\n"
        "log_min_messages = warning\n"
    )
    if c.run_as:
        _run(["sh", "-c", f"cat >> {conf}"], c, input=extra.encode(), check=True)
    else:
        with conf.open("a") as f:
            f.write(extra)


def is_running(c: Cluster, bindir: Path) -> bool:
    if not (c.data_dir / "PG_VERSION").exists():
        return False
    r = _run([str(bindir / "pg_ctl"), "status", "-D", str(c.data_dir)], c, capture_output=True)
    return r.returncode == 0


def start(where: str | None = None) -> bool:
    """Start the cluster (initdb first if needed) and create the database. True if we started it.
    `where`: another cluster than the project's (DATABASE_URL does not concern it)."""
    if where is None and os.environ.get("DATABASE_URL"):
        say("DATABASE_URL is set: using that server, starting nothing")
        return False
    c = cluster(where)
    bindir = ensure_bindir()
    initdb(c, bindir)
    started = False
    if not is_running(c, bindir):
        _prepare_dirs(c)
        say(f"starting PostgreSQL on socket {c.socket_dir} port {c.port} (log {c.log_file})")
        r = _run(
            [str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(c.data_dir),
             "-l", str(c.log_file)],
            c,
            stdout=subprocess.DEVNULL,
        )
        if r.returncode != 0:
            tail = c.log_file.read_text()[-2000:] if c.log_file.exists() else ""
            raise LocalPostgresError(f"pg_ctl start failed (exit {r.returncode}).\n{tail}")
        started = True
    create_database(c, bindir)
    return started


def create_database(c: Cluster, bindir: Path) -> None:
    psql = [str(bindir / "psql"), "-h", str(c.socket_dir), "-p", str(c.port), "-U", DB_USER,
            "-d", "postgres", "-tAq"]
    r = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"],
                       capture_output=True, text=True, check=True)
    if r.stdout.strip() != "1":
        say(f"creating database {DB_NAME}")
        subprocess.run([*psql, "-c", f'CREATE DATABASE "{DB_NAME}"'], check=True)


def stop(where: str | None = None, *, quiet: bool = False) -> None:
    if where is None and os.environ.get("DATABASE_URL"):
        say("DATABASE_URL is set: nothing to stop")
        return
    c = cluster(where)
    bindir = find_bindir()
    if bindir is None or not is_running(c, bindir):
        if not quiet:
            say("not running")
        return
    if not quiet:
        say("stopping PostgreSQL")
    _run([str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(c.data_dir)], c,
         check=True, stdout=subprocess.DEVNULL)


def restart(where: str | None = None, *, mode: str = "fast") -> None:
    """Restart the running cluster (`immediate`: a crash and recovery, as in a power cut)."""
    if where is None and os.environ.get("DATABASE_URL"):
        raise LocalPostgresError("DATABASE_URL is set: this script restarts only its own cluster")
    c = cluster(where)
    bindir = ensure_bindir()
    if not is_running(c, bindir):
        raise LocalPostgresError(f"the project-local PostgreSQL under {c.where} is not running")
    r = _run([str(bindir / "pg_ctl"), "restart", "-w", "-t", "60", "-m", mode,
              "-D", str(c.data_dir), "-l", str(c.log_file)], c, stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        raise LocalPostgresError(f"pg_ctl restart failed (exit {r.returncode})")


def reset() -> None:
    stop()
    c = cluster()
    if c.root.exists():
        say(f"removing {c.root}")
        shutil.rmtree(c.root)
    link = BASE_DIR / c.where
    if link.is_symlink():
        link.unlink()


def status() -> int:
    if os.environ.get("DATABASE_URL"):
        say("DATABASE_URL is set: the project uses that server")
        return 0
    c = cluster()
    bindir = find_bindir()
    running = bindir is not None and is_running(c, bindir)
    say(f"{'running' if running else 'stopped'}: data {c.data_dir}, socket {c.socket_dir}, "
        f"port {c.port}")
    return 0 if running else 3


def main(argv: list[str]) -> int:
    return cli.main(argv, name="local_postgres", doc=__doc__, error=LocalPostgresError, verbs={
        "start": lambda rest: start() and None,
        "stop": lambda rest: stop(),
        "reset": lambda rest: reset(),
        "restart": lambda rest: restart(mode=rest[0] if rest else "fast"),
        "status": lambda rest: status(),
        "url": lambda rest: print(os.environ.get("DATABASE_URL") or default_database_url()),
        "run": cli.run_verb("local_postgres", LocalPostgresError, start=start, stop=stop),
    })


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
