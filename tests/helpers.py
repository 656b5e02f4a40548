"""Shared helpers for the suite's own tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run pytest as a user would, in a subprocess, from the project root."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    full_env.pop("KSTACK_HANDOFF", None)
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
