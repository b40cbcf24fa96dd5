"""The validated parsers for what a person types: command arguments, form fields, service
arguments, environment settings. Each takes the raw value (text from a command line, a form
or the environment, or a value a caller already has), returns the clean value, or raises
`Invalid` with one line for a person that names no channel ("the timeout must be ...", not
"--timeout must be ..."): a command prints it after its option's name, a form shows it under
its field, a service passes it up as its refusal. Nothing here touches the database.

    parser.add_argument("--timeout", type=arg(seconds, what="the timeout", high=DAY))
    timeout = SecondsField ... / seconds(value, what="the timeout", high=DAY)

Only the standard library and `common.errors` are imported, so settings (common.env) and the
system Python of devtools/ can use the parsers before Django is set up. The glue to argparse
and Django forms is common.inputs.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

from common.errors import OperationError

DAY = 86_400.0
INT32_MAX = 2**31 - 1  # PostgreSQL's integer: ids, counts
PAYLOAD_MAX_BYTES = 64 * 1024
PAYLOAD_MAX_DEPTH = 32
# Unicode categories a name may not contain: control (Cc), format (Cf: zero-width and
# direction overrides), surrogate (Cs), private use (Co), unassigned (Cn), line and paragraph
# separators (Zl, Zp). PostgreSQL cannot store NUL at all, nor a lone surrogate.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

EMPTY = "{what} is empty"
TOO_LONG = "{what} is longer than {max:,} characters"
CONTROL = "{what} contains a control or invisible character ({code})"
NOT_TEXT = "{what} must be text, not {shown}"
NOT_WHOLE = "{what} must be a whole number from {low:,} to {high:,}, not {shown}"
NOT_NUMBER = "{what} must be a number {range}, not {shown}"
NOT_CHOICE = "unknown {what} {shown}; use one of: {choices}"
NOT_OBJECT = "{what} must be a JSON object, not {kind}"
NOT_JSON = "{what} is not JSON: {error}"
NOT_FINITE = "{what} holds NaN or Infinity, which JSON has no way to write"
TOO_BIG = "{what} is {size:,} bytes as JSON; at most {max:,}"
TOO_DEEP = "{what} is nested more than {max} levels deep"
BAD_KEY = "{what} has a key that is not text: {shown}"
NUL_TEXT = "{what} contains a NUL character (PostgreSQL cannot store it)"
BAD_UNICODE = "{what} contains a lone surrogate (not valid Unicode)"


class Invalid(OperationError, ValueError):
    """Bad input: one line for a person; nothing was written."""


def shown(value: object, limit: int = 40) -> str:
    """The value as a message shows it: repr (control characters escaped, so one line),
    shortened."""
    try:
        text = repr(value)
    except Exception:  # an int of more than 4300 digits, a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- text -------------------------------------------------------------------------------------


def text(value: object, *, what: str = "the name", max_length: int = 150) -> str:
    """A name: text, NFC-normalised, stripped, not empty, at most `max_length` characters,
    with no control or invisible character."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Invalid(NOT_TEXT.format(what=what, shown=shown(value)))
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise Invalid(EMPTY.format(what=what))
    if len(value) > max_length:
        raise Invalid(TOO_LONG.format(what=what, max=max_length))
    for char in value:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            raise Invalid(CONTROL.format(what=what, code=f"U+{ord(char):04X}"))
    return value


def choice(value: object, *, what: str, choices: Iterable[str]) -> str:
    """One of `choices`, exactly (after stripping whitespace)."""
    allowed = [str(c) for c in choices]
    clean = value.strip() if isinstance(value, str) else value
    if not isinstance(clean, str) or clean not in allowed:
        raise Invalid(NOT_CHOICE.format(what=what, shown=shown(value),
                                        choices=", ".join(allowed)))
    return clean


# --- numbers ----------------------------------------------------------------------------------


def integer(value: object, *, what: str, low: int = 1, high: int = INT32_MAX) -> int:
    """A whole number from `low` to `high`: an int, or text of one ("12", " 12 "); not a bool,
    not "1.5", not "1e3"."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and len(value) <= 100:
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or not low <= number <= high:
        raise Invalid(NOT_WHOLE.format(what=what, low=low, high=high, shown=shown(value)))
    return number


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _range(low: float | None, high: float | None, above: float | None, unit: str) -> str:
    parts = []
    if above is not None:
        parts.append(f"above {_num(above)}")
    elif low is not None:
        parts.append(f"from {_num(low)}")
    if high is not None:
        parts.append(f"{'and at most' if above is not None else 'to'} {_num(high)}")
    return (unit + " " if unit else "") + " ".join(parts)


def number(value: object, *, what: str, low: float | None = None, high: float | None = None,
           above: float | None = None, unit: str = "") -> float:
    """A finite number (no NaN, no infinity) from `low` (or strictly `above`) to `high`."""
    result: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            result = None
    elif isinstance(value, str) and len(value) <= 100:
        try:
            result = float(value.strip())
        except ValueError:
            result = None
    ok = (result is not None and math.isfinite(result)
          and (low is None or result >= low) and (above is None or result > above)
          and (high is None or result <= high))
    if result is None or not ok:
        raise Invalid(NOT_NUMBER.format(what=what, range=_range(low, high, above, unit),
                                        shown=shown(value)))
    return result


def seconds(value: object, *, what: str, high: float = DAY, above: float | None = 0,
            low: float | None = None) -> float:
    """A duration in seconds: finite, above 0 (or from `low` when it is given), at most
    `high` (a day unless told)."""
    if low is not None:
        above = None
    return number(value, what=what, low=low, high=high, above=above, unit="of seconds")


# --- JSON payloads ----------------------------------------------------------------------------


def _walk(value: Any, what: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise Invalid(TOO_DEEP.format(what=what, max=max_depth))
    if isinstance(value, str):
        if "\x00" in value:
            raise Invalid(NUL_TEXT.format(what=what))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid(BAD_KEY.format(what=what, shown=shown(key)))
            _walk(key, what, depth, max_depth)
            _walk(item, what, depth + 1, max_depth)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, what, depth + 1, max_depth)


def payload(value: object, *, what: str = "the payload", max_bytes: int = PAYLOAD_MAX_BYTES,
            max_depth: int = PAYLOAD_MAX_DEPTH) -> dict[str, Any]:
    """A JSON object PostgreSQL can store as given: a dict with text keys, no NaN or
    Infinity, no NUL character, valid Unicode, at most `max_bytes` as UTF-8 JSON and
    `max_depth` levels deep. Returns it unchanged."""
    if not isinstance(value, dict):
        raise Invalid(NOT_OBJECT.format(what=what, kind=type(value).__name__))
    _walk(value, what, 1, max_depth)
    try:
        dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except ValueError as e:
        if "Out of range float values" in str(e):
            raise Invalid(NOT_FINITE.format(what=what)) from None
        raise Invalid(NOT_JSON.format(what=what, error=str(e).splitlines()[0][:200])) from None
    except (TypeError, RecursionError) as e:
        raise Invalid(NOT_JSON.format(what=what, error=str(e).splitlines()[0][:200])) from None
    try:
        size = len(dumped.encode("utf-8"))
    except UnicodeEncodeError:
        raise Invalid(BAD_UNICODE.format(what=what)) from None
    if size > max_bytes:
        raise Invalid(TOO_BIG.format(what=what, size=size, max=max_bytes))
    return value
