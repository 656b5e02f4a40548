"""The sign-off report: signoff.json, signoff.md, signoff.html and results-bundle.tar.gz, built from an allure-results
folder only (never from the cluster).

Inputs: allure `*-result.json`, and the run record that stack/record.py wrote there (kstack-run.json, phases,
inventory, failure categories, retries; one file per xdist worker where a worker writes).

Each test of the inventory (every acceptance test pytest collected) has one outcome: passed, failed, broken, skipped
(by pytest: its Allure status), deselected (by -k/-m: the inventory says so) or not executed (selected, without a
result); the counts add up to the inventory. A test is shown by its Allure name, which is its allure.title.

A criterion (stack/criteria.py) is
- failed   when any test that proves it failed or broke;
- passed   when it is applicable, at least one inventory test proves it, and every such test ran and passed;
- not-run  otherwise, with the reason (not applicable / skipped with reasons / deselected / not executed: ids).
The verdict is ERROR when the run stopped before any check ran (options, preflight); FAIL when a criterion failed;
otherwise INCOMPLETE when kstack-run.json is missing or an applicable criterion was not run; otherwise PASS.
Inapplicable criteria are listed as NOT RUN but do not block PASS.

A failure's category is the one its check recorded; only a failure without one (a foreign exception) is classified by
its message. Every string that reaches an output goes through stack.redact.scrub.

    python -m reports.signoff RESULTS_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock

from stack.criteria import CRITERIA
from stack.record import (INSTALL_DIAGNOSTICS_DIR, InventoryEntry, Phase, ResultsRecord, RunRecord, read_results_record,
                          to_data)
from stack.redact import scrub
from stack.versions import same_version

from reports.categories import classify, title
from reports.render import atomic_write as _atomic_write
from reports.render import format_seconds as _fmt_seconds
from reports.render import h as _h
from reports.render import html_table as _html_table
from reports.render import md_table as _md_table
from reports.render import text as _text

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "reports" / "out"
BUNDLE_NAME = "results-bundle.tar.gz"
SIMULATED_BANNER = "SIMULATED: this run used the twin, a simulated cluster. It is not evidence about a real cluster."
EXECUTED = ("passed", "failed", "broken")
OUTCOMES = (*EXECUTED, "skipped", "deselected", "not_executed")
OUTCOME_LABEL = {"passed": "passed", "failed": "failed", "broken": "broken", "skipped": "skipped",
                 "deselected": "deselected", "not_executed": "not executed"}
MESSAGE_LIMIT = 4000

STATUS_LABEL = {"passed": "PASS", "failed": "FAIL", "not-run": "NOT RUN"}


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


def read_results(results_dir: Path) -> dict[str, dict]:
    """The allure test results keyed by AS_ID (fullName when absent); the latest by `stop` wins."""
    latest: dict[str, tuple[tuple, dict]] = {}
    for path in sorted(results_dir.glob("*-result.json")):
        data = _load_json(path)
        if not isinstance(data, dict):
            continue
        labels = _labels(data)
        as_id = (labels.get("as_id") or labels.get("AS_ID") or [None])[0]  # allure-pytest writes "as_id"
        key = as_id or data.get("fullName") or data.get("name") or path.stem
        details = data.get("statusDetails") or {}
        entry = {
            "id": key,
            "as_id": as_id,
            "name": data.get("name") or key,
            "full_name": data.get("fullName"),
            "status": data.get("status") or "unknown",
            "message": details.get("message") or "",
            "criteria": labels.get("criterion", []),
            "feature": (labels.get("feature") or [None])[0],
            "story": (labels.get("story") or [None])[0],
            "severity": (labels.get("severity") or [None])[0],
            "start": data.get("start"),
            "stop": data.get("stop"),
        }
        order = (_num(data.get("stop")), _num(data.get("start")), path.stat().st_mtime, path.name)
        if key not in latest or order > latest[key][0]:
            latest[key] = (order, entry)
    return {key: entry for key, (_, entry) in latest.items()}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("-inf")


def _phase_rows(phases: list[Phase]) -> list[dict]:
    rows = []
    for p in phases:
        over = p.budget is not None and p.seconds > p.budget
        # A phase that raised at (or past) its budget ran out of time; one that raised earlier failed.
        timed_out = not p.finished and p.budget is not None and p.seconds >= p.budget
        status = "ok" if p.finished and not over else "OVER BUDGET" if p.finished else \
            "TIMED OUT" if timed_out else "DID NOT FINISH"
        rows.append({"name": p.name, "seconds": p.seconds, "budget": p.budget, "over_budget": over or timed_out,
                     "finished": p.finished, "error_type": p.error_type, "status": status})
    return rows


def _outcomes(results: dict[str, dict], inventory: dict[str, InventoryEntry]) -> dict[str, str]:
    """Every test's outcome (OUTCOMES), inventory first in collection order, then results outside it."""
    out = {}
    for test_id in [*inventory, *sorted(set(results) - set(inventory))]:
        status = results.get(test_id, {}).get("status")
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


