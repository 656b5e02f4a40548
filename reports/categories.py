"""Allure failure categories for the KServe-stack suite, and the same classification in Python.

A failure raised by a check carries its category as a structured fact (stack/failures.py): the exception's message
starts with the category's tag ("[image-pull] kserve ready: ..."), the sign-off reads the category from the run
record (kstack-failures-*.jsonl), and each category below matches its own tag first. Only a message WITHOUT a tag (a
foreign exception: an API error, a bug, pytest.fail) falls back to the text rules, in this order (the first match
wins):

1. Infrastructure             "Docker daemon ...", "kind cluster ...", "API server unreachable", "cluster unreachable",
                              "connection refused" together with "API server"
2. Image pull                 "ImagePullBackOff", "ErrImagePull", "InvalidImageName"
3. Webhook/TLS not ready      "x509", "certificate signed by unknown authority", "caBundle", "failed calling webhook",
                              "no endpoints available", "not admitting" (not when the message is about a download:
                              a TLS error on a download is an install failure)
4. Install failure            starts with "install failed" (after pytest's "Failed: "), "helm", "cannot download"
5. Crash loop                 "CrashLoopBackOff"
6. CRD missing or not Established   "no matches for kind", "CRD ... not Established"
7. Permission denied (RBAC)   (tag only: a 403 of the API server, with the verb and resource it refused)
8. Certificate issuance       (tag only)
9. InferenceService or prediction   (tag only)
10. Security policy           (tag only: a Secret readable by a default ServiceAccount, an expiring certificate, ...)
11. Monitoring                (tag only: metrics that do not count the predict calls, no series in Prometheus)
12. Autoscaling               (tag only: an autoscaler without the InferenceService's bounds and target)
13. High availability         (tag only: one replica, one node, a PDB that blocks drains, a stale Lease, a Fail webhook
                              behind one endpoint)
14. Component not ready       "not ready", "not Available", "0/N ready", "NotReady"
15. Timeout                   "timed out", "deadline"
16. Product defect (wrong result)  any other failed test (an AssertionError: wrong prediction, wrong SANs, a request
                              denied or admitted wrongly)
17. Test defect               any other broken test (an unexpected exception in the test or a fixture)

The regexes are written for three engines at once: Allure 2 (Java, `Pattern.matches`: the whole message must match),
Allure 3 (JavaScript, `RegExp.test`: a search) and Python (`classify`). Hence `[\\s\\S]*` on both sides instead of
`.*` with DOTALL, no inline flags (JavaScript has none), and explicit character classes for case.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from stack.failures import Category

_ANY = r"[\s\S]*"
FAILURE_STATUSES = ["failed", "broken"]
# Allure's message is the exception's `exconly()`: "Failed: ...", "AssertionError: ...", "pkg.mod.Class: ...".
_PREFIX = r"(?:[\w.]+: )?"
_UNTAGGED = rf"^(?!{_PREFIX}\[[a-z-]+\])"


def _contains(*alternatives: str) -> str:
    return f"{_ANY}(?:{'|'.join(alternatives)}){_ANY}"


def _rule(category: Category, fallback: str | None = None) -> str:
    """The category's own tag, or (in a message without any tag) the fallback text rule."""
    tagged = rf"^{_PREFIX}{re.escape(category.tag)}{_ANY}"
    return tagged if fallback is None else f"(?:{tagged}|{_UNTAGGED}{fallback})"


# name, statuses, message regex (None: any message)
_RULES: tuple[tuple[str, list[str], str | None], ...] = (
    (Category.INFRASTRUCTURE.title, FAILURE_STATUSES, _rule(Category.INFRASTRUCTURE, _contains(
        r"Docker daemon", r"\bkind cluster", r"API server unreachable", r"[Cc]luster unreachable",
        r"[Cc]onnection refused[\s\S]*API server", r"API server[\s\S]*[Cc]onnection refused"))),
    (Category.IMAGE_PULL.title, FAILURE_STATUSES, _rule(Category.IMAGE_PULL, _contains(
        r"ImagePullBackOff", r"ErrImagePull", r"InvalidImageName"))),
    (Category.WEBHOOK_TLS.title, FAILURE_STATUSES, _rule(Category.WEBHOOK_TLS, r"(?![\s\S]*cannot download)" + _contains(
        r"x509", r"certificate signed by unknown authority", r"caBundle", r"failed calling webhook",
        r"no endpoints available", r"not admitting"))),
    (Category.INSTALL.title, FAILURE_STATUSES, _rule(Category.INSTALL, r"(?:(?:Failed: )?[Ii]nstall failed" + _ANY
                                                     + "|" + _contains(r"\b[Hh]elm\b", r"cannot download") + ")")),
    (Category.CRASH_LOOP.title, FAILURE_STATUSES, _rule(Category.CRASH_LOOP, _contains(r"CrashLoopBackOff"))),
    # A TLS error while downloading a release manifest is an install problem, not the webhook's.
    (Category.CRD.title, FAILURE_STATUSES, _rule(Category.CRD, _contains(
        r"no matches for kind", r"CRD [\s\S]*not Established"))),
    (Category.PERMISSION.title, FAILURE_STATUSES, _rule(Category.PERMISSION)),
    (Category.CERTIFICATE.title, FAILURE_STATUSES, _rule(Category.CERTIFICATE)),
    (Category.PREDICT.title, FAILURE_STATUSES, _rule(Category.PREDICT)),
    (Category.SECURITY.title, FAILURE_STATUSES, _rule(Category.SECURITY)),
    (Category.MONITORING.title, FAILURE_STATUSES, _rule(Category.MONITORING)),
    (Category.AUTOSCALING.title, FAILURE_STATUSES, _rule(Category.AUTOSCALING)),
    (Category.AVAILABILITY.title, FAILURE_STATUSES, _rule(Category.AVAILABILITY)),
    # pytest.fail() messages reach Allure as "Failed: <message>".
    (Category.NOT_READY.title, FAILURE_STATUSES, _rule(Category.NOT_READY, _contains(
        r"\b[Nn]ot [Rr]eady\b", r"\bnot Available\b", r"\b0/\d+ ready\b", r"\bNotReady\b"))),
    ("Timeout", FAILURE_STATUSES, _UNTAGGED + _contains(r"[Tt]imed out", r"[Dd]eadline")),
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


def title(category: str | None) -> str | None:
    """The Allure category name of a structured category value ("image-pull" -> "Image pull")."""
    try:
        return Category(category).title if category else None
    except ValueError:
        return None


def write_categories(results_dir: str | Path) -> Path:
    path = Path(results_dir) / "categories.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(categories(), indent=2) + "\n", encoding="utf-8")
    return path
