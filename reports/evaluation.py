"""The one evaluation of a run: an allure-results folder (never the cluster) in, a typed SignOff
(reports/signoff_doc.py) out. The run's own sign-off (reports/signoff.py) and the matrix page (reports/run_results.py)
both call `evaluate`, so they cannot disagree.

Inputs: allure `*-result.json`, and the run record that stack/record.py wrote there (kstack-run.json, phases,
inventory, failure categories, retries, evidence; one file per xdist worker where a worker writes).

Each test of the inventory (every acceptance test pytest collected) has one outcome: passed, failed, broken, skipped
(by pytest: its Allure status), deselected (by -k/-m: the inventory says so) or not executed (selected, without a
result); the counts add up to the inventory. A test is shown by its Allure name, which is its allure.title.

A criterion (stack/criteria.py) is
- failed   when any test that proves it failed or broke;
- passed   when it is applicable, at least one inventory test proves it, and every such test ran and passed;
- not-run  otherwise, with the reason (not applicable / skipped with reasons / deselected / not executed: ids).
The verdict is ERROR when the run stopped before any check ran (options, preflight: `stopped`); FAIL when a criterion
failed; otherwise INCOMPLETE when kstack-run.json is missing or an applicable criterion was not run; otherwise PASS.
Inapplicable criteria are listed as NOT RUN but do not block PASS.

A failure's category is the one its check recorded; only a failure without one (a foreign exception) is classified by
its message. Every string of the result goes through stack.redact.scrub.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.criteria import CRITERIA
from stack.record import ClusterInfo, InventoryEntry, Phase, ResultsRecord, RunRecord, read_results_record

from reports.categories import classify, title
from reports.signoff_doc import (EXECUTED, FAILED, NOT_RUN, OUTCOMES, PASSED, CriterionResult, EvidenceRow, Failure,
                                 Inventory, Limitation, PhaseRow, ResultCounts, Retries, RetryReason, SignOff,
                                 TestResult, redacted)

MESSAGE_LIMIT = 4000


@dataclass(frozen=True)
class AllureResult:
    """One test's latest Allure result, as far as the sign-off reads it."""
    id: str                         # AS_ID (fullName when absent)
    name: str                       # its allure.title
    status: str
    message: str
    criteria: list[str]
    start: float | None             # epoch milliseconds
    stop: float | None


