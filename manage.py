#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    from common.env import or_exit

    # A bad environment setting: its one line (common/env.py), not a traceback.
    or_exit(lambda: execute_from_command_line(sys.argv))


if __name__ == "__main__":
    main()
