"""The glue between common.validate's parsers and where input arrives: argparse (`arg` as an
argument's `type=`, `OneLineErrors` for a command's parser) and Django forms
(`ValidatedField`), so a refusal reads the same on the command line and on the web."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from django import forms
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError


class Arg:
    """`parse` with its rules as an argparse `type=` (see `arg`)."""

    __name__: str  # argparse names the type by it in "invalid <name> value"

    def __init__(self, parse: Callable[..., Any], rules: dict[str, Any]) -> None:
        self.parse, self.rules = parse, rules
        self.__name__ = str(rules.get("what", parse.__name__))

    def __call__(self, raw: str) -> Any:
        try:
            return self.parse(raw, **self.rules)
        except OperationError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    def check(self, value: Any) -> Any:
        """The parser on a value that did not come through argparse (OneLineErrors.execute)."""
        return self.parse(value, **self.rules)


def arg(parse: Callable[..., Any], /, **rules: Any) -> Arg:
    """`parse` as an argparse `type=`: its refusal (an OperationError) is argparse's own error
    (one line, exit status 2; CommandError from call_command), nothing else runs."""
    return Arg(parse, rules)


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
    """A refusal is one line: argparse's errors repeat what was typed as is (`unrecognized
    arguments: a<newline>b`), so control characters are escaped; and from a shell it is only
    `<prog>: error: <message>` with exit status 2, without argparse's usage block before it
    (`--help` shows that). From call_command: CommandError, as Django's parser raises."""

    def error(self, message: str) -> NoReturn:
        message = one_line(message)
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {message}\n")
        raise CommandError(f"Error: {message}")  # as Django's CommandParser.error


def one_line(message: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


if TYPE_CHECKING:  # OneLineErrors is only ever mixed into a BaseCommand
    _Command = BaseCommand
else:
    _Command = object


class OneLineErrors(_Command):
    """A management command mixin: its parser (and its subcommands' parsers) keep every error
    on one line, and every option typed with `arg(...)` is checked by its parser however the
    command is called: `call_command(name, timeout=...)` hands keyword values to the command
    without argparse's `type`, so `execute` runs them through the same parser (which leaves
    a value argparse already parsed as it is). `class Command(OneLineErrors, BaseCommand)`."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        self._checks = _one_line_parser(parser)
        return parser

    def execute(self, *args: Any, **options: Any) -> str | None:
        for dest, check in getattr(self, "_checks", {}).items():
            if options.get(dest) is not None:
                try:
                    value = options[dest]
                    # an `action="append"` option: each value checked
                    options[dest] = ([check(v) for v in value] if isinstance(value, list)
                                     else check(value))
                except OperationError as e:
                    raise CommandError(str(e)) from None
        return super().execute(*args, **options)


def _one_line_parser(parser: argparse.ArgumentParser) -> dict[str, Callable[[Any], Any]]:
    """Make `parser` and its subparsers one-line; returns {dest: check} of the `arg` options."""
    parser.__class__ = OneLineParser
    checks: dict[str, Callable[[Any], Any]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                checks.update(_one_line_parser(sub))
        elif isinstance(action.type, Arg):
            checks[action.dest] = action.type.check
    return checks
