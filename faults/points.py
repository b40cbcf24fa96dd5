"""The registry of fault points: every app declares the points its code passes, with what each
interrupts, in its `AppConfig.ready()`:

    from faults.points import register
    register("signup.part1", "inside the signup transaction, after the user row is written")

`faults.fire(name)` refuses names that are not registered, so a typo fails loudly.
"""

from __future__ import annotations

# name -> what a fault there interrupts (read-only outside this module: use register())
POINTS: dict[str, str] = {}


class PointConflict(ValueError):
    pass


def register(name: str, description: str) -> None:
    """Declare a fault point. Registering the same name twice with another description is a
    mistake (two apps claim one point) and raises."""
    if not name or len(name) > 100:
        raise ValueError(f"a fault point name is 1 to 100 characters: {name!r}")
    if POINTS.get(name, description) != description:
        raise PointConflict(f"fault point {name!r} is already registered as "
                            f"{POINTS[name]!r}")
    POINTS[name] = description


def unregister(name: str) -> None:
    POINTS.pop(name, None)

