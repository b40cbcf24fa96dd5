"""The long-running programs and their status files (pgbroker.status): which program this
process is, and where each program writes how it is. Standard library only: settings.py asks
it which file this process writes.

The programs are `make run`'s (devtools/supervise.py): `qcluster`, `qcluster-redis`, `relay`
(`relay_outbox --follow`) and `recoverer` (`recover_sagas --follow`). A process started the
same way anywhere else (systemd, a container) is the same program and writes the same file,
`STATUS_DIR/<program>.json`. The web server has HTTP probes instead (ops.middleware)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.supervise import PROGRAMS

WEB = "web"  # probed over HTTP: /healthz/live, /healthz/ready
# options that make a cluster another one than the program's: a one-off run, another queue
NOT_THE_PROGRAM = ("--run-once", "-n", "--name")


def names() -> list[str]:
    """The programs that write a status file, in `make run`'s order."""
    return [name for name in PROGRAMS if name != WEB]


def program_of(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The program this process is ("" when it is none of them): `manage.py` with the
    program's command and options (others may come too), and its Q_CLUSTER_NAME."""
    if len(argv) < 2 or Path(argv[0]).name != "manage.py":
        return ""
    args = list(argv[1:])
    if any(a == o or a.startswith(o + "=") or (o == "-n" and a.startswith("-n"))
           for a in args for o in NOT_THE_PROGRAM):
        return ""
    cluster = environ.get("Q_CLUSTER_NAME", "")
    for name in names():
        program = PROGRAMS[name]
        if (program.runner == "manage.py" and args[0] == program.args[0]
                and set(program.args[1:]) <= set(args[1:])
                and program.env.get("Q_CLUSTER_NAME", "") == cluster):
            return name
    return ""


def status_file(directory: str | Path, program: str) -> Path:
    return Path(directory) / f"{program}.json"
