"""Runtime helpers every app may use; no Django models, no knowledge of any app: a second
PostgreSQL connection outside the request transaction (sideconn), the connection settings
it shares with the broker and the test processes (db), and the stop flag of `--follow`
commands (stopping)."""
