"""The wait benchmark runs (our contender only, tiny sizes): numbers are measured by bench/, never asserted here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.twin]


def test_the_wait_benchmark_runs():
    proc = subprocess.run([sys.executable, "-m", "bench.wait_bench", "--runs", "1", "--idle", "1", "--drop-flip", "1",
                           "--only", "ours"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    (row,) = rows.values()
    assert row["successful_waits"] == row["runs"] == 1 and row["watch_drop_ok"], row