# ---------------------------------------------------------------------------------------------------------------------
# reading


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _labels(result: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in result.get("labels") or []:
        if isinstance(label, dict) and label.get("name"):
            out.setdefault(str(label["name"]), []).append(str(label.get("value", "")))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_results(results_dir: Path) -> dict[str, AllureResult]:
    """The allure test results keyed by AS_ID (fullName when absent); the latest by `stop` wins."""
    latest: dict[str, tuple[tuple, AllureResult]] = {}
    for path in sorted(Path(results_dir).glob("*-result.json")):
        data = _load_json(path)
        if not isinstance(data, dict):
            continue
        labels = _labels(data)
        as_id = (labels.get("as_id") or labels.get("AS_ID") or [None])[0]  # allure-pytest writes "as_id"
        key = as_id or data.get("fullName") or data.get("name") or path.stem
        details = data.get("statusDetails") or {}
        start, stop = _number(data.get("start")), _number(data.get("stop"))
        entry = AllureResult(id=key, name=data.get("name") or key, status=data.get("status") or "unknown",
                             message=details.get("message") or "", criteria=labels.get("criterion", []),
                             start=start, stop=stop)
        order = (_order(stop), _order(start), path.stat().st_mtime, path.name)
        if key not in latest or order > latest[key][0]:
            latest[key] = (order, entry)
    return {key: entry for key, (_, entry) in latest.items()}


def _order(value: float | None) -> float:
    return float("-inf") if value is None else value


def _phase_rows(phases: list[Phase]) -> list[PhaseRow]:
    rows = []
    for p in phases:
        over = p.budget is not None and p.seconds > p.budget
        # A phase that raised at (or past) its budget ran out of time; one that raised earlier failed.
        timed_out = not p.finished and p.budget is not None and p.seconds >= p.budget
        status = "ok" if p.finished and not over else "OVER BUDGET" if p.finished else \
            "TIMED OUT" if timed_out else "DID NOT FINISH"
        rows.append(PhaseRow(p.name, p.seconds, p.budget, over or timed_out, p.finished, p.error_type, status))
    return rows


def _outcomes(results: dict[str, AllureResult], inventory: dict[str, InventoryEntry]) -> dict[str, str]:
    """Every test's outcome (OUTCOMES), inventory first in collection order, then results outside it."""
    out = {}
    for test_id in [*inventory, *sorted(set(results) - set(inventory))]:
        status = results[test_id].status if test_id in results else None
        if test_id in inventory and inventory[test_id].deselected:
            out[test_id] = "deselected"     # this run did not select it, whatever an older result says
        elif status in (*EXECUTED, "skipped"):
            out[test_id] = status
        else:
            out[test_id] = "not_executed"
    return out


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def _applicability(run: RunRecord | None) -> dict[str, tuple[bool, str | None]]:
    """Per criterion id: (applicable, reason), as the run recorded it (stack.criteria decided it when the run
    started); a criterion the record does not hold (no record: the run stopped before its profile was loaded) is
    taken as applicable, so it shows NOT RUN, never PASSED."""
    recorded = {c.id: c for c in run.criteria} if run else {}
    return {c.id: (recorded[c.id].applicable, recorded[c.id].reason or (None if recorded[c.id].applicable
                                                                          else "not applicable"))
            if c.id in recorded else (True, None) for c in CRITERIA}


def evaluate_criteria(run: RunRecord | None, results: dict[str, AllureResult],
                      inventory: dict[str, InventoryEntry]) -> list[CriterionResult]:
    applicability = _applicability(run)
    recorded_titles = {c.id: c.title for c in run.criteria} if run else {}
    outcomes = _outcomes(results, inventory)
    out = []
    for criterion in CRITERIA:
        inv_tests = sorted(t for t, e in inventory.items() if criterion.id in e.criteria)
        labelled = sorted(k for k, r in results.items() if criterion.id in r.criteria)
        tests = sorted(set(inv_tests) | set(labelled))
        is_applicable, na_reason = applicability[criterion.id]
        broken = [t for t in tests if outcomes[t] in ("failed", "broken")]
        if broken:
            status, reason = FAILED, "; ".join(f"{t} {outcomes[t]}" for t in broken)
        elif not is_applicable:
            status, reason = NOT_RUN, f"not applicable: {na_reason}"
        elif not inv_tests:
            status = NOT_RUN
            reason = "no test in the inventory proves it" + (
                f" (results without inventory: {', '.join(labelled)})" if labelled else "")
        else:
            status, reason = _not_run_reason(inv_tests, outcomes, results)
        out.append(CriterionResult(criterion.id, recorded_titles.get(criterion.id) or criterion.title, status,
                                   is_applicable, tests, reason))
    return out


def _not_run_reason(tests: list[str], outcomes: dict[str, str],
                    results: dict[str, AllureResult]) -> tuple[str, str | None]:
    """passed when every one of `tests` ran and passed; else not-run, saying which did not run and why."""
    skipped = [t for t in tests if outcomes[t] == "skipped"]
    deselected = [t for t in tests if outcomes[t] == "deselected"]
    not_executed = [t for t in tests if outcomes[t] == "not_executed"]
    parts = []
    if skipped:
        parts.append("skipped: " + "; ".join(f"{t}: {skip_reason(results[t].message)}" for t in skipped))
    if deselected:
        parts.append("deselected: " + ", ".join(deselected))
    if not_executed:
        parts.append("not executed: " + ", ".join(not_executed))
    return (NOT_RUN, "; ".join(parts)) if parts else (PASSED, None)


def skip_reason(message: str | None) -> str:
    """A skip's reason, without the "Skipped: " allure-pytest puts before every one."""
    text = (message or "").strip()
    line = text.splitlines()[0].strip() if text else ""
    return line.removeprefix("Skipped: ") or "no reason given"


def _verdict(criteria: list[CriterionResult], run_problem: str | None) -> tuple[str, list[str]]:
    failed = [c for c in criteria if c.status == FAILED]
    not_run = [c for c in criteria if c.applicable and c.status == NOT_RUN]
    reasons = []
    if failed:
        reasons.append("failed: " + ", ".join(c.id for c in failed))
    if run_problem:
        reasons.append(run_problem)
    if not_run:
        reasons.append("not run: " + ", ".join(c.id for c in not_run))
    if failed:
        return "FAIL", reasons
    if run_problem or not_run:
        return "INCOMPLETE", reasons
    if not any(c.status == PASSED for c in criteria):
        return "INCOMPLETE", ["no criterion passed"]
    return "PASS", ["every applicable criterion passed"]


def _limitations(run: RunRecord | None, phases: list[PhaseRow]) -> list[Limitation]:
    out, seen = [], set()
    for item in run.limitations if run else []:
        if item.id not in seen:
            seen.add(item.id)
            out.append(Limitation(item.id, item.text))
    for download in run.downloads if run else []:
        if not download.pinned:
            out.append(Limitation("unpinned-download",
                                  f"{download.url} is not pinned by a known sha256 in the profile; "
                                  f"the downloaded file's sha256 was {download.sha256 or 'not recorded'}"))
    for phase in phases:
        if phase.status == "TIMED OUT":
            out.append(Limitation("over-budget", f"phase {phase.name} timed out after {phase.seconds} s "
                                                 f"(its budget: {phase.budget} s)"))
        elif phase.over_budget:
            out.append(Limitation("over-budget", f"phase {phase.name} took {phase.seconds} s, "
                                                 f"over its budget of {phase.budget} s"))
        elif not phase.finished:
            out.append(Limitation("phase-unfinished", f"phase {phase.name} did not finish: it raised "
                                                      f"{phase.error_type or 'an error'} after {phase.seconds} s"))
    return out


def _failures(results: dict[str, AllureResult], record: ResultsRecord) -> list[Failure]:
    """Failed and broken tests with their category: the one their check recorded, else classified by message."""
    recorded: dict[str, str] = {}
    for f in record.failures:
        if f.category and f.id not in recorded:
            recorded[f.id] = f.category
    blockers = _blockers(record)
    out = []
    for key in sorted(results):
        r = results[key]
        if r.status not in ("failed", "broken"):
            continue
        message = r.message if len(r.message) <= MESSAGE_LIMIT else r.message[:MESSAGE_LIMIT] + " …"
        structured = title(recorded.get(key))
        out.append(Failure(id=key, name=r.name, title=r.name, status=r.status,
                           category=structured or classify(r.status, r.message),
                           category_source="recorded" if structured else "message", criteria=r.criteria,
                           message=message, blocked_by=blockers[key].blocked_by if key in blockers else None,
                           root_cause=blockers[key].root_cause if key in blockers else None))
    return out


def _blockers(record: ResultsRecord) -> dict:
    """Test id -> its recorded failure that names a blocker (stack/blocking.py)."""
    return {f.id: f for f in record.failures if f.blocked_by}


def _mark_blocked(criteria: list[CriterionResult], record: ResultsRecord) -> None:
    """A failed criterion whose failed tests were blocked names the blockers' criteria (its root cause)."""
    blockers = _blockers(record)
    for c in criteria:
        c.blocked_by = sorted({blockers[t].blocked_by for t in c.tests if t in blockers}) if c.status == FAILED else []
        if c.blocked_by:
            c.reason = f"blocked by {', '.join(c.blocked_by)}; {c.reason}"


def _evidence(record: ResultsRecord, results: dict[str, AllureResult]) -> list[EvidenceRow]:
    """What each test recorded that proves it, with its criteria and outcome, in test order."""
    return [EvidenceRow(e.id, e.what, results[e.id].status if e.id in results else "unknown",
                        results[e.id].criteria if e.id in results else [], list(e.facts))
            for e in sorted(record.evidence, key=lambda e: e.id)]


def _retries(record: ResultsRecord) -> Retries:
    by_layer = Counter(r.layer for r in record.retries)
    reasons = Counter(f"{r.layer}: {r.reason}" for r in record.retries)
    return Retries(len(record.retries), dict(sorted(by_layer.items())),
                   [RetryReason(k, v) for k, v in reasons.most_common(10)])


def evaluate(results_dir: str | Path, stopped: str | None = None, bundle_sha256: str | None = None) -> SignOff:
    """The sign-off of the run whose allure-results are `results_dir`. `stopped`: the run stopped before any check
    ran (bad options, preflight): the verdict is ERROR, with that message as its reason."""
    results_dir = Path(results_dir)
    record = read_results_record(results_dir)
    run, run_problem = record.run, record.run_problem
    results = read_results(results_dir) if results_dir.is_dir() else {}
    inventory = {e.id: e for e in record.inventory}
    phases = _phase_rows(record.phases)
    criteria = evaluate_criteria(run, results, inventory)
    _mark_blocked(criteria, record)
    verdict, verdict_reasons = _verdict(criteria, run_problem)
    if not record.inventory_found:
        verdict_reasons.append("no kstack-inventory-*.json: the expected test inventory is unknown")
    if stopped is not None:
        verdict, verdict_reasons = "ERROR", [f"the run stopped before any check ran: {stopped}"]
    elif not results_dir.is_dir():
        verdict = "INCOMPLETE"
        verdict_reasons.append(f"results directory {results_dir} does not exist")

    outcomes = _outcomes(results, inventory)
    inv_ids = sorted(inventory)
    executed = [t for t in inv_ids if outcomes[t] in EXECUTED]

    def having(outcome: str) -> list[str]:
        return [t for t in inv_ids if outcomes[t] == outcome]

    tests = [TestResult(t, results[t].name if t in results else t, o,
                        inventory[t].criteria if t in inventory else results[t].criteria,
                        skip_reason(results[t].message) if o == "skipped" else None)
             for t, o in outcomes.items()]
    counts = Counter(outcomes.values())
    doc = SignOff(
        verdict=verdict, verdict_reasons=verdict_reasons, simulated=run.simulated if run else None,
        profile=run.profile if run else None, profile_path=run.profile_path if run else None,
        versions=dict(run.versions) if run else {}, running_versions=dict(run.running_versions) if run else {},
        cluster=run.cluster if run else ClusterInfo(), suite=run.suite if run else None,
        runner=run.runner if run else None, started=run.started if run else None,
        finished=run.finished if run else None, duration_seconds=run.duration_seconds if run else None,
        criteria=criteria,
        inventory=Inventory(expected=len(inv_ids), executed=len(executed),
                            missing=[t for t in inv_ids if t not in executed], skipped=having("skipped"),
                            deselected=having("deselected"), not_executed=having("not_executed"),
                            outside=sorted(set(results) - set(inventory)) if record.inventory_found else [],
                            found=record.inventory_found),
        tests=tests, phases=phases, namespaces=run.namespaces if run else [], pods=run.pods if run else [],
        images=run.images if run else [], downloads=run.downloads if run else [],
        limitations=_limitations(run, phases), support=run.support if run else None,
        simulation=run.simulation if run else None, install=run.install if run else None,
        failures=_failures(results, record), evidence=_evidence(record, results), retries=_retries(record),
        run_errors=list(run.errors) if run else [],
        results=ResultCounts(total=len(outcomes), **{o: counts[o] for o in OUTCOMES}), ha=run.ha if run else None,
        bundle_sha256=bundle_sha256,
        generated=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    return redacted(doc)


def build_signoff(results_dir: str | Path) -> dict:
    """signoff.json's content for `results_dir` (without the bundle's sha256, which the writer adds)."""
    return evaluate(results_dir).to_data()