def evaluate_criteria(run: RunRecord | None, results: dict[str, dict],
                      inventory: dict[str, InventoryEntry]) -> list[dict]:
    applicability = _applicability(run)
    recorded_titles = {c.id: c.title for c in run.criteria} if run else {}
    outcomes = _outcomes(results, inventory)
    out = []
    for criterion in CRITERIA:
        inv_tests = sorted(t for t, e in inventory.items() if criterion.id in e.criteria)
        labelled = sorted(k for k, r in results.items() if criterion.id in r["criteria"])
        tests = sorted(set(inv_tests) | set(labelled))
        is_applicable, na_reason = applicability[criterion.id]
        broken = [t for t in tests if outcomes[t] in ("failed", "broken")]
        if broken:
            status = "failed"
            reason = "; ".join(f"{t} {outcomes[t]}" for t in broken)
        elif not is_applicable:
            status, reason = "not-run", f"not applicable: {na_reason}"
        elif not inv_tests:
            status = "not-run"
            reason = "no test in the inventory proves it" + (
                f" (results without inventory: {', '.join(labelled)})" if labelled else "")
        else:
            skipped = [t for t in inv_tests if outcomes[t] == "skipped"]
            deselected = [t for t in inv_tests if outcomes[t] == "deselected"]
            not_executed = [t for t in inv_tests if outcomes[t] == "not_executed"]
            if not skipped and not deselected and not not_executed:
                status, reason = "passed", None
            else:
                status = "not-run"
                parts = []
                if skipped:
                    parts.append("skipped: " + "; ".join(
                        f"{t}: {_skip_reason(results[t]['message'])}" for t in skipped))
                if deselected:
                    parts.append("deselected: " + ", ".join(deselected))
                if not_executed:
                    parts.append("not executed: " + ", ".join(not_executed))
                reason = "; ".join(parts)
        out.append({
            "id": criterion.id,
            "title": recorded_titles.get(criterion.id) or criterion.title,
            "status": status,
            "applicable": is_applicable,
            "tests": tests,
            "reason": reason,
        })
    return out


def _skip_reason(message: str | None) -> str:
    """A skip's reason, without the "Skipped: " allure-pytest puts before every one."""
    line = _first_line(message)
    return line.removeprefix("Skipped: ") or "no reason given"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _verdict(criteria: list[dict], run_problem: str | None) -> tuple[str, list[str]]:
    failed = [c for c in criteria if c["status"] == "failed"]
    not_run = [c for c in criteria if c["applicable"] and c["status"] == "not-run"]
    reasons = []
    if failed:
        reasons.append("failed: " + ", ".join(c["id"] for c in failed))
    if run_problem:
        reasons.append(run_problem)
    if not_run:
        reasons.append("not run: " + ", ".join(c["id"] for c in not_run))
    if failed:
        return "FAIL", reasons
    if run_problem or not_run:
        return "INCOMPLETE", reasons
    if not any(c["status"] == "passed" for c in criteria):
        return "INCOMPLETE", ["no criterion passed"]
    return "PASS", ["every applicable criterion passed"]


def _limitations(run: RunRecord | None, phases: list[dict]) -> list[dict]:
    out = []
    seen = set()
    for item in run.limitations if run else []:
        if item.id not in seen:
            seen.add(item.id)
            out.append({"id": item.id, "text": item.text})
    for download in run.downloads if run else []:
        if not download.pinned:
            out.append({"id": "unpinned-download",
                        "text": f"{download.url} is not pinned by a known sha256 in the profile; "
                                f"the downloaded file's sha256 was {download.sha256 or 'not recorded'}"})
    for phase in phases:
        if phase["status"] == "TIMED OUT":
            out.append({"id": "over-budget", "text": f"phase {phase['name']} timed out after {phase['seconds']} s "
                                                     f"(its budget: {phase['budget']} s)"})
        elif phase["over_budget"]:
            out.append({"id": "over-budget", "text": f"phase {phase['name']} took {phase['seconds']} s, "
                                                     f"over its budget of {phase['budget']} s"})
        elif not phase["finished"]:
            out.append({"id": "phase-unfinished", "text": f"phase {phase['name']} did not finish: it raised "
                                                          f"{phase['error_type'] or 'an error'} after {phase['seconds']} s"})
    return out


def _failures(results: dict[str, dict], record: ResultsRecord) -> list[dict]:
    """Failed and broken tests with their category: the one their check recorded, else classified by message."""
    recorded: dict[str, str] = {}
    for f in record.failures:
        if f.category and f.id not in recorded:
            recorded[f.id] = f.category
    blockers = _blockers(record)
    out = []
    for key in sorted(results):
        r = results[key]
        if r["status"] not in ("failed", "broken"):
            continue
        message = r["message"] if len(r["message"]) <= MESSAGE_LIMIT else r["message"][:MESSAGE_LIMIT] + " …"
        structured = title(recorded.get(key))
        out.append({"id": key, "name": r["name"], "title": r["name"], "status": r["status"],
                    "category": structured or classify(r["status"], r["message"]),
                    "category_source": "recorded" if structured else "message",
                    "criteria": r["criteria"], "message": message,
                    "blocked_by": blockers[key].blocked_by if key in blockers else None,
                    "root_cause": blockers[key].root_cause if key in blockers else None})
    return out


