"""pgbroker: a PostgreSQL broker and cluster for django-q2 (README.md beside this file)."""

__version__ = "0.1.0"
