"""Bounded, jittered, logged retries: only for known transient signatures, never past the caller's deadline.

One owner per layer, each with its own signatures, so a failure is retried by one layer only:
- `api`      stack.kube.Kube: the API server answered 429/502/503/504, or 500 that is not a webhook call failure, or
             it could not be reached for a moment (`is_api_transient`).
- `watch`    stack.wait: a dropped or failing watch is resumed, an expired one re-listed, with capped backoff.
- `probe`    stack.wait: an active check (admission dry-run) that meets a known install race.
- `install`  installers/: install races with known upstream signatures (upstream-stack.md §10.2): a webhook not
             serving yet, its CA bundle not injected yet, a CRD not established yet (`race_signature`).
- `download`, `helm`, `predict`: their own transient answers (HTTP 5xx of a download, routes still settling).
Everything else is raised at once. An assertion failure is never retried.

Every retry is recorded in the RetryLog of the run that made it (a Kube carries one), never in a module global.
"""
from __future__ import annotations

import logging
import random
import re
import threading
import time
from typing import TYPE_CHECKING, Callable, TypeVar

from stack.record import Retry

if TYPE_CHECKING:
    from stack.deadline import Deadline

log = logging.getLogger("kstack.retry")
T = TypeVar("T")

KIND_NOT_SERVED = "kind not served yet (CRD just applied)"
RACE_SIGNATURES: dict[str, re.Pattern] = {
    "webhook connection refused": re.compile(r"connect: connection refused|connection refused", re.I),
    "webhook has no endpoints": re.compile(r"no endpoints available for service", re.I),
    "webhook CA not trusted yet": re.compile(r"x509: certificate signed by unknown authority", re.I),
    "webhook CA bundle not injected yet": re.compile(r"unable to load root certificates|unable to parse bytes as PEM block", re.I),
    "webhook closed the connection (EOF)": re.compile(r"failed calling webhook.*\bEOF\b", re.I | re.S),
    KIND_NOT_SERVED: re.compile(r'no matches for kind|ensure CRDs are installed first', re.I),
}

API_TRANSIENT_STATUS = {429, 502, 503, 504}


def race_signature(error: BaseException) -> str | None:
    """The known install race this error is, or None. Assertion failures are no race."""
    if isinstance(error, AssertionError):
        return None
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


class RetryLog:
    """The retries of one run (or of one Kube outside a run), in order; `sink` receives each as it happens."""

    def __init__(self, sink: Callable[[Retry], None] | None = None):
        self._lock = threading.Lock()
        self._entries: list[Retry] = []
        self.sink = sink

    def add(self, layer: str, what: str, reason: str, attempt: int, delay: float) -> Retry:
        entry = Retry(layer=layer, what=what, reason=reason, attempt=attempt, delay=round(delay, 3))
        with self._lock:
            self._entries.append(entry)
        if self.sink is not None:
            self.sink(entry)
        return entry

    @property
    def entries(self) -> list[Retry]:
        with self._lock:
            return list(self._entries)

    def count(self, layer: str | None = None) -> int:
        return sum(1 for e in self.entries if layer is None or e.layer == layer)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff for the attempt-th retry (1-based), never above cap."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def call(fn: Callable[[], T], *, what: str, layer: str, is_transient: Callable[[BaseException], str | None],
         retries: RetryLog, deadline: Deadline | None, attempts: int = 4, base: float = 0.25,
         cap: float = 5.0) -> T:
    """Run fn; on a transient error sleep with full-jitter backoff and try again: at most `attempts` tries, and
    never a sleep that would end past the deadline (then the last error is raised)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as error:
            reason = is_transient(error)
            if reason is None or attempt == attempts:
                raise
            delay = backoff(attempt, base, cap)
            if deadline is not None and deadline.remaining() <= delay:
                raise
            log.warning("retry %d/%d of %s in %.2fs: %s (%s)", attempt, attempts - 1, what, delay, reason,
                        str(error)[:200])
            retries.add(layer, what, reason, attempt, delay)
            time.sleep(delay)  # backoff between attempts, not a poll
    raise AssertionError("unreachable")
