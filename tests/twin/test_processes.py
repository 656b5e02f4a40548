"""Stopping the twin's processes: one shared grace period for all of them, SIGKILL for what ignores SIGTERM."""
from __future__ import annotations

import subprocess
import sys
import time

from twin.processes import stop_processes

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def started(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True, text=True)
    assert proc.stdout.readline().strip() == "up"       # its handler is installed before we signal it
    return proc


def test_processes_that_ignore_sigterm_share_one_grace_period_then_are_killed():
    procs = [started(IGNORES_SIGTERM) for _ in range(4)]
    began = time.monotonic()
    stop_processes(procs, grace=1.0)
    took = time.monotonic() - began
    assert [p.returncode for p in procs] == [-9] * 4
    assert took < 3.0, f"{took:.1f}s: the grace periods were added up, not shared"


def test_processes_that_honour_sigterm_stop_at_once_and_a_dead_one_is_skipped():
    procs = [started("import time; print('up', flush=True); time.sleep(60)") for _ in range(3)]
    procs[0].kill()
    procs[0].wait()
    stop_processes(procs, grace=30.0)
    assert [p.returncode for p in procs] == [-9, -15, -15]


def test_the_twins_go_programs_run_with_a_lazier_collector_unless_the_user_set_one(monkeypatch):
    from twin.processes import GO_GC_PERCENT, go_env
    monkeypatch.delenv("GOGC", raising=False)
    assert go_env({"PATH": "/bin"}) == {"PATH": "/bin", "GOGC": GO_GC_PERCENT}
    monkeypatch.setenv("GOGC", "150")
    assert go_env({})["GOGC"] == "150"
