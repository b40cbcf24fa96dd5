"""Errors as log lines: the one rule for how the cluster shows an exception or a job's error on
one line."""

from __future__ import annotations

LINE_MAX = 300  # characters of a job's error kept in a log line


def first_line(error: BaseException, *, named: bool = False) -> str:
    """An exception on one line: its message's first line (the detail lines of a database or
    Redis error dropped), or its class when it says nothing; `named` puts the class in front."""
    line = (str(error).strip().splitlines() or [""])[0]
    if named:
        return f"{type(error).__name__}: {line}"
    return line or type(error).__name__


def last_line(error: object) -> str:
    """The line of a job's error worth a log line: a traceback's last (the exception)."""
    return (str(error).strip().splitlines() or [""])[-1][:LINE_MAX]
