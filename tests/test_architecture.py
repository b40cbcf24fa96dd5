"""Dependencies point one way: down the layers below, and never round in a circle.

Every package of the project has a layer (LAYERS, lowest first). A module imports from its own
layer and the layers below it, never from one above: at its top or inside a function alike,
since an import inside a function is a dependency all the same, only a hidden one. And no
chain of imports comes back to where it started, between apps or between the modules of one
app. An import that has to break a rule is in EXCEPTIONS, with why; an exception nothing needs
any more fails too.

A lower app never calls up: an app registers what it brings with the registries of the apps
beneath it, in its `AppConfig.ready()` (retention rules, fault points, topics, schedules,
panels), so the infrastructure knows nothing of the apps that use it (docs/architecture.md).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

BASE = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, ...]] = [
    # the PostgreSQL broker: to be a package of its own (Django, django-q2, psycopg), so it
    # imports nothing of the project
    ("pgbroker",),
    # permissions, errors, parsers, connections: on pgbroker's connection_params and no_slot
    ("common",),
    # the project-local PostgreSQL and Redis, process helpers
    ("devtools",),
    # what is kept how long: every app above registers its rules
    ("retention",),
    # fault points (the apps above register and fire theirs), and breaking Redis
    ("faults",),
    # the job ledger and the two stores; registers its Redis queue with faults
    ("jobs",),
    # messages written with the business rows, relayed into the stores
    ("outbox",),
    # the page composed from what the apps register, and the infrastructure's own panels;
    # the tallies and the audits the apps above keep
    ("dashboard",),
    # metrics and health probes: read what the apps below keep, and the dashboard's checks
    ("ops",),
    # the domain apps
    ("travel", "users"),
    ("sagas",),
    ("experiments",),
    ("project",),
    ("bench", "tests"),
]

# (importing module, imported module): why it may break a rule
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("bench.peers.engines", "bench.peers.ours"):
        "a circle inside the peers benchmark (bench/peers, a Django project of its own): "
        "ENGINES puts ours first and ours subclasses engines.Engine; to be broken by moving "
        "Engine to a module of its own",
}

# pgbroker's own requirements, beside the standard library (picklefield: django-q2's own)
PGBROKER_REQUIRES = {"django", "django_q", "psycopg", "picklefield"}
PGBROKER_REDIS_MODULES = {"pgbroker/reliable_redis.py", "pgbroker/cluster/redisfetch.py"}


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, dotted
    imported: str  # the project module it names (the longest dotted prefix that is one)
    path: str      # the importer's file, relative to the base
    line: int
    hidden: bool   # inside a function: runs only when called

    def __str__(self) -> str:
        where = " (inside a function)" if self.hidden else ""
        return f"{self.path}:{self.line} {self.importer} -> {self.imported}{where}"


def packages(base: Path) -> list[str]:
    """The top-level directories holding Python code: the project's packages."""
    return sorted(d.name for d in base.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and d.name != "var"
                  and any(True for _ in sources(d)))


