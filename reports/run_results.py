"""What one acceptance run left behind, read into typed records: the ONLY place the matrix page (reports/matrix.py)
reads a run's files; the run record itself is read by stack/record.py (the one reader and writer of it).

A run folder is what one `pytest suites/acceptance` run writes, laid out as `make matrix` and the CI jobs lay it:

    RUN_DIR/allure-results/   --alluredir: *-result.json, kstack-run.json, kstack-phases-*.jsonl, kstack-inventory-*.json
    RUN_DIR/signoff/          --signoff-dir: signoff.{json,md,html}, derived from allure-results (not read here)
    RUN_DIR/junit.xml         written next to the Allure results (not read here)

An allure-results folder itself is accepted as RUN_DIR too.

Facts come from structured fields only: each criterion's status from reports.evaluation.evaluate (the one evaluation
of criteria, the same the run's own sign-off used), a failed test's category from the sign-off's failures, the order of
the failures from the Allure results' start times. Nothing is parsed out of a message text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reports.evaluation import evaluate, read_results
from reports.signoff_doc import SignOff
from stack import record
from stack.versions import same_version

RUN_RECORD = record.RUN_FILE
ALLURE_DIR = "allure-results"
FAILED = ("failed", "broken")


@dataclass(frozen=True)
class FailedTest:
    id: str
    status: str                 # failed | broken
    category: str               # reports.categories, as the sign-off classified it
    start: float | None         # epoch milliseconds (Allure's `start`)


@dataclass(frozen=True)
class CriterionOutcome:
    id: str
    title: str
    status: str                 # passed | failed | not-run (reports.signoff_doc)
    reason: str | None          # the sign-off's reason (not run: why; failed: which tests)
    failures: tuple[FailedTest, ...] = ()    # its failed/broken tests, earliest first

    @property
    def first_failure(self) -> FailedTest | None:
        return self.failures[0] if self.failures else None


@dataclass(frozen=True)
class ComponentVersion:
    component: str
    wanted: str | None          # the profile's version
    running: str | None         # read from the cluster at the end of the run (None: unreadable)

    @property
    def matches(self) -> bool | None:
        if not self.wanted or not self.running:
            return None
        return same_version(self.running, self.wanted)


@dataclass(frozen=True)
class RunResults:
    source: Path
    name: str                   # the profile's name, or the folder's when the run record is unreadable
    problem: str | None         # why the results are incomplete (no folder, no or unreadable run record); None: readable
    verdict: str                # PASS | FAIL | INCOMPLETE
    verdict_reasons: tuple[str, ...] = ()
    simulated: bool | None = None
    profile: str | None = None
    provider: str | None = None
    server_version: str | None = None
    node_image: str | None = None
    started: str | None = None
    finished: str | None = None
    duration_seconds: float | None = None
    versions: tuple[ComponentVersion, ...] = ()
    criteria: tuple[CriterionOutcome, ...] = ()
    outside_range: str | None = None   # the tested range the cluster's Kubernetes is outside of ("1.25-1.27")

    def criterion(self, criterion_id: str) -> CriterionOutcome | None:
        return next((c for c in self.criteria if c.id == criterion_id), None)


def allure_dir(run_dir: Path) -> Path:
    """The allure-results folder of a run folder (or the folder itself when it is one)."""
    nested = run_dir / ALLURE_DIR
    return nested if nested.is_dir() else run_dir


def _folder_name(run_dir: Path) -> str:
    return run_dir.parent.name if run_dir.name == ALLURE_DIR and run_dir.parent.name else run_dir.name


def _record_problem(results: Path) -> str | None:
    """Why the run record cannot be used, or None."""
    if not (results / RUN_RECORD).is_file():
        return (f"no {RUN_RECORD} in {results}: the run did not finish (cancelled, timed out or crashed before its "
                "session ended)")
    try:
        record.read_run(results)
    except record.RecordError as e:
        return f"{results}: {e}"
    return None


def _incomplete(run_dir: Path, problem: str) -> RunResults:
    return RunResults(source=run_dir, name=_folder_name(run_dir), problem=problem, verdict="INCOMPLETE",
                      verdict_reasons=(problem,))


def _outcomes(doc: SignOff, results: Path) -> tuple[CriterionOutcome, ...]:
    category = {f.id: f.category for f in doc.failures}
    tests = read_results(results)
    outcomes = []
    for c in doc.criteria:
        failed = [FailedTest(t, tests[t].status, category.get(t, "unknown"), tests[t].start)
                  for t in c.tests if t in tests and tests[t].status in FAILED]
        failed.sort(key=lambda f: (f.start is None, f.start or 0.0, f.id))
        outcomes.append(CriterionOutcome(c.id, c.title, c.status, c.reason, tuple(failed)))
    return tuple(outcomes)


def read_run(run_dir: str | Path) -> RunResults:
    """The results of one run folder; a missing or unreadable one gives INCOMPLETE with its reason, never an error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return _incomplete(run_dir, f"no results at {run_dir}: the run's job did not run, or its results were not "
                                    "uploaded or downloaded")
    results = allure_dir(run_dir)
    problem = _record_problem(results)
    try:
        doc = evaluate(results)
        criteria = _outcomes(doc, results)
    except (KeyError, TypeError, AttributeError, ValueError) as e:   # a run record of the wrong shape
        return _incomplete(run_dir, f"the results in {results} are unreadable: {type(e).__name__}: {e}")
    versions = tuple(ComponentVersion(name, _str(doc.versions.get(name)), _str(doc.running_versions.get(name)))
                     for name in sorted(set(doc.versions) | set(doc.running_versions)))
    return RunResults(
        source=run_dir, name=doc.profile if not problem and doc.profile else _folder_name(run_dir),
        problem=problem, verdict=doc.verdict, verdict_reasons=tuple(doc.verdict_reasons),
        simulated=None if problem else doc.simulated, profile=doc.profile, provider=doc.cluster.provider,
        server_version=doc.cluster.server_version, node_image=doc.cluster.node_image, started=doc.started,
        finished=doc.finished, duration_seconds=doc.duration_seconds, versions=versions, criteria=criteria,
        outside_range=doc.support.tested_range if doc.support else None)


def _str(value) -> str | None:
    return None if value is None or value == "" else str(value)
