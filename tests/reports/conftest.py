"""Synthetic allure-results folders for the reports/ tests."""
from __future__ import annotations

import pytest

from tests.reports.factory import ResultsFactory


@pytest.fixture
def factory(tmp_path):
    return ResultsFactory(tmp_path / "allure-results")
