"""Allure metadata files written into the allure-results directory at session end (controller only).

- environment.properties: the versions actually running (from kstack-run.json), escaped per java.util.Properties
- executor.json: the CI build (GitHub Actions) or a "local" executor
- categories.json: reports/categories.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from stack.provenance import ci_run
from stack.record import RunRecord
from stack.redact import scrub

from reports.categories import write_categories as _write_categories

REPORT_NAME = "KServe stack conformance"


# ---------------------------------------------------------------------------------------------------------------------
# java.util.Properties escaping (Properties.store): ISO-8859-1 file, so everything outside printable ASCII is \uXXXX.


def _escape_properties(text: str, is_key: bool) -> str:
    out = []
    for i, ch in enumerate(text):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\f":
            out.append("\\f")
        elif ch == " " and (is_key or i == 0):
            out.append("\\ ")
        elif ch in "=:#!":
            out.append("\\" + ch)
        elif code < 0x20 or code > 0x7E:
            if code > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as Java would store it
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    return "".join(out)


def properties_text(pairs: Mapping[str, Any]) -> str:
    lines = []
    for key, value in pairs.items():
        value = "" if value is None else str(value)
        lines.append(f"{_escape_properties(scrub(str(key)), True)}={_escape_properties(scrub(value), False)}")
    return "\n".join(lines) + "\n"


def environment_pairs(run: RunRecord | None) -> dict[str, str]:
    """Key/value pairs for environment.properties, in a stable order."""
    pairs: dict[str, str] = {}
    pairs["SIMULATED"] = "true" if run and run.simulated else "false"
    pairs["Profile"] = str(run.profile if run else "unknown")
    cluster = run.cluster if run else None
    pairs["Provider"] = str((cluster and cluster.provider) or "unknown")
    pairs["Kubernetes.server"] = str((cluster and cluster.server_version) or "unknown")
    pairs["Kubernetes.node_image"] = str((cluster and cluster.node_image) or "unknown")
    if cluster and cluster.context:
        pairs["Kubernetes.context"] = str(cluster.context)
    profile_versions = run.versions if run else {}
    running = run.running_versions if run else {}
    for component in sorted(set(profile_versions) | set(running)):
        pairs[f"{component}.version"] = str(running.get(component) or "unreadable")
        pairs[f"{component}.profile_version"] = str(profile_versions.get(component) or "not in profile")
    for image in sorted(run.images if run else [], key=lambda i: (i.component, i.namespace, i.workload, i.container)):
        key = f"image.{image.namespace or image.component}/{image.workload}/{image.container}"
        ref = str(image.image)
        pairs[key] = f"{ref}@{image.digest}" if image.digest and "@" not in ref else ref
    return pairs


def write_environment(results_dir: str | Path, run: RunRecord | None) -> Path:
    path = Path(results_dir) / "environment.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(properties_text(environment_pairs(run)), encoding="ascii")
    return path


# ---------------------------------------------------------------------------------------------------------------------


def executor_info(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Allure executor.json content: the GitHub Actions run, or a local executor."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true" or env.get("GITHUB_RUN_ID"):
        server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY") or ""
        run_number = env.get("GITHUB_RUN_NUMBER") or ""
        workflow = env.get("GITHUB_WORKFLOW") or "workflow"
        job = env.get("GITHUB_JOB") or ""
        repo_url = f"{server}/{repo}" if repo else server
        build_url = ci_run(env).ci_url or f"{repo_url}/actions"     # the run record's CI URL, the same link
        build_name = f"{workflow} #{run_number}" if run_number else workflow
        if job:
            build_name += f" ({job})"
        info: dict[str, Any] = {
            "name": "GitHub Actions",
            "type": "github",
            "url": repo_url,
            "buildName": build_name,
            "buildUrl": build_url,
            # Where the report is published: set KSTACK_REPORT_URL (e.g. GitHub Pages); else the run page,
            # which holds the report as an artifact.
            "reportUrl": env.get("KSTACK_REPORT_URL") or build_url,
            "reportName": REPORT_NAME,
        }
        if run_number.isdigit():
            info["buildOrder"] = int(run_number)
        return _scrub_all(info)
    return {"name": "local", "type": "local", "buildName": "local run", "reportName": REPORT_NAME}


def write_executor(results_dir: str | Path, env: Mapping[str, str] | None = None) -> Path:
    path = Path(results_dir) / "executor.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(executor_info(env), indent=2) + "\n", encoding="utf-8")
    return path


def write_categories(results_dir: str | Path) -> Path:
    return _write_categories(results_dir)


def _scrub_all(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {scrub(str(k)): _scrub_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub_all(v) for v in obj]
    return obj
