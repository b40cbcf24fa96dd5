"""pgbroker's `qcluster` under another name (django-q2's stock one keeps `qcluster` here)."""

from pgbroker.management.commands.qcluster import Command  # noqa: F401
