"""Runs of the acceptance suite for the self-tests, each made once per `make test`, and the twins they run on.

- `run_suite(folder, *args)`: `pytest suites/acceptance` in a subprocess, as a user runs it; its sign-off, Allure
  results and console output stay in `folder` (a `Run`).
- `SharedRuns`: a whole run that several tests read (a profile's PASS, the matrix page, the categories of a fault's
  failures) is made once per session, by the first xdist worker that needs it; the others wait for it and read it.
- `SharedTwin`: one running twin of a profile per worker, for the runs that need a fault but not a twin's start:
  the faults are struck, the suite attaches to the twin (`--twin-attach`), the faults are undone, then a health gate
  (no fault left, the stack Ready, the caBundles valid, the run's namespaces gone: `Twin.health`) says whether the
  twin can serve the next run; one that fails it is replaced by a fresh twin from the snapshot. Every run and gate
  is logged in the session's `shared-twins.jsonl`, summarised at the end of `make test`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from filelock import FileLock

from tests.helpers import run_pytest

log = logging.getLogger("tests.twinruns")

SUITE_TIMEOUT = 600.0
TWIN_LOG = "shared-twins.jsonl"
FAULT_SEED_ENV = "KSTACK_FAULT_SEED"     # the order of the fault runs (tests/conftest.py prints it)


@dataclass
class Run:
    """One finished `pytest suites/acceptance` run: its sign-off (signoff.json as a dict), console output, folders."""
    folder: Path
    doc: dict
    output: str
    health: list[str] = field(default_factory=list)     # what the shared twin's gate found after it (empty: healthy)

    @property
    def results(self) -> Path:
        return self.folder / "allure-results"

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def statuses(self) -> dict[str, str]:
        return {c["id"]: c["status"] for c in self.doc["criteria"]}

    def failures_of(self, criterion: str) -> list[dict]:
        return [f for f in self.doc["failures"] if criterion in f["criteria"]]

    def signoff_md(self) -> str:
        return (self.out / "signoff.md").read_text()

    @classmethod
    def load(cls, folder: Path) -> "Run":
        health = folder / "health.json"
        return cls(folder, json.loads((folder / "out" / "signoff.json").read_text()),
                   (folder / "output.txt").read_text(),
                   json.loads(health.read_text()) if health.exists() else [])


def run_suite(folder: Path, *args: str, env: dict | None = None, timeout: float = SUITE_TIMEOUT) -> Run:
    """`pytest suites/acceptance ARGS` into `folder` (allure-results/, out/, output.txt). The run must write its
    sign-off; an assertion error with the output's tail says why it did not."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = run_pytest("suites/acceptance", "--alluredir", str(folder / "allure-results"), "--signoff-dir",
                      str(folder / "out"), "-p", "no:randomly", *args, env=env, timeout=timeout)
    output = proc.stdout + proc.stderr
    (folder / "output.txt").write_text(output)
    signoff = folder / "out" / "signoff.json"
    assert signoff.exists(), f"no sign-off written\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return Run(folder, json.loads(signoff.read_text()), output)


def session_root(tmp_path_factory, worker_id: str) -> Path:
    """A folder every xdist worker of this session sees (the base temp's parent under xdist)."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "shared-runs"
    root.mkdir(exist_ok=True)
    return root


class SharedRuns:
    """Named runs made once per session: `get(name, make)` returns the run `make(folder)` made, by whichever worker
    asked first (the others wait on its lock). A run that could not be made raises the same error for every
    reader, instead of being made again."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, name: str, make: Callable[[Path], Run]) -> Run:
        folder = self.root / name.replace("/", "_").replace(":", "_")
        with FileLock(str(folder) + ".lock"):
            done, error = folder / "complete", folder / "error.txt"
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                try:
                    run = make(folder)
                    (folder / "health.json").write_text(json.dumps(run.health))
                except BaseException as e:
                    error.write_text(f"{type(e).__name__}: {e}")
                    done.write_text("")
                    raise
                done.write_text("")
                return run
        if error.exists():
            raise AssertionError(f"the shared run {name} failed when it was made: {error.read_text()[-4000:]}")
        return Run.load(folder)