def sources(folder: Path) -> Iterable[Path]:
    return (p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def modules(base: Path, names: Iterable[str]) -> dict[str, Path]:
    found = {}
    for name in names:
        for path in sources(base / name):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(base: Path, names: Iterable[str]) -> list[Import]:
    """Every import of a project module by a project module, at the top or in a function."""
    known = modules(base, names)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: list[Import] = []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        rel = str(path.relative_to(base))

        def visit(node: ast.AST, hidden: bool, module=module, package=package, rel=rel):
            for child in ast.iter_child_nodes(node):
                names: list[str] = []
                line = 0
                if isinstance(child, ast.Import):
                    names, line = [alias.name for alias in child.names], child.lineno
                elif isinstance(child, ast.ImportFrom):
                    line = child.lineno
                    source = child.module or ""
                    if child.level:
                        up = package.split(".")[: len(package.split(".")) - child.level + 1]
                        source = ".".join([*up, *([source] if source else [])])
                    names = [f"{source}.{alias.name}" for alias in child.names] or [source]
                for name in names:
                    target = resolve(name)
                    if target and target != module:
                        found.append(Import(module, target, rel, line, hidden))
                visit(child, hidden or isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

        visit(ast.parse(path.read_text(), filename=str(path)), False)
    return sorted(set(found), key=lambda i: (i.path, i.line, i.imported))


def app(module: str) -> str:
    return module.split(".")[0]


def crossings(found: Iterable[Import], layers: Sequence[tuple[str, ...]],
              exceptions: dict[tuple[str, str], str]) -> list[str]:
    """The imports from a layer above the importer's."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    return [f"{i}: {app(i.importer)} may not import from {app(i.imported)}, a layer above"
            for i in found if (i.importer, i.imported) not in exceptions
            and rank[app(i.imported)] > rank[app(i.importer)]]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's, without
    recursion): each a set of nodes that reach one another through the edges."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            step = next(todo, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(edges.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycles(found: Iterable[Import], exceptions: dict[tuple[str, str], str], *,
           between_apps: bool) -> list[str]:
    """Each circle of imports (between apps, or between modules), with the imports that make
    it, one per line."""
    found = [i for i in found if (i.importer, i.imported) not in exceptions]
    node = app if between_apps else (lambda module: module)
    edges: dict[str, set[str]] = defaultdict(set)
    for i in found:
        if node(i.importer) != node(i.imported):
            edges[node(i.importer)].add(node(i.imported))
    said = []
    for circle in circles(edges):
        members = set(circle)
        made = sorted(str(i) for i in found if node(i.importer) in members
                      and node(i.imported) in members and node(i.importer) != node(i.imported))
        said.append(" <-> ".join(circle) + ":\n    " + "\n    ".join(made))
    return said


# --- the project ------------------------------------------------------------------------------

ALL = packages(BASE)


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return imports(BASE, ALL)


def test_every_package_has_its_layer():
    placed = [name for layer in LAYERS for name in layer]
    assert len(placed) == len(set(placed)), "a package in two layers"
    assert set(ALL) == set(placed), "a new package: give it its layer in LAYERS"


def test_no_import_reaches_up_a_layer(project_imports):
    found = crossings(project_imports, LAYERS, EXCEPTIONS)
    assert not found, "\n".join(found)


def test_no_import_cycle_between_apps(project_imports):
    found = cycles(project_imports, EXCEPTIONS, between_apps=True)
    assert not found, "\n".join(found)


def test_no_import_cycle_between_modules(project_imports):
    found = cycles(project_imports, EXCEPTIONS, between_apps=False)
    assert not found, "\n".join(found)


def test_every_exception_is_still_needed(project_imports):
    made = {(i.importer, i.imported) for i in project_imports}
    assert set(EXCEPTIONS) <= made, f"not needed any more: {set(EXCEPTIONS) - made}"


def test_pgbroker_needs_only_django_django_q2_and_psycopg():
    """pgbroker is to be a wheel of its own: its migrations included, it imports the standard
    library, its requirements and itself; redis-py (its `[redis]` extra) only in the modules of
    the reliable Redis broker, which nothing else imports at module level."""
    needed = set()
    for path in (BASE / "pgbroker").rglob("*.py"):
        name = path.relative_to(BASE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found = set()
            if isinstance(node, ast.Import):
                found = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = {node.module.split(".")[0]}
            if "redis" in found:
                assert name in PGBROKER_REDIS_MODULES, f"{name} imports redis"
                found.discard("redis")
            needed |= found
    assert needed - sys.stdlib_module_names - {"pgbroker"} <= PGBROKER_REQUIRES
    extra = (BASE / "pgbroker" / "pyproject.toml").read_text()
    assert 'redis = ["redis' in extra


def test_project_is_configuration_only():
    assert {p.name for p in (BASE / "project").glob("*.py")} <= {
        "__init__.py", "settings.py", "urls.py", "wsgi.py", "asgi.py", "apps.py", "admin.py"}


# --- the checks themselves, on a small tree of their own ---------------------------------------


def tree(base: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def test_a_circle_between_apps_is_found_even_through_an_import_inside_a_function(tmp_path):
    base = tree(tmp_path, {
        "low/__init__.py": "",
        "low/store.py": "def connect():\n    from high.views import page\n    return page\n",
        "high/__init__.py": "",
        "high/views.py": "from low.store import connect\n\npage = connect\n",
    })
    found = imports(base, packages(base))
    assert {str(i) for i in found} == {"low/store.py:2 low.store -> high.views (inside a function)",
                                       "high/views.py:1 high.views -> low.store"}
    assert cycles(found, {}, between_apps=True) == [
        "high <-> low:\n"
        "    high/views.py:1 high.views -> low.store\n"
        "    low/store.py:2 low.store -> high.views (inside a function)"]
    assert crossings(found, [("low",), ("high",)], {}) == [
        "low/store.py:2 low.store -> high.views (inside a function): low may not import from "
        "high, a layer above"]


def test_a_circle_between_two_modules_of_one_app_is_found(tmp_path):
    base = tree(tmp_path, {
        "users/__init__.py": "",
        "users/services.py": "from users import selectors\n",
        "users/selectors.py": "import os\n\nfrom users.services import WELCOME\n",
        "users/admin.py": "from .selectors import x\nfrom . import services\n",
    })
    found = imports(base, ["users"])
    assert cycles(found, {}, between_apps=True) == []
    assert cycles(found, {}, between_apps=False) == [
        "users.selectors <-> users.services:\n"
        "    users/selectors.py:3 users.selectors -> users.services\n"
        "    users/services.py:1 users.services -> users.selectors"]
    assert {i.imported for i in found if i.importer == "users.admin"} == {
        "users.selectors", "users.services"}, "relative imports count too"


def test_an_import_up_a_layer_is_found_without_a_circle_and_an_exception_lets_it_be(tmp_path):
    base = tree(tmp_path, {
        "common/__init__.py": "",
        "common/db.py": "import dashboard.tallies as t\n",
        "dashboard/__init__.py": "",
        "dashboard/tallies.py": "from django.db import models\n",
    })
    found = imports(base, packages(base))
    layers = [("common",), ("dashboard",)]
    assert cycles(found, {}, between_apps=True) == []
    assert crossings(found, layers, {}) == [
        "common/db.py:1 common.db -> dashboard.tallies: common may not import from dashboard, "
        "a layer above"]
    assert crossings(found, layers, {("common.db", "dashboard.tallies"): "why"}) == []
    assert crossings(found, [("common", "dashboard")], {}) == [], "one layer: either way"
