from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgbroker.cluster import MainProcess

NAME_MAX = 100  # django-q2's cluster name column
# control (Cc), format (Cf: zero-width, direction overrides), surrogate, private use,
# unassigned, line and paragraph separators: no name may hold one
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def checked_name(value: str) -> str:
    """The --name as the queue is named: NFC, stripped, 1 to NAME_MAX characters, nothing
    invisible. A refusal is one line (it never repeats what was typed)."""
    if not isinstance(value, str):  # call_command(cluster_name=...) skips argparse
        raise CommandError("the cluster name must be text")
    name = unicodedata.normalize("NFC", value).strip()
    bad = next((c for c in name if unicodedata.category(c) in INVISIBLE), None)
    if not name:
        raise CommandError("the cluster name is empty")
    if len(name) > NAME_MAX:
        raise CommandError(f"the cluster name is longer than {NAME_MAX} characters")
    if bad is not None:
        raise CommandError("the cluster name contains a control or invisible character "
                           f"(U+{ord(bad):04X})")
    return name


class Command(BaseCommand):
    help = ("Run a django-q2 cluster whose processes survive any SIGKILL: one dispatcher, "
            "Q_CLUSTER['workers'] workers (pgbroker.cluster). Stops cleanly on SIGTERM: "
            "unstarted jobs go back to the queue, running ones finish.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        error = parser.error  # argparse repeats what was typed: its control characters escaped

        def one_line(message: str) -> None:
            error("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))

        parser.error = one_line  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--run-once", action="store_true", dest="run_once",
                            help="run the jobs that are due now, then stop (django-q2's "
                                 "option; here: once the queue has nothing due and every "
                                 "result is written)")
        parser.add_argument("-n", "--name", dest="cluster_name", default=None,
                            help="queue (cluster) name instead of Q_CLUSTER['name']")

    def handle(self, *args: Any, cluster_name: str | None = None, run_once: bool = False,
               **options: Any) -> None:
        cluster_name = None if cluster_name is None else checked_name(cluster_name)
        settings.SECRET_KEY  # noqa: B018 (payloads are signed with it: fail now, not per task)
        if cluster_name:
            os.environ["Q_CLUSTER_NAME"] = cluster_name
        sys.exit(MainProcess(run_once=run_once).run())
