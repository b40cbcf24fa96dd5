"""The Markdown table every benchmark prints and writes under var/."""

from __future__ import annotations

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def write_table(rows: list[tuple[str, str, str]], name: str) -> None:
    """Print `rows` (what, result, notes) as a table and write it to var/`name`."""
    lines = ["| what | result | notes |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    table = "\n".join(lines)
    print("\n" + table)
    out = BASE_DIR / "var" / name
    out.write_text(table + "\n")
    print(f"\n(written to {out.relative_to(BASE_DIR)})")
