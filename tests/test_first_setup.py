"""A laptop's first steps: the Makefile's own checks before it creates anything, and `pip install .`, each failing
with one clear message and the remedy."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


NEEDS_MAKE = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@NEEDS_MAKE
def test_a_python_older_than_3_11_is_refused_with_the_remedy_before_a_venv_is_made(tmp_path):
    old = tmp_path / "python3"        # answers as macOS' /usr/bin/python3 (3.9) answers the version probe
    old.write_text("#!/bin/sh\necho 3.9\nexit 1\n")
    old.chmod(0o755)
    venv = tmp_path / "venv"
    proc = _make("venv", f"PYTHON={old}", f"VENV={venv}")
    assert proc.returncode != 0
    assert f"kstack needs Python 3.11 or newer; PYTHON={old} is 3.9" in proc.stderr
    assert "brew install python@3.12" in proc.stderr
    assert not venv.exists()


@NEEDS_MAKE
def test_a_missing_python_is_named(tmp_path):
    proc = _make("python-version", f"PYTHON={tmp_path / 'absent'}")
    assert proc.returncode != 0 and "is not found" in proc.stderr


@NEEDS_MAKE
def test_this_python_passes_the_check():
    assert _make("python-version", f"PYTHON={sys.executable}").returncode == 0


def test_pip_install_of_the_checkout_stops_with_the_commands_that_work():
    """`pip install .` runs setup.py to prepare the metadata; it stops there instead of failing deep in setuptools'
    package discovery (nine top-level packages in a flat layout)."""
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("kstack runs from its checkout, not as an installed package")
    assert "make acceptance" in proc.stderr and "README.md" in proc.stderr
