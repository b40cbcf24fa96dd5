"""Settings from the environment, each parsed and checked by one of these helpers.

A bad value stops startup with one line that names the variable, the value and what is
allowed, e.g. `Q_TIMEOUT must be a whole number from 1 to 86,400, not 'abc'`: an `EnvError`, which
is Django's `ImproperlyConfigured` (manage.py prints it as that one line, without a
traceback). An unset or empty variable takes the default, which is not checked: the code's own
defaults are right by construction.

    boolean("DEBUG", True)                  1/0, true/false, yes/no, on/off (any case)
    integer("Q_WORKERS", 2, low=1, high=256)
    number("SAGA_LEASE_SECONDS", 10, low=0.1, high=3600)   finite floats only: no nan, no inf
    choice("LOG_LEVEL", "WARNING", ["DEBUG", "INFO", ...], upper=True)
    strings("ALLOWED_HOSTS", [])            comma-separated, blanks dropped
    text("EMAIL_HOST", "localhost")

Every helper takes `environ=` (default: os.environ), so devtools/supervise.py and the tests
read another environment with the same rules. Standard library only, apart from the
exception: devtools/supervise.py runs on the system Python, where Django may be missing.

`secret_file(path)` is the generated development key: created once, with mode 0600 from its
first byte, and never half written.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

try:
    from django.core.exceptions import ImproperlyConfigured
except ImportError:  # the system Python of devtools/supervise.py

    class ImproperlyConfigured(Exception):  # type: ignore[no-redef]
        pass


from common import validate  # noqa: E402 (standard library only, like this module)


class EnvError(ImproperlyConfigured):
    """An environment setting that cannot be used; its message is the one line to show."""


T = TypeVar("T")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    """The variable's value with surrounding blanks removed; None when unset or blank."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _bad(name: str, value: str, allowed: str) -> EnvError:
    return EnvError(f"{name} must be {allowed}, not {value!r}")


def boolean(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise _bad(name, value, "1/0, true/false, yes/no or on/off")


def _parsed(name: str, parse: Callable[..., T], value: str, **rules: object) -> T:
    """`value` through one of common.validate's parsers (the rules every command argument and
    form field follow too), its refusal as an EnvError naming the variable."""
    try:
        return parse(value, what=name, **rules)
    except validate.Invalid as e:
        raise EnvError(str(e)) from None


def integer(name: str, default: int, *, low: int, high: int, why: str = "",
            environ: Mapping[str, str] | None = None) -> int:
    """`why`: said after the refusal (what the bounds protect)."""
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        return _parsed(name, validate.integer, value, low=low, high=high)
    except EnvError as e:
        raise EnvError(f"{e}: {why}" if why else str(e)) from None


def number(name: str, default: float, *, low: float, high: float,
           environ: Mapping[str, str] | None = None) -> float:
    value = _raw(name, environ)
    if value is None:
        return float(default)
    return _parsed(name, validate.number, value, low=low, high=high)


def choice(name: str, default: str, allowed: Iterable[str], *, upper: bool = False,
           environ: Mapping[str, str] | None = None) -> str:
    """One of `allowed`; `upper=True` accepts any case and returns it upper-cased."""
    value = _raw(name, environ)
    if value is None:
        return default
    return _parsed(name, validate.choice, value.upper() if upper else value,
                   choices=list(allowed))


def strings(name: str, default: list[str], *,
            environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped (`a, b,` is ["a", "b"])."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def text(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def required(name: str, why: str, *, environ: Mapping[str, str] | None = None) -> str:
    """A variable that must be set; its value is never shown (it may be a secret)."""
    value = _raw(name, environ)
    if value is None:
        raise EnvError(f"{name} is not set: {why}")
    return value


def secret_file(path: Path) -> str:
    """The secret kept in `path`, made on first use. The file is created under a temporary
    name with O_CREAT|O_EXCL and mode 0600 (no moment when another user may read it), written
    and fsync-ed, then linked to `path` (which fails if another process was first: then its
    key is the one used, so every process signs with the same key). A file that others can
    read is restricted to 0600."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secrets.token_urlsafe(50).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and never replaces a key another process made
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    value = path.read_text().strip()
    if not value:
        raise EnvError(f"{path} is empty: delete it and a new key is generated")
    return value


def or_exit(load: Callable[[], T], *, code: int = 1) -> T:
    """`load()`, or, when the environment is wrong, its one line on stderr and exit `code`
    (no traceback): manage.py, and wsgi.py/asgi.py with 3, the code by which a gunicorn worker
    that cannot boot stops the whole server instead of being started again."""
    try:
        return load()
    except EnvError as e:
        print(e, file=sys.stderr)
        raise SystemExit(code) from None