def _blockers(record: ResultsRecord) -> dict:
    """Test id -> its recorded failure that names a blocker (stack/blocking.py)."""
    return {f.id: f for f in record.failures if f.blocked_by}


def _mark_blocked(criteria: list[dict], record: ResultsRecord) -> None:
    """A failed criterion whose failed tests were blocked names the blockers' criteria (its root cause)."""
    blockers = _blockers(record)
    for c in criteria:
        c["blocked_by"] = sorted({blockers[t].blocked_by for t in c["tests"] if t in blockers}) \
            if c["status"] == "failed" else []
        if c["blocked_by"]:
            c["reason"] = f"blocked by {', '.join(c['blocked_by'])}; {c['reason']}"


EVIDENCE_SHOWN = 240     # characters of a fact shown in md and html; signoff.json keeps the recorded value


def _evidence(record: ResultsRecord, results: dict[str, dict]) -> list[dict]:
    """What each test recorded that proves it, with its criteria and outcome, in test order."""
    return [{"id": e.id, "what": e.what, "status": results.get(e.id, {}).get("status", "unknown"),
             "criteria": results.get(e.id, {}).get("criteria", []),
             "facts": [{"name": f.name, "value": f.value} for f in e.facts]}
            for e in sorted(record.evidence, key=lambda e: e.id)]


def _evidence_rows(doc: dict) -> list[list[str]]:
    def shown(value: str) -> str:
        return value if len(value) <= EVIDENCE_SHOWN else value[:EVIDENCE_SHOWN] + " …"
    return [[e["id"], e["status"], e["what"], "; ".join(f"{f['name']}: {shown(f['value'])}" for f in e["facts"])]
            for e in doc["evidence"]]


def _retries(record: ResultsRecord) -> dict:
    by_layer = Counter(r.layer for r in record.retries)
    reasons = Counter(f"{r.layer}: {r.reason}" for r in record.retries)
    return {"total": len(record.retries), "by_layer": dict(sorted(by_layer.items())),
            "top_reasons": [{"reason": k, "count": v} for k, v in reasons.most_common(10)]}


