"""The sign-off report: signoff.json, signoff.md, signoff.html and results-bundle.tar.gz, built from an allure-results
folder only (never from the cluster).

Inputs (docs/architecture.md): allure `*-result.json`, `kstack-run.json`, `kstack-phases-*.jsonl`,
`kstack-inventory-*.json` (one per xdist worker; merged by id).

A criterion (stack/criteria.py) is
- failed   when any test that proves it failed or broke;
- passed   when it is applicable, at least one inventory test proves it, and every such test ran and passed;
- not-run  otherwise, with the reason (not applicable / skipped with reasons / not executed: ids).
The verdict is FAIL when a criterion failed; otherwise INCOMPLETE when kstack-run.json is missing or an applicable
criterion was not run; otherwise PASS. Inapplicable criteria are listed as NOT RUN but do not block PASS.

Every string that reaches an output goes through stack.redact.scrub.

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
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock

from stack.criteria import CRITERIA, applicable as _criterion_applicable
from stack.redact import scrub
from stack.versions import same_version

from reports.categories import classify
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


def read_inventory(results_dir: Path) -> tuple[dict[str, dict], bool]:
    """Inventory entries merged over workers by id (criteria united), and whether any inventory file was found."""
    merged: dict[str, dict] = {}
    found = False
    for path in sorted(results_dir.glob("kstack-inventory-*.json")):
        data = _load_json(path)
        if not isinstance(data, list):
            continue
        found = True
        for item in data:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            entry = merged.setdefault(str(item["id"]), {"id": str(item["id"]), "nodeid": item.get("nodeid"),
                                                         "criteria": []})
            for criterion in item.get("criteria") or []:
                if criterion not in entry["criteria"]:
                    entry["criteria"].append(str(criterion))
    return merged, found


def read_phases(results_dir: Path) -> list[dict]:
    phases = []
    for path in sorted(results_dir.glob("kstack-phases-*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict) or not item.get("name"):
                continue
            seconds = item.get("seconds")
            budget = item.get("budget")
            over = (isinstance(seconds, (int, float)) and isinstance(budget, (int, float)) and seconds > budget)
            phases.append({"name": str(item["name"]), "seconds": seconds, "budget": budget, "over_budget": over})
    return phases


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def _applicability(run: dict | None) -> dict[str, tuple[bool, str | None]]:
    """Per criterion id: (applicable, reason). From kstack-run.json's criteria, else from the profile's components."""
    out: dict[str, tuple[bool, str | None]] = {}
    recorded = {c.get("id"): c for c in (run or {}).get("criteria") or [] if isinstance(c, dict)}
    components = set(((run or {}).get("versions") or {}).keys())
    for criterion in CRITERIA:
        if criterion.id in recorded and "applicable" in recorded[criterion.id]:
            entry = recorded[criterion.id]
            reason = entry.get("reason")
            if not entry["applicable"] and not reason:
                reason = f"the profile has no {criterion.requires}" if criterion.requires else "not applicable"
            out[criterion.id] = (bool(entry["applicable"]), reason)
        elif components:
            out[criterion.id] = _criterion_applicable(criterion, components)
        else:
            out[criterion.id] = (True, None)
    return out


def evaluate_criteria(run: dict | None, results: dict[str, dict], inventory: dict[str, dict]) -> list[dict]:
    applicability = _applicability(run)
    recorded_titles = {c.get("id"): c.get("title") for c in (run or {}).get("criteria") or [] if isinstance(c, dict)}
    out = []
    for criterion in CRITERIA:
        inv_tests = sorted(t for t, e in inventory.items() if criterion.id in e["criteria"])
        labelled = sorted(k for k, r in results.items() if criterion.id in r["criteria"])
        tests = sorted(set(inv_tests) | set(labelled))
        is_applicable, na_reason = applicability[criterion.id]
        broken = [t for t in tests if results.get(t, {}).get("status") in ("failed", "broken")]
        if broken:
            status = "failed"
            reason = "; ".join(f"{t} {results[t]['status']}" for t in broken)
        elif not is_applicable:
            status, reason = "not-run", f"not applicable: {na_reason}"
        elif not inv_tests:
            status = "not-run"
            reason = "no test in the inventory proves it" + (
                f" (results without inventory: {', '.join(labelled)})" if labelled else "")
        else:
            skipped = [t for t in inv_tests if results.get(t, {}).get("status") == "skipped"]
            not_executed = [t for t in inv_tests if t not in results or results[t]["status"] not in EXECUTED
                            and results[t]["status"] != "skipped"]
            if not skipped and not not_executed:
                status, reason = "passed", None
            else:
                status = "not-run"
                parts = []
                if skipped:
                    parts.append("skipped: " + "; ".join(
                        f"{t}: {_first_line(results[t]['message']) or 'no reason given'}" for t in skipped))
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


def _limitations(run: dict | None, phases: list[dict]) -> list[dict]:
    out = []
    seen = set()
    for item in (run or {}).get("limitations") or []:
        if isinstance(item, dict) and item.get("id") not in seen:
            seen.add(item.get("id"))
            out.append({"id": str(item.get("id")), "text": str(item.get("text") or "")})
    for download in (run or {}).get("downloads") or []:
        if isinstance(download, dict) and download.get("pinned") is False:
            out.append({"id": "unpinned-download",
                        "text": f"{download.get('url')} is not pinned by a known sha256 in the profile; "
                                f"the downloaded file's sha256 was {download.get('sha256') or 'not recorded'}"})
    for phase in phases:
        if phase["over_budget"]:
            out.append({"id": "over-budget", "text": f"phase {phase['name']} took {phase['seconds']} s, "
                                                     f"over its budget of {phase['budget']} s"})
    return out


def build_signoff(results_dir: str | Path) -> dict:
    """The sign-off document (the content of signoff.json, without bundle_sha256 which write_signoff adds)."""
    results_dir = Path(results_dir)
    run_path = results_dir / "kstack-run.json"
    run = _load_json(run_path) if run_path.is_file() else None
    run_problem = None
    if not run_path.is_file():
        run_problem = "kstack-run.json is missing: the run did not finish or its metadata was not written"
    elif not isinstance(run, dict):
        run, run_problem = None, "kstack-run.json is unreadable"
    results = read_results(results_dir) if results_dir.is_dir() else {}
    inventory, inventory_found = read_inventory(results_dir) if results_dir.is_dir() else ({}, False)
    phases = read_phases(results_dir) if results_dir.is_dir() else []
    criteria = evaluate_criteria(run, results, inventory)
    verdict, verdict_reasons = _verdict(criteria, run_problem)
    if not inventory_found:
        verdict_reasons.append("no kstack-inventory-*.json: the expected test inventory is unknown")

    inv_ids = sorted(inventory)
    executed = [t for t in inv_ids if results.get(t, {}).get("status") in EXECUTED]
    skipped = [t for t in inv_ids if results.get(t, {}).get("status") == "skipped"]
    missing = [t for t in inv_ids if t not in executed]

    failures = []
    for key in sorted(results):
        r = results[key]
        if r["status"] in ("failed", "broken"):
            message = r["message"] if len(r["message"]) <= MESSAGE_LIMIT else r["message"][:MESSAGE_LIMIT] + " …"
            failures.append({"id": key, "name": r["name"], "status": r["status"],
                             "category": classify(r["status"], r["message"]), "criteria": r["criteria"],
                             "message": message})

    run = run or {}
    cluster = run.get("cluster") or {}
    doc = {
        "verdict": verdict,
        "verdict_reasons": verdict_reasons,
        "simulated": bool(run.get("simulated")) if run else None,
        "profile": run.get("profile"),
        "profile_path": run.get("profile_path"),
        "versions": run.get("versions") or {},
        "running_versions": run.get("running_versions") or {},
        "cluster": {k: cluster.get(k) for k in ("provider", "server_version", "context", "node_image")},
        "started": run.get("started"),
        "finished": run.get("finished"),
        "duration_seconds": run.get("duration_seconds"),
        "criteria": criteria,
        "inventory": {"expected": len(inv_ids), "executed": len(executed), "missing": missing, "skipped": skipped,
                      "found": inventory_found},
        "phases": phases,
        "namespaces": [n for n in run.get("namespaces") or [] if isinstance(n, dict)],
        "pods": [p for p in run.get("pods") or [] if isinstance(p, dict)],
        "images": [i for i in run.get("images") or [] if isinstance(i, dict)],
        "downloads": [d for d in run.get("downloads") or [] if isinstance(d, dict)],
        "limitations": _limitations(run, phases),
        "failures": failures,
        "results": {"total": len(results),
                    **{s: sum(1 for r in results.values() if r["status"] == s)
                       for s in ("passed", "failed", "broken", "skipped")}},
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
        rows.append((component, _text(want), _text(have) if have else "unreadable", match))
    return rows


def _kubectl_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
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


def render_markdown(doc: dict) -> str:
    out: list[str] = []
    if doc["simulated"]:
        out += [f"> **{SIMULATED_BANNER}**", ""]
    out += [f"# KServe stack sign-off: {doc['verdict']}", ""]
    for reason in doc["verdict_reasons"]:
        out.append(f"- {reason}")
    out.append("")
    cluster = doc["cluster"]
    out += [
        f"- **Profile:** {_text(doc['profile'])}" + (f" (`{doc['profile_path']}`)" if doc.get("profile_path") else ""),
        f"- **Cluster:** provider {_text(cluster.get('provider'))}, Kubernetes {_text(cluster.get('server_version'))}"
        + (f", node image `{cluster['node_image']}`" if cluster.get("node_image") else ""),
        f"- **Simulated:** {'yes' if doc['simulated'] else ('no' if doc['simulated'] is False else 'unknown')}",
        f"- **Started:** {_text(doc['started'])}; **finished:** {_text(doc['finished'])}; "
        f"**duration:** {_fmt_seconds(doc['duration_seconds'])}",
        f"- **Generated:** {doc['generated']}",
        f"- **Results bundle sha256:** `{_text(doc['bundle_sha256'])}`",
        "",
        "## Versions (profile vs running)", "",
        _md_table(["component", "profile", "running", "match"], [list(r) for r in _version_rows(doc)]), "",
        "## Acceptance criteria", "",
    ]
    for c in doc["criteria"]:
        box = "[x]" if c["status"] == "passed" else "[ ]"
        line = f"- {box} **{STATUS_LABEL[c['status']]}** {c['id']}: {c['title']}"
        if c["tests"]:
            line += " — tests: " + ", ".join(f"`{t}`" for t in c["tests"])
        if c["reason"]:
            line += f" — {c['reason']}"
        out.append(line.replace("\n", " "))
    inv = doc["inventory"]
    out += ["", "## Inventory completeness", "",
            f"expected {inv['expected']}, executed {inv['executed']}, not executed {len(inv['missing'])}"
            f" (skipped {len(inv['skipped'])})", ""]
    if inv["missing"]:
        out += [f"- `{t}`" + (" (skipped)" if t in inv["skipped"] else "") for t in inv["missing"]] + [""]
    out += ["## Failures", ""]
    if doc["failures"]:
        out += [_md_table(["test", "status", "category", "criteria", "message"],
                          [[f["id"], f["status"], f["category"], ", ".join(f["criteria"]), f["message"]]
                           for f in doc["failures"]]), ""]
    else:
        out += ["none", ""]
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
            [p["name"], p["seconds"], p["budget"], "OVER BUDGET" if p["over_budget"] else "ok"]
            for p in doc["phases"]]), ""]
    else:
        out += ["not recorded", ""]
    if doc["downloads"]:
        out += ["## Downloads", "", _md_table(["url", "sha256", "pinned"], [
            [d.get("url"), d.get("sha256"), _yes_no(d.get("pinned"))] for d in doc["downloads"]]), ""]
    out += ["## Known limitations", ""]
    out += [f"1. **{lim['id']}**: {lim['text']}" for lim in doc["limitations"]] or ["none detected"]
    out.append("")
    return scrub("\n".join(out))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;max-width:80rem}
h1{margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;
vertical-align:top}th{background:#f3f3f3}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto}code{font-family:ui-monospace,Menlo,Consolas,monospace}
.banner{background:#ffe08a;border:2px solid #b58900;padding:.8rem 1rem;font-weight:bold;margin-bottom:1rem}
.verdict{display:inline-block;padding:.2rem .8rem;border-radius:.3rem;color:#fff}
.PASS,.passed{background:#2e7d32;color:#fff}.FAIL,.failed{background:#c62828;color:#fff}
.INCOMPLETE,.not-run{background:#6d6d6d;color:#fff}
.status{padding:0 .4rem;border-radius:.2rem;white-space:nowrap}.over{color:#c62828;font-weight:bold}
.msg{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
"""


