"""The glue between common.validate's parsers and where input arrives: argparse (`arg` as an
argument's `type=`, `OneLineErrors` for a command's parser) and Django forms
(`ValidatedField`), so a refusal reads the same on the command line and on the web."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django import forms
from django.core.management.base import CommandError, CommandParser

from common.errors import OperationError


def arg(parse: Callable[..., Any], /, **rules: Any) -> Callable[[str], Any]:
    """`parse` as an argparse `type=`: its refusal (an OperationError) is argparse's own error
    (usage and one line, exit status 2; CommandError from call_command), nothing else runs."""

    def convert(raw: str) -> Any:
        try:
            return parse(raw, **rules)
        except OperationError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = str(rules.get("what", parse.__name__))
    convert.check = lambda value: parse(value, **rules)  # OneLineErrors.execute
    return convert


class ValidatedField(forms.Field):
    """A form field that parses with one of the parsers above, so the form's error is the
    same sentence the command prints. Empty and not required: None."""

    def __init__(self, parse: Callable[..., Any], /, *, rules: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self.parse, self.rules = parse, rules or {}
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if value in self.empty_values and not self.required:
            return None
        try:
            return self.parse(value, **self.rules)
        except OperationError as e:
            raise forms.ValidationError(str(e), code="invalid") from None

    def validate(self, value: Any) -> None:
        """to_python already refused what is wrong, an empty required value included."""


class OneLineParser(CommandParser):
    """argparse's errors repeat what was typed as is (`unrecognized arguments: a<newline>b`):
    escape control characters so the error stays one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        super().error(one_line(message))


def one_line(message: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class OneLineErrors:
    """A management command mixin: its parser (and its subcommands' parsers) keep every error
    on one line, and every option typed with `arg(...)` is checked by its parser however the
    command is called: `call_command(name, timeout=...)` hands keyword values to the command
    without argparse's `type`, so `execute` runs them through the same parser (which leaves
    a value argparse already parsed as it is). `class Command(OneLineErrors, BaseCommand)`."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any):
        parser = super().create_parser(prog_name, subcommand, **kwargs)  # type: ignore[misc]
        self._checks = _one_line_parser(parser)
        return parser

    def execute(self, *args: Any, **options: Any):
        for dest, check in getattr(self, "_checks", {}).items():
            if options.get(dest) is not None:
                try:
                    value = options[dest]
                    # an `action="append"` option: each value checked
                    options[dest] = ([check(v) for v in value] if isinstance(value, list)
                                     else check(value))
                except OperationError as e:
                    raise CommandError(str(e)) from None
        return super().execute(*args, **options)  # type: ignore[misc]


def _one_line_parser(parser: argparse.ArgumentParser) -> dict[str, Callable[[Any], Any]]:
    """Make `parser` and its subparsers one-line; returns {dest: check} of the `arg` options."""
    parser.__class__ = OneLineParser
    checks = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                checks.update(_one_line_parser(sub))
        elif hasattr(action.type, "check"):
            checks[action.dest] = action.type.check
    return checks
