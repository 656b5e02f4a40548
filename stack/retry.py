"""Bounded, jittered, logged retries — only for known transient signatures.

Two families:
- API transients: the API server answered 429/502/503/504, or 500 that is not a webhook call failure
  (that one is a race with its own signature below), or it could not be reached for a moment.
- Install races with known upstream signatures (upstream-stack.md §10.2): a webhook not serving yet, its CA bundle not
  injected yet, a CRD not established yet.
Everything else is raised at once. An assertion failure is never retried.
"""
from __future__ import annotations

import logging
import random
import re
import time
from typing import Callable, TypeVar

log = logging.getLogger("kstack.retry")
T = TypeVar("T")

RACE_SIGNATURES: dict[str, re.Pattern] = {
    "webhook connection refused": re.compile(r"connect: connection refused|connection refused", re.I),
    "webhook has no endpoints": re.compile(r"no endpoints available for service", re.I),
    "webhook CA not trusted yet": re.compile(r"x509: certificate signed by unknown authority", re.I),
    "webhook CA bundle not injected yet": re.compile(r"unable to load root certificates|unable to parse bytes as PEM block", re.I),
    "webhook closed the connection (EOF)": re.compile(r"failed calling webhook.*\bEOF\b", re.I | re.S),
    "kind not served yet (CRD just applied)": re.compile(r'no matches for kind|ensure CRDs are installed first', re.I),
}

API_TRANSIENT_STATUS = {429, 502, 503, 504}


def race_signature(error: BaseException) -> str | None:
    text = str(error)
    for name, pattern in RACE_SIGNATURES.items():
        if pattern.search(text):
            return name
    return None


def is_api_transient(error: BaseException) -> str | None:
    """Why this error from the API server is worth one more try, or None."""
    if isinstance(error, AssertionError):
        return None
    status = getattr(error, "status", None)
    if status in API_TRANSIENT_STATUS:
        return f"API server answered {status}"
    if status == 500 and "failed calling webhook" not in str(error):
        return "API server answered 500"
    if status == 0 and getattr(error, "reason", "") == "Unreachable":
        return "API server connection failed"
    return None


def is_install_race(error: BaseException) -> str | None:
    if isinstance(error, AssertionError):
        return None
    return race_signature(error) or is_api_transient(error)


def call(fn: Callable[[], T], *, what: str, is_transient: Callable[[BaseException], str | None],
         attempts: int = 6, base: float = 0.25, cap: float = 5.0, deadline=None) -> T:
    """Run fn; on a transient error sleep with full-jitter backoff and try again, at most `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - filtered by is_transient just below
            reason = is_transient(error)
            if reason is None or attempt == attempts:
                raise
            delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
            if deadline is not None:
                if deadline.remaining() <= delay:
                    raise
            log.warning("retry %d/%d of %s in %.2fs: %s (%s)", attempt, attempts - 1, what, delay, reason,
                        str(error)[:200])
            RETRIES.append((what, reason))
            time.sleep(delay)  # backoff between attempts, not a poll
    raise AssertionError("unreachable")


# Every retry taken in this process, for tests and the run's evidence.
RETRIES: list[tuple[str, str]] = []