def render_html(doc: dict) -> str:
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>KServe stack sign-off: {_h(doc['verdict'])}</title>", f"<style>{_CSS}</style></head><body>"]
    if doc["simulated"]:
        p.append(f'<div class="banner" role="alert">{_h(SIMULATED_BANNER)}</div>')
    p.append(f'<h1>KServe stack sign-off: <span class="verdict {_h(doc["verdict"])}">{_h(doc["verdict"])}</span></h1>')
    p.append("<ul>" + "".join(f"<li>{_h(r)}</li>" for r in doc["verdict_reasons"]) + "</ul>")
    cluster = doc["cluster"]
    summary = [
        ["Profile", _text(doc["profile"]) + (f" ({doc['profile_path']})" if doc.get("profile_path") else "")],
        ["Cluster provider", cluster.get("provider")], ["Kubernetes server", cluster.get("server_version")],
        ["Node image", cluster.get("node_image")],
        ["Simulated", "yes" if doc["simulated"] else ("no" if doc["simulated"] is False else "unknown")],
        ["Started", doc["started"]], ["Finished", doc["finished"]], ["Duration", _fmt_seconds(doc["duration_seconds"])],
        ["Generated", doc["generated"]], ["Results bundle sha256", doc["bundle_sha256"]],
    ]
    p.append(_html_table(["run", "value"], [[k, v] for k, v in summary]))
    p.append("<h2>Versions (profile vs running)</h2>")
    p.append(_html_table(["component", "profile", "running", "match"], [list(r) for r in _version_rows(doc)]))
    p.append("<h2>Acceptance criteria</h2>")
    rows = []
    for c in doc["criteria"]:
        rows.append([f'<span class="status {_h(c["status"])}">{_h(STATUS_LABEL[c["status"]])}</span>', _h(c["id"]),
                     _h(c["title"]), "<br>".join(f"<code>{_h(t)}</code>" for t in c["tests"]) or "—",
                     _h(c["reason"])])
    p.append(_html_table(["status", "id", "criterion", "tests", "reason"], rows, raw=True))
    inv = doc["inventory"]
    p.append("<h2>Inventory completeness</h2>")
    p.append(f"<p>expected {inv['expected']}, executed {inv['executed']}, not executed {len(inv['missing'])} "
             f"(skipped {len(inv['skipped'])})</p>")
    if inv["missing"]:
        p.append("<ul>" + "".join(f"<li><code>{_h(t)}</code>{' (skipped)' if t in inv['skipped'] else ''}</li>"
                                  for t in inv["missing"]) + "</ul>")
    p.append("<h2>Failures</h2>")
    if doc["failures"]:
        p.append(_html_table(["test", "status", "category", "criteria", "message"], [
            [f"<code>{_h(f['id'])}</code>", _h(f["status"]), _h(f["category"]), _h(", ".join(f["criteria"])),
             f'<div class="msg">{_h(f["message"])}</div>'] for f in doc["failures"]], raw=True))
    else:
        p.append("<p>none</p>")
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
             '<span class="over">OVER BUDGET</span>' if x["over_budget"] else "ok"] for x in doc["phases"]], raw=True))
    else:
        p.append("<p>not recorded</p>")
    if doc["downloads"]:
        p.append("<h2>Downloads</h2>")
        p.append(_html_table(["url", "sha256", "pinned"], [[d.get("url"), d.get("sha256"), _yes_no(d.get("pinned"))]
                                                           for d in doc["downloads"]]))
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


def write_signoff(results_dir: str | Path, out_dir: str | Path = DEFAULT_OUT) -> list[Path]:
    """Write signoff.json, signoff.md, signoff.html and results-bundle.tar.gz into out_dir; returns their paths.

    Call it from the xdist controller (or a non-xdist process) only; a filelock in out_dir serialises concurrent
    callers anyway, and each file is replaced atomically."""
    results_dir = Path(results_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / ".signoff.lock"), timeout=300):
        bundle = out_dir / BUNDLE_NAME
        if results_dir.is_dir():
            sha = write_bundle(results_dir, bundle, exclude=[out_dir])
        else:
            sha = None
        doc = build_signoff(results_dir)
        doc["bundle_sha256"] = sha
        if not results_dir.is_dir():
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