def build_signoff(results_dir: str | Path) -> dict:
    """The sign-off document (the content of signoff.json, without bundle_sha256 which write_signoff adds)."""
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

    outcomes = _outcomes(results, inventory)
    inv_ids = sorted(inventory)
    executed = [t for t in inv_ids if outcomes[t] in EXECUTED]

    def having(outcome: str) -> list[str]:
        return [t for t in inv_ids if outcomes[t] == outcome]

    tests = [{"id": t, "title": results[t]["name"] if t in results else t, "outcome": o,
              "criteria": inventory[t].criteria if t in inventory else results[t]["criteria"],
              "detail": _skip_reason(results[t]["message"]) if o == "skipped" else None}
             for t, o in outcomes.items()]
    data = to_data(run) if run else {}
    doc = {
        "verdict": verdict,
        "verdict_reasons": verdict_reasons,
        "simulated": run.simulated if run else None,
        "profile": data.get("profile"),
        "profile_path": data.get("profile_path"),
        "versions": data.get("versions") or {},
        "running_versions": data.get("running_versions") or {},
        "cluster": data.get("cluster") or {**{k: None for k in ("provider", "server_version", "context", "node_image")},
                                           "nodes": []},
        "suite": data.get("suite"),
        "runner": data.get("runner"),
        "started": data.get("started"),
        "finished": data.get("finished"),
        "duration_seconds": data.get("duration_seconds"),
        "criteria": criteria,
        "inventory": {"expected": len(inv_ids), "executed": len(executed),
                      "missing": [t for t in inv_ids if t not in executed], "skipped": having("skipped"),
                      "deselected": having("deselected"), "not_executed": having("not_executed"),
                      "outside": sorted(set(results) - set(inventory)) if record.inventory_found else [],
                      "found": record.inventory_found},
        "tests": tests,
        "phases": phases,
        "namespaces": data.get("namespaces") or [],
        "pods": data.get("pods") or [],
        "images": data.get("images") or [],
        "downloads": data.get("downloads") or [],
        "limitations": _limitations(run, phases),
        "support": data.get("support"),
        "simulation": data.get("simulation"),
        "install": data.get("install"),
        "failures": _failures(results, record),
        "evidence": _evidence(record, results),
        "retries": _retries(record),
        "run_errors": data.get("errors") or [],
        # Every test once: the outcomes add up to the total (the inventory, and results outside it).
        "results": {"total": len(outcomes), **{o: sum(1 for x in outcomes.values() if x == o) for o in OUTCOMES}},
        "bundle_sha256": None,
        "generated": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    return scrub_all(doc)


def scrub_all(obj: Any) -> Any:
    """A copy with every string (keys included) passed through stack.redact.scrub."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {(scrub(k) if isinstance(k, str) else k): scrub_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_all(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------------------------------
# the results bundle


def _bundle_members(results_dir: Path, exclude: Iterable[Path]) -> list[Path]:
    excluded = [p.resolve() for p in exclude]
    members = []
    for root, dirs, files in os.walk(results_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() not in excluded
                         and not (root_path / d).is_symlink())
        for name in sorted(files):
            path = root_path / name
            if path.is_symlink() or name.endswith(".lock") or path.resolve() in excluded:
                continue
            members.append(path)
    return sorted(members, key=lambda p: p.relative_to(results_dir).as_posix())


def write_bundle(results_dir: Path, bundle_path: Path, exclude: Iterable[Path] = ()) -> str:
    """A deterministic tar.gz of results_dir (sorted names, mtime 0, uid/gid 0, gzip mtime 0); text files scrubbed.
    Returns its sha256."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _bundle_members(results_dir, [bundle_path, *exclude]):
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                data = scrub(text).encode("utf-8")
            info = tarfile.TarInfo(name="allure-results/" + path.relative_to(results_dir).as_posix())
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    payload = buf.getvalue()
    _atomic_write(bundle_path, payload)
    return hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# rendering


def _yes_no(value: Any) -> str:
    return "yes" if value is True else ("no" if value is False else _text(value))


def _version_rows(doc: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for component in sorted(set(doc["versions"]) | set(doc["running_versions"])):
        want = doc["versions"].get(component)
        have = doc["running_versions"].get(component)
        match = "unknown" if not have or not want else ("yes" if same_version(str(have), str(want)) else "NO")
        # A run reads every component's version at its end (None: unreadable); one stopped before it has none.
        unread = "unreadable" if component in doc["running_versions"] else "not read (the run stopped before)"
        rows.append((component, _text(want), _text(have) if have else unread, match))
    return rows


def _kubectl_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _pods_by_namespace(doc: dict) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for pod in doc["pods"]:
        grouped.setdefault(str(pod.get("namespace") or "?"), []).append(pod)
    return {ns: sorted(pods, key=lambda p: str(p.get("name"))) for ns, pods in sorted(grouped.items())}


def _pod_row(pod: dict) -> list[str]:
    return [_text(pod.get("name")), _text(pod.get("ready")), _text(pod.get("status")),
            _text(pod.get("restarts")), _text(pod.get("age"))]


def _code_block(text: str) -> str:
    return "```\n" + text.replace("```", "`\u200b``") + "\n```"


def _install_failure_rows(doc: dict) -> list[list[str]]:
    failure = (doc.get("install") or {}).get("failure")
    if not failure:
        return []
    rows = [["component", _text(failure.get("component"))], ["step", _text(failure.get("step"))],
            ["error type", _text(failure.get("error_type"))], ["category", _text(title(failure.get("category")))],
            ["message", _text(failure.get("message"))]]
    rows += [["diagnostics", f"allure-results/{INSTALL_DIAGNOSTICS_DIR}/{name} (in the results bundle)"]
             for name in failure.get("diagnostics") or []]
    return rows


def _retries_line(doc: dict) -> str:
    r = doc["retries"]
    if not r["total"]:
        return "no retries"
    return f"{r['total']} retries: " + ", ".join(f"{layer} {n}" for layer, n in r["by_layer"].items())


def _retry_rows(doc: dict) -> list[list[str]]:
    return [[x["reason"], str(x["count"])] for x in doc["retries"]["top_reasons"]]


def _suite_text(doc: dict) -> str:
    suite = doc.get("suite") or {}
    commit = suite.get("commit") or "unknown"
    tree = {True: " (dirty: the work tree differs from it)", False: " (clean)"}.get(suite.get("dirty"), "")
    return (f"kstack {_text(suite.get('version') or 'unknown')}, commit {commit}{tree}, "
            f"Python {_text(suite.get('python') or 'unknown')}, pytest {_text(suite.get('pytest') or 'unknown')}")


def _runner_text(doc: dict) -> str:
    runner = doc.get("runner") or {}
    text = f"host {_text(runner.get('hostname') or 'unknown')}"
    if not runner.get("ci"):
        return text + ", not in CI"
    attempt = f" (attempt {runner['ci_attempt']})" if runner.get("ci_attempt") else ""
    return text + f", {runner['ci']} run {_text(runner.get('ci_url') or 'URL unknown')}{attempt}"


def _node_rows(doc: dict) -> list[list[str]]:
    return [[_text(n.get("name")), _text(n.get("kubelet_version")), _text(n.get("container_runtime")),
             _text(n.get("os_image"))] for n in doc["cluster"].get("nodes") or []]


NODE_HEADER = ["NAME", "KUBELET", "CONTAINER RUNTIME", "OS IMAGE"]


def _count_cells(doc: dict) -> tuple[list[str], list[str]]:
    r = doc["results"]
    return [*(OUTCOME_LABEL[o] for o in OUTCOMES), "total"], [*(str(r[o]) for o in OUTCOMES), str(r["total"])]


def _counts_line(doc: dict) -> str:
    inv = doc["inventory"]
    line = f"expected {inv['expected']} (every acceptance test collected, before -k/-m deselection)"
    if inv["outside"]:
        line += f"; {len(inv['outside'])} result(s) outside the inventory: " + ", ".join(inv["outside"])
    return line


def _titles(doc: dict) -> dict[str, str]:
    return {t["id"]: t["title"] for t in doc["tests"]}


def _not_run(doc: dict) -> list[dict]:
    """The inventory's tests that did not execute, with their outcome and the skip reason."""
    return [t for t in doc["tests"] if t["outcome"] in ("skipped", "deselected", "not_executed")]


def _outcome_text(test: dict) -> str:
    return OUTCOME_LABEL[test["outcome"]] + (f": {test['detail']}" if test.get("detail") else "")


def _md_test(title: str, test_id: str) -> str:
    return f"`{test_id}`" if title == test_id else f"{title} (`{test_id}`)"


def _phase_status(phase: dict) -> str:
    if phase["status"] == "DID NOT FINISH" and phase.get("error_type"):
        return f"DID NOT FINISH ({phase['error_type']})"
    return phase["status"]


OUTSIDE_RANGE_TITLE = "Outside the tested range"


def support_text(support: dict) -> str:
    """The support finding (stack.record.SupportFinding, as the document holds it) in one sentence."""
    return (f"Kubernetes {support['server_version']} is outside profile '{support['profile']}''s tested range "
            f"{support['tested_range']} (the intersection of its components' own statements, below). The stack was "
            "verified all the same; --outside-tested-range fail makes such a run stop instead.")


def render_markdown(doc: dict) -> str:
    out: list[str] = []
    if doc["simulated"]:
        out += [f"> **{SIMULATED_BANNER}**", ""]
    out += [f"# KServe stack sign-off: {doc['verdict']}", ""]
    for reason in doc["verdict_reasons"]:
        out.append(f"- {reason}")
    out.append("")
    if doc.get("support"):
        out += [f"> **{OUTSIDE_RANGE_TITLE}:** {support_text(doc['support'])}", ">"]
        out += [f"> - {component}: {said}" for component, said in doc["support"]["statements"].items()]
        out.append("")
    cluster = doc["cluster"]
    out += [
        f"- **Profile:** {_text(doc['profile'])}" + (f" (`{doc['profile_path']}`)" if doc.get("profile_path") else ""),
        f"- **Cluster:** provider {_text(cluster.get('provider'))}, Kubernetes {_text(cluster.get('server_version'))}"
        + (f", node image `{cluster['node_image']}`" if cluster.get("node_image") else ""),
        f"- **Simulated:** {'yes' if doc['simulated'] else ('no' if doc['simulated'] is False else 'unknown')}",
        f"- **Suite:** {_suite_text(doc)}",
        f"- **Runner:** {_runner_text(doc)}",
        f"- **Started:** {_text(doc['started'])}; **finished:** {_text(doc['finished'])}; "
        f"**duration:** {_fmt_seconds(doc['duration_seconds'])}",
        f"- **Generated:** {doc['generated']}",
        f"- **Results bundle sha256:** `{_text(doc['bundle_sha256'])}`",
        "",
        "## Versions (profile vs running)", "",
        _md_table(["component", "profile", "running", "match"], [list(r) for r in _version_rows(doc)]), "",
        "## Acceptance criteria", "",
    ]
    titles = _titles(doc)
    for c in doc["criteria"]:
        box = "[x]" if c["status"] == "passed" else "[ ]"
        line = f"- {box} **{STATUS_LABEL[c['status']]}** {c['id']}: {c['title']}"
        if c["tests"]:
            line += " — tests: " + "; ".join(titles.get(t, t) for t in c["tests"])
        if c["reason"]:
            line += f" — {c['reason']}"
        out.append(line.replace("\n", " "))
    header, counts = _count_cells(doc)
    out += ["", "## Inventory completeness", "", _counts_line(doc), "", _md_table(header, [counts]), ""]
    out += [f"- {_md_test(t['title'], t['id'])}: {_outcome_text(t)}" for t in _not_run(doc)]
    out += ["", "## Tests", ""]
    out += [_md_table(["check", "id", "outcome", "criteria"], [
        [t["title"], f"`{t['id']}`", _outcome_text(t), ", ".join(t["criteria"])] for t in doc["tests"]])
        if doc["tests"] else "none", ""]
    out += ["## Failures", ""]
    if doc["failures"]:
        out += [_md_table(["check", "status", "category", "criteria", "message"],
                          [[_md_test(f["title"], f["id"]), f["status"], f["category"], ", ".join(f["criteria"]),
                            f["message"]] for f in doc["failures"]]), ""]
    else:
        out += ["none", ""]
    install_rows = _install_failure_rows(doc)
    if install_rows:
        out += ["## Install failure", "", _md_table(["", ""], install_rows), ""]
    out += ["## Evidence", "", "What each check saw (full values in signoff.json and the Allure attachments).", ""]
    out += [_md_table(["test", "outcome", "evidence", "facts"], _evidence_rows(doc)), ""] if doc["evidence"] else \
        ["none recorded", ""]
    out += ["## Retries", "", _retries_line(doc), ""]
    if doc["retries"]["top_reasons"]:
        out += [_md_table(["layer: reason", "count"], _retry_rows(doc)), ""]
    if doc["run_errors"]:
        out += ["## Run errors", ""] + [f"- {e}" for e in doc["run_errors"]] + [""]
    out += ["## Nodes", ""]
    out += [_md_table(NODE_HEADER, _node_rows(doc)) if _node_rows(doc) else "not recorded", ""]
    out += ["## Namespaces", ""]
    if doc["namespaces"]:
        out += [_code_block(_kubectl_table(["NAME", "STATUS", "AGE"], [
            [_text(n.get("name")), _text(n.get("status")), _text(n.get("age"))] for n in doc["namespaces"]])), ""]
    else:
        out += ["not recorded", ""]
    out += ["## Pods", ""]
    if doc["pods"]:
        for ns, pods in _pods_by_namespace(doc).items():
            out += [f"### {ns}", "", _code_block(_kubectl_table(["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                                                                [_pod_row(p) for p in pods])), ""]
    else:
        out += ["not recorded", ""]
    if doc["images"]:
        out += ["## Controller images", "", _md_table(["component", "workload", "container", "image", "digest"], [
            [i.get("component"), f"{i.get('namespace')}/{i.get('workload')}", i.get("container"), i.get("image"),
             i.get("digest")] for i in doc["images"]]), ""]
    out += ["## Phase timings", ""]
    if doc["phases"]:
        out += [_md_table(["phase", "seconds", "budget", "within budget"], [
            [p["name"], p["seconds"], p["budget"], _phase_status(p)] for p in doc["phases"]]), ""]
    else:
        out += ["not recorded", ""]
    if doc["downloads"]:
        out += ["## Downloads", "", _md_table(["url", "sha256", "pinned"], [
            [d.get("url"), d.get("sha256"), _yes_no(d.get("pinned"))] for d in doc["downloads"]]), ""]
    sim = doc.get("simulation")
    if sim:
        out += ["## The simulated cluster", "",
                "Control plane: " + ", ".join(f"{k} {v}" for k, v in sim["control_plane"].items()), "",
                "Faults injected: " + (", ".join(sim.get("faults") or []) or "none"), "",
                f"Scenario: {sim.get('scenario') or 'none'}", "",
                _md_table(["part", "what runs", "detail"], [[x["name"], x["kind"], x["detail"]] for x in sim["parts"]]),
                ""]
    out += ["## Known limitations", ""]
    out += [f"1. **{lim['id']}**: {lim['text']}" for lim in doc["limitations"]] or ["none detected"]
    out.append("")
    return scrub("\n".join(out))


# Image refs with digests, URLs and messages have no spaces: every text may break anywhere (overflow-wrap counts in a
# table's column widths, unlike word-break), so the page never scrolls sideways.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;max-width:80rem;
overflow-wrap:anywhere}
h1{margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;max-width:100%}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3;overflow-wrap:normal}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto}code{font-family:ui-monospace,Menlo,Consolas,monospace}
.banner{background:#ffe08a;border:2px solid #b58900;padding:.8rem 1rem;font-weight:bold;margin-bottom:1rem}
.verdict{display:inline-block;padding:.2rem .8rem;border-radius:.3rem;color:#fff}
.PASS,.passed{background:#2e7d32;color:#fff}.FAIL,.ERROR,.failed{background:#c62828;color:#fff}
.INCOMPLETE,.not-run{background:#6d6d6d;color:#fff}
.status{padding:0 .4rem;border-radius:.2rem;white-space:nowrap}.over{color:#c62828;font-weight:bold}
.check{min-width:16rem}.msg{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
"""


def render_html(doc: dict) -> str:
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>KServe stack sign-off: {_h(doc['verdict'])}</title>", f"<style>{_CSS}</style></head><body>"]
    if doc["simulated"]:
        p.append(f'<div class="banner" role="alert">{_h(SIMULATED_BANNER)}</div>')
    p.append(f'<h1>KServe stack sign-off: <span class="verdict {_h(doc["verdict"])}">{_h(doc["verdict"])}</span></h1>')
    p.append("<ul>" + "".join(f"<li>{_h(r)}</li>" for r in doc["verdict_reasons"]) + "</ul>")
    if doc.get("support"):
        p.append(f'<div class="banner support" role="note"><b>{_h(OUTSIDE_RANGE_TITLE)}:</b> '
                 f'{_h(support_text(doc["support"]))}<ul>'
                 + "".join(f"<li>{_h(c)}: {_h(said)}</li>" for c, said in doc["support"]["statements"].items())
                 + "</ul></div>")
    cluster = doc["cluster"]
    summary = [
        ["Profile", _text(doc["profile"]) + (f" ({doc['profile_path']})" if doc.get("profile_path") else "")],
        ["Cluster provider", cluster.get("provider")], ["Kubernetes server", cluster.get("server_version")],
        ["Node image", cluster.get("node_image")],
        ["Simulated", "yes" if doc["simulated"] else ("no" if doc["simulated"] is False else "unknown")],
        ["Suite", _suite_text(doc)], ["Runner", _runner_text(doc)],
        ["Started", doc["started"]], ["Finished", doc["finished"]], ["Duration", _fmt_seconds(doc["duration_seconds"])],
        ["Generated", doc["generated"]], ["Results bundle sha256", doc["bundle_sha256"]],
    ]
    p.append(_html_table(["run", "value"], [[k, v] for k, v in summary]))
    p.append("<h2>Versions (profile vs running)</h2>")
    p.append(_html_table(["component", "profile", "running", "match"], [list(r) for r in _version_rows(doc)]))
    p.append("<h2>Acceptance criteria</h2>")
    rows = []
    titles = _titles(doc)
    for c in doc["criteria"]:
        rows.append([f'<span class="status {_h(c["status"])}">{_h(STATUS_LABEL[c["status"]])}</span>', _h(c["id"]),
                     _h(c["title"]), "<br>".join(f'<span title="{_h(t)}">{_h(titles.get(t, t))}</span>'
                                                 for t in c["tests"]) or "—",
                     _h(c["reason"])])
    p.append(_html_table(["status", "id", "criterion", "tests", "reason"], rows, raw=True))
    p.append("<h2>Inventory completeness</h2>")
    p.append(f"<p>{_h(_counts_line(doc))}</p>")
    header, counts = _count_cells(doc)
    p.append(_html_table(header, [counts]))
    if _not_run(doc):
        p.append("<ul>" + "".join(f"<li>{_h(t['title'])} <code>{_h(t['id'])}</code>: {_h(_outcome_text(t))}</li>"
                                  for t in _not_run(doc)) + "</ul>")
    p.append("<h2>Tests</h2>")
    if doc["tests"]:
        p.append(_html_table(["check", "id", "outcome", "criteria"], [
            [_h(t["title"]), f"<code>{_h(t['id'])}</code>", f'<span class="outcome {_h(t["outcome"])}">'
             f'{_h(_outcome_text(t))}</span>', _h(", ".join(t["criteria"]))] for t in doc["tests"]], raw=True))
    else:
        p.append("<p>none</p>")
    p.append("<h2>Failures</h2>")
    if doc["failures"]:
        p.append(_html_table(["check", "status", "category", "criteria", "message"], [
            [f'<div class="check">{_h(f["title"])}<br><code>{_h(f["id"])}</code></div>', _h(f["status"]), _h(f["category"]),
             _h(", ".join(f["criteria"])), f'<div class="msg">{_h(f["message"])}</div>'] for f in doc["failures"]],
            raw=True))
    else:
        p.append("<p>none</p>")
    install_rows = _install_failure_rows(doc)
    if install_rows:
        p.append("<h2>Install failure</h2>")
        p.append(_html_table(["", ""], install_rows))
    p.append("<h2>Evidence</h2>")
    p.append(_html_table(["test", "outcome", "evidence", "facts"], _evidence_rows(doc)) if doc["evidence"] else
             "<p>none recorded</p>")
    p.append("<h2>Retries</h2>")
    p.append(f"<p>{_h(_retries_line(doc))}</p>")
    if doc["retries"]["top_reasons"]:
        p.append(_html_table(["layer: reason", "count"], _retry_rows(doc)))
    if doc["run_errors"]:
        p.append("<h2>Run errors</h2>")
        p.append("<ul>" + "".join(f"<li>{_h(e)}</li>" for e in doc["run_errors"]) + "</ul>")
    p.append("<h2>Nodes</h2>")
    p.append(_html_table(NODE_HEADER, _node_rows(doc)) if _node_rows(doc) else "<p>not recorded</p>")
    p.append("<h2>Namespaces</h2>")
    if doc["namespaces"]:
        p.append(_html_table(["NAME", "STATUS", "AGE"], [[n.get("name"), n.get("status"), n.get("age")]
                                                         for n in doc["namespaces"]]))
    else:
        p.append("<p>not recorded</p>")
    p.append("<h2>Pods</h2>")
    if doc["pods"]:
        for ns, pods in _pods_by_namespace(doc).items():
            p.append(f"<h3>{_h(ns)}</h3>")
            p.append(_html_table(["NAME", "READY", "STATUS", "RESTARTS", "AGE"], [_pod_row(x) for x in pods]))
    else:
        p.append("<p>not recorded</p>")
    if doc["images"]:
        p.append("<h2>Controller images</h2>")
        p.append(_html_table(["component", "workload", "container", "image", "digest"], [
            [i.get("component"), f"{i.get('namespace')}/{i.get('workload')}", i.get("container"), i.get("image"),
             i.get("digest")] for i in doc["images"]]))
    p.append("<h2>Phase timings</h2>")
    if doc["phases"]:
        p.append(_html_table(["phase", "seconds", "budget", "within budget"], [
            [_h(x["name"]), _h(x["seconds"]), _h(x["budget"]),
             "ok" if x["status"] == "ok" else f'<span class="over">{_h(_phase_status(x))}</span>']
            for x in doc["phases"]], raw=True))
    else:
        p.append("<p>not recorded</p>")
    if doc["downloads"]:
        p.append("<h2>Downloads</h2>")
        p.append(_html_table(["url", "sha256", "pinned"], [[d.get("url"), d.get("sha256"), _yes_no(d.get("pinned"))]
                                                           for d in doc["downloads"]]))
    sim = doc.get("simulation")
    if sim:
        p.append("<h2>The simulated cluster</h2>")
        p.append("<p>Control plane: " + _h(", ".join(f"{k} {v}" for k, v in sim["control_plane"].items())) + "</p>")
        p.append("<p>Faults injected: " + _h(", ".join(sim.get("faults") or []) or "none") + "</p>")
        p.append(f"<p>Scenario: {_h(sim.get('scenario') or 'none')}</p>")
        p.append(_html_table(["part", "what runs", "detail"], [[x["name"], x["kind"], x["detail"]]
                                                                for x in sim["parts"]]))
    p.append("<h2>Known limitations</h2>")
    if doc["limitations"]:
        p.append("<ol>" + "".join(f"<li><b>{_h(x['id'])}</b>: {_h(x['text'])}</li>" for x in doc["limitations"])
                 + "</ol>")
    else:
        p.append("<p>none detected</p>")
    p.append("</body></html>")
    return scrub("\n".join(p)) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# writing


OUTPUT_NAMES = ("signoff.json", "signoff.md", "signoff.html", BUNDLE_NAME)


def remove_previous(out_dir: str | Path) -> list[Path]:
    """Remove a previous run's sign-off from out_dir (at the start of a run), so no old verdict is read as this
    run's when this one stops early. Only the sign-off's own files; returns those removed."""
    removed = []
    for name in OUTPUT_NAMES:
        path = Path(out_dir) / name
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def write_signoff(results_dir: str | Path, out_dir: str | Path = DEFAULT_OUT, stopped: str | None = None) -> list[Path]:
    """Write signoff.json, signoff.md, signoff.html and results-bundle.tar.gz into out_dir; returns their paths.

    `stopped`: the run stopped before any check ran (bad options, preflight): the verdict is ERROR, with that
    message as its reason.

    Call it from the xdist controller (or a non-xdist process) only; a filelock in out_dir serialises concurrent
    callers anyway, and each file is replaced atomically."""
    results_dir = Path(results_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / ".signoff.lock"), timeout=300):
        bundle = out_dir / BUNDLE_NAME
        sha = write_bundle(results_dir, bundle, exclude=[out_dir]) if results_dir.is_dir() else None
        doc = build_signoff(results_dir)
        doc["bundle_sha256"] = sha
        if stopped is not None:
            doc["verdict"] = "ERROR"
            doc["verdict_reasons"] = [f"the run stopped before any check ran: {stopped}"]
        elif not results_dir.is_dir():
            doc["verdict"] = "INCOMPLETE"
            doc["verdict_reasons"].append(f"results directory {results_dir} does not exist")
        doc = scrub_all(doc)
        paths = {
            "json": out_dir / "signoff.json",
            "md": out_dir / "signoff.md",
            "html": out_dir / "signoff.html",
        }
        _atomic_write(paths["json"], scrub(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n")
        _atomic_write(paths["md"], render_markdown(doc))
        _atomic_write(paths["html"], render_html(doc))
    return [paths["json"], paths["md"], paths["html"]] + ([bundle] if sha else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.signoff",
                                     description="Regenerate the sign-off from an allure-results folder.")
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    paths = write_signoff(args.results_dir, args.out)
    doc = json.loads(paths[0].read_text(encoding="utf-8"))
    print(summary_line(doc, paths))
    return 0


def summary_line(doc: dict, paths: list[Path]) -> str:
    sim = " (SIMULATED)" if doc.get("simulated") else ""
    return f"sign-off: {doc['verdict']}{sim}: " + ", ".join(str(p) for p in paths)


if __name__ == "__main__":
    sys.exit(main())
