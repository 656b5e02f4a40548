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
