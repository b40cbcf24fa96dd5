"""Dependencies point one way: the infrastructure apps (and the dashboard that composes them)
import nothing from the apps that use them; those register what they bring instead."""

import ast
from pathlib import Path

import pytest

BASE = Path(__file__).resolve().parent.parent
INFRASTRUCTURE = ["common", "outbox", "faults", "jobs", "pgbroker", "dashboard", "retention"]
DOMAIN = {"users", "travel", "sagas", "experiments", "bench", "tests"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("app", INFRASTRUCTURE)
def test_an_infrastructure_app_imports_no_domain_app(app):
    offending = {
        f"{path.relative_to(BASE)}: {module}"
        for path in (BASE / app).rglob("*.py") if "migrations" not in path.parts
        for module in imported_modules(path) if module.split(".")[0] in DOMAIN
    }
    assert not offending


def test_project_is_configuration_only():
    assert {p.name for p in (BASE / "project").glob("*.py")} <= {
        "__init__.py", "settings.py", "urls.py", "wsgi.py", "asgi.py", "apps.py", "admin.py"}
