"""Development tooling, not a Django app: the project-local PostgreSQL and Redis, the
process supervisor's configuration for `make run`, and process helpers for tests, the
experiments and the benchmarks.

The scripts here are run by the Makefile with the system Python before the venv exists
(`python3 devtools/local_postgres.py start`), so they use the standard library only.
"""
