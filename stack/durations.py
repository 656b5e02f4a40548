"""Go durations ("90s", "1m30s", "2160h", "500ms") as the stack's objects write them: cert-manager's Certificate
duration and renewBefore, Knative's config-autoscaler windows. One parser for the suite and the twin. And the
objects' timestamps (RFC 3339, "2026-12-07T10:00:00Z")."""
from __future__ import annotations

import re
from datetime import datetime

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_seconds(text: str) -> float:
    """The duration in seconds; ValueError for anything Go's time.ParseDuration would refuse (a bare number but 0, a
    sign, an unknown unit, stray text)."""
    text = (text or "").strip()
    if text == "0":
        return 0.0
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def parse_time(text: str | None) -> datetime | None:
    """An object's RFC 3339 timestamp (creationTimestamp, a condition's lastTransitionTime, a certificate's notAfter);
    None where it is unset or unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def kubectl_age(created: str | None, now: datetime) -> str:
    """kubectl-style age of an object created at `created` (RFC 3339): 45s, 5m12s, 42m, 3h5m, 2d; "-" when unset."""
    when = parse_time(created)
    if when is None:
        return "-"
    s = max(0, int((now - when).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d"
