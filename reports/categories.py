"""Allure failure categories for the KServe-stack suite, and the same classification in Python.

Failure messages are sentences about the stack, written to these conventions (the first category that matches wins,
so the order below is the precedence):

1. Infrastructure             "Docker daemon ...", "kind cluster ...", "API server unreachable", "cluster unreachable",
                              "connection refused" together with "API server"
2. Image pull                 "ImagePullBackOff", "ErrImagePull", "InvalidImageName"
3. Webhook/TLS not ready      "x509", "certificate signed by unknown authority", "caBundle", "failed calling webhook",
                              "no endpoints available", "webhook not admitting" (not when the message is about a
                              manifest download: a TLS error on a download is an install failure)
4. Install failure            starts with "install failed" (after pytest's "Failed: "), "install of <component> failed", "helm", "manifest download"
5. Component not ready        "CrashLoopBackOff", "not ready", "not Available", "0/N ready", "NotReady",
                              "not Established"
6. Timeout                    "timed out", "deadline"
7. Product defect (wrong result)  any other failed test (an AssertionError: wrong prediction, wrong SANs, missing CRD,
                              a request denied or admitted wrongly)
8. Test defect                any other broken test (an unexpected exception in the test or a fixture)

Image pull and Webhook/TLS come before Component not ready and Timeout, so that "timed out after 300s waiting for
deployment kserve/kserve-controller-manager; last observed: ImagePullBackOff" is an image-pull problem.

The regexes are written for three engines at once: Allure 2 (Java, `Pattern.matches`: the whole message must match),
Allure 3 (JavaScript, `RegExp.test`: a search) and Python (`classify`). Hence `[\\s\\S]*` on both sides instead of
`.*` with DOTALL, no inline flags (JavaScript has none), and explicit character classes for case.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

_ANY = r"[\s\S]*"
FAILURE_STATUSES = ["failed", "broken"]


def _contains(*alternatives: str) -> str:
    return f"{_ANY}(?:{'|'.join(alternatives)}){_ANY}"


# name, statuses, message regex (None: any message)
_RULES: tuple[tuple[str, list[str], str | None], ...] = (
    (
        "Infrastructure",
        FAILURE_STATUSES,
        _contains(
            r"Docker daemon",
            r"\bkind cluster",
            r"API server unreachable",
            r"[Cc]luster unreachable",
            r"[Cc]onnection refused[\s\S]*API server",
            r"API server[\s\S]*[Cc]onnection refused",
        ),
    ),
    (
        "Image pull",
        FAILURE_STATUSES,
        _contains(r"ImagePullBackOff", r"ErrImagePull", r"InvalidImageName"),
    ),
    (
        "Webhook/TLS not ready",
        FAILURE_STATUSES,
        # A TLS error while downloading a release manifest is an install problem, not the webhook's.
        r"^(?![\s\S]*manifest download)"
        + _contains(
            r"x509",
            r"certificate signed by unknown authority",
            r"caBundle",
            r"failed calling webhook",
            r"no endpoints available",
            r"webhook not admitting",
        ),
    ),
    (
        "Install failure",
        FAILURE_STATUSES,
        # pytest.fail() messages reach Allure as "Failed: <message>".
        r"^(?:(?:Failed: )?[Ii]nstall failed" + _ANY + r"|" + _contains(
            r"install of \S+ failed",
            r"\b[Hh]elm\b",
            r"manifest download",
        ) + ")",
    ),
    (
        "Component not ready",
        FAILURE_STATUSES,
        _contains(
            r"CrashLoopBackOff",
            r"\b[Nn]ot [Rr]eady\b",
            r"\bnot Available\b",
            r"\b0/\d+ ready\b",
            r"\bNotReady\b",
            r"\bnot Established\b",
        ),
    ),
    (
        "Timeout",
        FAILURE_STATUSES,
        _contains(r"[Tt]imed out", r"[Dd]eadline"),
    ),
    ("Product defect (wrong result)", ["failed"], None),
    ("Test defect", ["broken"], None),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _RULES)
_COMPILED = tuple((name, frozenset(statuses), re.compile(rx) if rx else None) for name, statuses, rx in _RULES)


def categories() -> list[dict]:
    """The content of Allure's categories.json (a new list each call)."""
    out = []
    for name, statuses, regex in _RULES:
        entry: dict = {"name": name, "matchedStatuses": list(statuses)}
        if regex is not None:
            entry["messageRegex"] = regex
        out.append(entry)
    return out


def classify(status: str, message: str | None) -> str | None:
    """The category of a result with this status and message, as Allure would file it; None when it is no failure."""
    message = message or ""
    for name, statuses, regex in _COMPILED:
        if status not in statuses:
            continue
        # fullmatch mirrors Allure 2's Pattern.matches; the [\s\S]* wrapping makes it equal to a search (Allure 3).
        if regex is None or regex.fullmatch(message):
            return name
    return None


def write_categories(results_dir: str | Path) -> Path:
    path = Path(results_dir) / "categories.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(categories(), indent=2) + "\n", encoding="utf-8")
    return path
