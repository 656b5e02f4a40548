"""Parametrisation of the acceptance suites over the profile's components, and shared helpers."""
from __future__ import annotations

import pytest

from fixtures.plugin import run_state


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "component" not in metafunc.fixturenames:
        return
    state = run_state(metafunc.config)
    if state is None:
        return
    profile = state["options"].profile
    mark = metafunc.definition.get_closest_marker("per_component")
    key = mark.kwargs.get("has") if mark else None
    names = [c.name for c in profile.install_order()
             if key is None or c.inventory.get(key) or c.data.get(key)]
    metafunc.parametrize("component", names, ids=names)
