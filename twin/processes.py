"""The twin's processes: the environment its Go programs run with, and stopping them all.

Stopping: SIGTERM them all at once, wait on one shared grace period, SIGKILL the rest. Stopping them one after
another with a grace period each made a twin's stop the sum of its slowest processes (14 s measured on an idle
machine, more under load); signalling them together bounds it by one grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable

GRACE_SECONDS = 5.0

# Go's collector runs when the heap has grown by GOGC percent (default 100). A twin is a short-lived test cluster on a
# machine with memory to spare and two busy cores: at 400 the API server spends about a third less CPU on a whole
# suite run (measured on a shared seed twin: 11.7 -> 8.3 CPU-s; the whole run 29 -> 21 CPU-s), for about twice its
# memory. 1000 gained nothing more and took 1.4 GB. The collector's pace changes no API behaviour.
GO_GC_PERCENT = "400"


def go_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for one of the twin's Go programs (control plane, KWOK, KServe's controller): GOGC as set by the user,
    else GO_GC_PERCENT."""
    return {**env, "GOGC": os.environ.get("GOGC") or GO_GC_PERCENT}


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    if group:
        try:
            os.killpg(proc.pid, sig)
            return
        except (ProcessLookupError, PermissionError):
            pass             # not a group leader, or already gone: the process itself
    proc.send_signal(sig)    # does nothing for a process that is gone


def stop_processes(procs: Iterable[subprocess.Popen], grace: float = GRACE_SECONDS, group: bool = True) -> None:
    """SIGTERM every live process (its whole process group where `group`), wait until `grace` seconds have passed
    for all of them together, then SIGKILL and reap what is left."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        _signal(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, group)
            proc.wait()


def stop_process(proc: subprocess.Popen | None, grace: float = GRACE_SECONDS, group: bool = True) -> None:
    if proc is not None:
        stop_processes([proc], grace, group)
