#!/usr/bin/env python
"""manage.py of the peers' benchmark project (bench/peers/settings.py), run from the checkout:

    .venv/bin/python bench/peers/manage.py qcluster | procrastinate worker | db_worker
"""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def main() -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
