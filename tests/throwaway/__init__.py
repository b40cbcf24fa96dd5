"""A throwaway app, installed only in the test suite (tests/settings.py): it brings its own
outbox topic, fault point, consistency check and dashboard panel, the way docs/architecture.md
says an app does, and no infrastructure app knows it exists."""