class SharedTwin:
    """A running twin of one profile that serves many runs (see the module's docstring)."""

    def __init__(self, profile: str | Path, workdir: Path, log_path: Path, worker: str):
        self.profile, self.workdir, self.log_path, self.worker = str(profile), workdir, log_path, worker
        self.twin = None
        self.generation = 0        # how many twins this one has been (a failed gate replaces it)
        self.runs = 0
        self._run: Run | None = None

    def _start(self):
        from stack.profile import Profile
        from twin import Twin
        self.generation += 1
        self.runs = 0
        workdir = self.workdir / f"twin-{self.generation}"
        shutil.rmtree(workdir, ignore_errors=True)
        self.twin = Twin(Profile.load(self.profile), workdir=workdir).start()
        return self.twin

    def run(self, folder: Path, faults: list[str], *args: str, env: dict | None = None) -> Run:
        """The suite attached to this twin with `faults` struck; they are undone afterwards and the health gate
        decides whether the next run gets this twin or a fresh one (the gate's findings are `Run.health`)."""
        folder.mkdir(parents=True, exist_ok=True)
        from stack.record import write_handoff
        with self.struck(faults, args) as twin:
            handoff = write_handoff(twin.workdir, twin.handoff(), path=folder / "handoff.json")
            self._run = run_suite(folder, "--cluster", "twin", "--twin-attach", str(handoff), "--profile",
                                  self.profile, *args, env=env)
        return self._run

    @contextlib.contextmanager
    def struck(self, faults: list[str], args: tuple = ()):
        """This twin with `faults` struck (the twin itself, for a test that looks at it directly); then undone, and
        the health gate. The run made meanwhile, if any, is `self._run`, and gets the gate's findings."""
        twin = self.twin or self._start()
        started = time.monotonic()
        self.runs += 1
        self._run = None
        twin.set_faults(faults)
        try:
            yield twin
        finally:
            gate_started = time.monotonic()
            health = self._gate(twin)
            self._log(faults, args, time.monotonic() - started, health, self._run,
                      gate_seconds=time.monotonic() - gate_started)
            if self._run is not None:
                self._run.health = health

    def _gate(self, twin) -> list[str]:
        """Undo the faults, then the health gate; a twin that fails it is stopped, and the next run starts a fresh
        one from the snapshot."""
        started = time.monotonic()
        try:
            twin.clear_faults()
            undone = time.monotonic()
            problems = twin.health()
        except Exception as e:  # noqa: BLE001 - an undo that failed leaves the twin unknown: replace it
            undone, problems = time.monotonic(), [f"undoing the faults failed: {type(e).__name__}: {e}"]
        log.info("shared twin %s: undone in %.1fs, health gate in %.1fs", self.profile, undone - started,
                 time.monotonic() - undone)
        if problems:
            log.warning("shared twin %s: replaced after its health gate: %s", self.profile, problems)
            self.stop()
        return problems

    def _log(self, faults, args, seconds: float, health: list[str], run: Run | None, gate_seconds: float) -> None:
        entry = {"worker": self.worker, "profile": Path(self.profile).stem, "twin": self.generation,
                 "run": self.runs, "faults": faults, "args": list(args), "seconds": round(seconds, 1),
                 "suite_seconds": run.doc.get("duration_seconds") if run else None,
                 "gate_seconds": round(gate_seconds, 1),
                 "verdict": run.doc["verdict"] if run else None, "health": health}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def stop(self) -> None:
        if self.twin is not None:
            self.twin.stop()
            self.twin = None


class SharedTwins:
    """This worker's shared twins, one per profile, started when a run first needs one. At most one runs at a time:
    a worker runs one test at a time, and an idle twin is not free (its API server, controllers and stand-ins keep
    about a tenth of a core busy; three workers holding three or four each starved the twins that worked, on two
    cores). Asking for another profile's twin stops the running one; it starts again from its snapshot when needed."""

    def __init__(self, workdir: Path, log_path: Path, worker: str):
        self.workdir, self.log_path, self.worker = workdir, log_path, worker
        self._twins: dict[str, SharedTwin] = {}

    def __call__(self, profile: str | Path) -> SharedTwin:
        key = str(profile)
        if key not in self._twins:
            self._twins[key] = SharedTwin(profile, self.workdir / f"shared-{len(self._twins)}", self.log_path,
                                          self.worker)
        for other, twin in self._twins.items():
            if other != key:
                twin.stop()
        return self._twins[key]

    def stop(self) -> None:
        for twin in self._twins.values():
            twin.stop()


def summary(log_path: Path) -> list[str]:
    """The shared twins' account of a session, for the end of `make test`."""
    if not log_path.exists():
        return []
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    twins = {(e["worker"], e["profile"], e["twin"]) for e in entries}
    failed = [e for e in entries if e["health"]]
    suite = sum(e.get("suite_seconds") or 0 for e in entries)
    gates = sum(e.get("gate_seconds") or 0 for e in entries)
    lines = [f"{len(entries)} suite runs on {len(twins)} shared twins, {sum(e['seconds'] for e in entries):.0f} s "
             f"(the suites' own {suite:.0f} s, health gates {gates:.0f} s, the rest pytest's start, strikes and "
             f"sign-offs); {len(failed)} health gates failed (the twin was replaced)"]
    lines += [f"  after {e['faults'] or 'no fault'} ({e['worker']}, twin {e['twin']}, run {e['run']}): "
              f"{'; '.join(e['health'])[:500]}" for e in failed]
    return lines


def fault_seed() -> int:
    return int(os.environ.get(FAULT_SEED_ENV) or 0)
