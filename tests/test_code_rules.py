"""Rules of the code that are checked rather than hoped for: ruff (pyproject.toml) passes, the acceptance suites take
fixtures through pytest only, and no module keeps a growing record of retries or fetches."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (requirements-lint.txt)")
def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _imports(path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_suites_take_fixtures_through_pytest_only():
    offenders = {str(p.relative_to(ROOT)): [n for n in _imports(p) if n == "fixtures" or n.startswith("fixtures.")]
                 for p in (ROOT / "suites").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_module_level_lists_of_retries_or_fetches():
    """Retries and fetches belong to a run (a RetryLog, an InstallContext), not to a process-wide list."""
    found = []
    for package in ("stack", "installers", "fixtures", "reports", "suites"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                targets = [t.id for t in getattr(node, "targets", [getattr(node, "target", None)])
                           if isinstance(t, ast.Name)]
                if any(t in ("RETRIES", "FETCHES") for t in targets):
                    found.append(f"{path.relative_to(ROOT)}: {targets}")
    assert not found


def test_every_acceptance_check_has_a_readable_title():
    """The sign-off and Allure name a check by its allure.title; a field in it must be one of the test's arguments
    (allure-pytest fills it from the parametrized value: "{component}: ...")."""
    import importlib
    import inspect
    import string
    untitled, unknown_fields = [], []
    for path in sorted((ROOT / "suites" / "acceptance").glob("test_*.py")):
        module = importlib.import_module(f"suites.acceptance.{path.stem}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_") or func.__module__ != module.__name__:
                continue
            title = getattr(func, "__allure_display_name__", None)
            if not title or title.startswith("test_"):
                untitled.append(f"{path.name}::{name}")
                continue
            fields = {f for _, f, _, _ in string.Formatter().parse(title) if f}
            if fields - set(inspect.signature(func).parameters):
                unknown_fields.append(f"{path.name}::{name}: {title}")
    assert not untitled, untitled
    assert not unknown_fields, unknown_fields


# -- imports: no circle, and each package imports only what docs/architecture.md's table allows -----------------------
PACKAGES = ("stack", "installers", "reports", "fixtures", "twin", "suites", "bench")


def _modules() -> dict[str, object]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _project_imports(path, modules) -> set[str]:
    """The project modules `path` imports anywhere (module level, in a function, under TYPE_CHECKING): a circle held
    apart by a local import is still a circle."""
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
    return found - {None}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _project_imports(path, modules) - {name}
        # a module of a package reaching its own package's __init__ is no edge of a circle
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_circle_held_apart_by_a_local_import():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert _circles(_import_graph()) == []


# The "may import" column of docs/architecture.md's package table, as modules or packages of other packages.
MAY_IMPORT = {
    "stack": set(),
    "installers": {"stack"},
    "reports": {"stack.criteria", "stack.record", "stack.failures", "stack.redact", "stack.versions", "stack.provenance"},
    "fixtures": {"stack", "installers", "reports", "twin"},
    "suites": {"stack"},
    "twin": {"stack.profile", "stack.kube", "stack.record", "stack.durations", "stack.s3", "installers"},
    "bench": {"stack", "installers", "twin", "tests"},
}


def test_each_package_imports_only_what_the_architecture_allows():
    allowed = MAY_IMPORT
    wrong = []
    for module, deps in _import_graph().items():
        package = module.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if other != package and not any(dep == a or dep.startswith(a + ".") for a in allowed[package]):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, wrong
    assert "fixtures" not in {d.split(".")[0] for m, deps in _import_graph().items() if m.startswith("suites")
                              for d in deps}
