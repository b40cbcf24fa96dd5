"""The command line the local servers share (`local_postgres.py`, `local_redis.py`): one verb
per function, a one-line error, and `run -- CMD`, which runs CMD with the server up and stops
it afterwards only if this call started it. Standard library only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

Verb = Callable[[list[str]], "int | None"]


def run_wrapped(cmd: list[str], *, start: Callable[[], bool],
                stop: Callable[..., object]) -> int:
    """Quietly: the command's own last line (pytest's summary, say) stays the last line."""
    started = start()
    try:
        return subprocess.call(cmd)
    finally:
        if started:
            stop(quiet=True)


def run_verb(name: str, error: type[Exception], *, start: Callable[[], bool],
             stop: Callable[..., object]) -> Verb:
    def run(rest: list[str]) -> int:
        if rest[:1] == ["--"]:
            rest = rest[1:]
        if not rest:
            raise error(f"run needs a command: {name}.py run -- CMD ...")
        return run_wrapped(rest, start=start, stop=stop)

    return run


def main(argv: list[str], *, name: str, doc: str, verbs: dict[str, Verb],
         error: type[Exception]) -> int:
    if not argv or argv[0] not in verbs:
        print(doc)
        return 2
    try:
        return verbs[argv[0]](argv[1:]) or 0
    except error as e:
        print(f"[{name}] error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"[{name}] error: {' '.join(map(str, e.cmd))} failed (exit {e.returncode})",
              file=sys.stderr)
        return 1
