"""The single wait helper: `wait_for(kube, check, deadline)`. List every source of the check, then watch from the
lists' resourceVersions, under one shared deadline, re-evaluating the check on every event.

- No watch is opened when the first lists already satisfy the check (one request per source).
- Watches ask for the whole remaining deadline (no short chunks): an idle wait costs no requests.
- A watch that ends at once, fails or expires (410 Gone: re-listed) is resumed after a capped, jittered backoff that
  grows while it keeps failing, so a server that drops every watch cannot be stormed; each backoff is a recorded retry.
- A terminal state (CrashLoopBackOff, InvalidImageName, an awaited object deleted, ...) fails at once; a state that is
  terminal only if it persists (an image pull the kubelet retries after a back-off) fails once it has persisted; when
  the deadline passes, the error says what was last observed. All carry the failing check's category.
- Active probes of the check (admission dry-runs) run once its watched state is reached, retried while they meet a
  known race, bounded by the same deadline. No sleep loops.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

from kubernetes import watch as k8s_watch

from stack import retry
from stack.checks import Check, combine
from stack.deadline import Deadline
from stack.failures import Category, CheckFailure
from stack.kube import Kube, KubeError, NoSuchKind
from stack.snapshot import Persisting, Snapshot, Source, Status

log = logging.getLogger("kstack.wait")

MAX_WATCH_SECONDS = 1800      # kube-apiserver's default --min-request-timeout; a watch never asks for more
HEALTHY_WATCH_SECONDS = 2.0   # a watch that ends sooner without an event is a drop, not a normal end
WATCH_BACKOFF_BASE = 0.25     # first delay before resuming a dropped/expired/failed watch
WATCH_BACKOFF_CAP = 15.0      # the delay never grows past this (client-go's reflector: 30 s)
MAX_WATCH_ERRORS = 6          # consecutive transient errors (5xx/429) of a watch before the wait gives up
PROBE_BACKOFF_CAP = 2.0
PROGRESS_EVERY_SECONDS = 15   # how often a long wait says what it is waiting for


class WaitTimeout(CheckFailure):
    """The stack did not reach the expected state in time. The message says what was last observed."""


class TerminalState(CheckFailure):
    """The stack reached a state it will not leave by itself (image pull failure, crash loop, deleted, ...)."""


@dataclass
class _Seen:
    first: float
    attempts: int = 0
    in_attempt: bool = False


class Persistence:
    """The evidence, across one wait's evaluations, that a Persisting state persists: when it was first seen without
    a break and how many failed attempts were seen. A state that is not seen again starts from zero."""

    def __init__(self):
        self.seen: dict[str, _Seen] = {}

    def update(self, items: list[Persisting], now: float) -> tuple[str, Persisting] | None:
        """Once one of `items` persisted long enough: the sentence saying so, and that item; else None."""
        current = {p.key: p for p in items}
        for key in [k for k in self.seen if k not in current]:
            del self.seen[key]
        for p in current.values():
            seen = self.seen.setdefault(p.key, _Seen(now))
            if p.failed_attempt and not seen.in_attempt:
                seen.attempts += 1
            seen.in_attempt = p.failed_attempt
            lasted = now - seen.first
            if seen.attempts >= p.attempts:
                return f"{p.what} failed {seen.attempts} times in {lasted:.0f}s, retried after back-off", p
            if lasted >= p.seconds:
                return f"{p.what} failing for {lasted:.0f}s without a break ({seen.attempts} failed attempt(s) seen)", p
        return None

    def next_due(self, items: list[Persisting], now: float) -> float | None:
        """Seconds until the earliest time window ends, to re-evaluate when no event comes."""
        dues = [self.seen[p.key].first + p.seconds - now for p in items if p.key in self.seen]
        return max(0.0, min(dues)) if dues else None


def _backoff(failures: int, cap: float) -> float:
    """Equal-jitter exponential backoff: at least half of the step, so repeated failures really slow down."""
    step = min(cap, WATCH_BACKOFF_BASE * 2 ** (failures - 1))
    return step / 2 + random.uniform(0, step / 2)


def _watch_timeout(deadline: Deadline) -> int:
    return int(min(deadline.remaining() + 1, MAX_WATCH_SECONDS)) + 1


class _Watcher(threading.Thread):
    """The watch loop of one source after its first list, feeding (source, type, payload) into a queue."""

    def __init__(self, kube: Kube, source: Source, resource_version: str, events: queue.Queue,
                 stop: threading.Event, deadline: Deadline):
        super().__init__(daemon=True, name=f"watch-{source.kind}")
        self.kube, self.source, self.rv, self.events, self.stop = kube, source, resource_version, events, stop
        self.deadline = deadline
        self.watcher = k8s_watch.Watch()

    def halt(self) -> None:
        """End this watcher now: the wait is over, so its open watch must not linger."""
        self.watcher.stop()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - surfaced to the waiting thread, not swallowed
            if not self.stop.is_set():
                self.events.put((self.source, "FAILED", e))

    def _loop(self) -> None:
        s, failures, errors = self.source, 0, 0
        what = f"watch {s.kind.lower()}{' ' + s.namespace if s.namespace else ''}"
        while not self.stop.is_set():
            if self.rv is None:          # expired: list again
                items, self.rv = self.kube.list(s.api_version, s.kind, s.namespace, s.label_selector,
                                                s.field_selector, deadline=self.deadline)
                self.events.put((s, "RELIST", items))
            started, seen = time.monotonic(), 0
            self.watcher = k8s_watch.Watch()
            if self.stop.is_set():
                return
            try:
                for etype, obj in self.kube.watch(s.api_version, s.kind, s.namespace, self.rv,
                                                  _watch_timeout(self.deadline), s.label_selector, s.field_selector,
                                                  watcher=self.watcher):
                    if self.stop.is_set():
                        return
                    self.rv = (obj.get("metadata") or {}).get("resourceVersion", self.rv)
                    seen += 1
                    if etype != "BOOKMARK":
                        self.events.put((s, etype, obj))
                lived = time.monotonic() - started
                if lived >= HEALTHY_WATCH_SECONDS or self.deadline.remaining() <= 0:
                    failures = errors = 0         # a normal end (server timeout): resume at once
                    continue
                reason = f"watch ended after {lived:.1f}s with {seen} event(s)"
            except KubeError as e:
                if self.stop.is_set():            # the wait is over; an error from the closed stream means nothing
                    return
                if e.status == 410:
                    self.rv, reason = None, "watch expired (410 Gone): listing again"
                else:
                    transient = retry.is_api_transient(e)
                    errors += 1
                    if transient is None or errors > MAX_WATCH_ERRORS:
                        raise
                    reason = transient
            failures += 1
            delay = min(_backoff(failures, WATCH_BACKOFF_CAP), self.deadline.remaining())
            log.info("%s: %s; resuming in %.2fs", what, reason, delay)
            self.kube.retries.add("watch", what, reason, failures, delay)
            if self.stop.wait(delay):
                return


def _list(kube: Kube, source: Source, deadline: Deadline, snapshot: Snapshot) -> str | None:
    """List one source into the snapshot; its resourceVersion, or None when the kind is not served."""
    try:
        items, rv = kube.list(source.api_version, source.kind, source.namespace, source.label_selector,
                              source.field_selector, deadline=deadline)
    except NoSuchKind:
        snapshot.unserved.append(source)
        snapshot.replace(source, [])
        return None
    snapshot.replace(source, items)
    return rv


def _unserved_status(snapshot: Snapshot) -> Status | None:
    if not snapshot.unserved:
        return None
    text = "; ".join(f"{s.kind} ({s.api_version}) is not served: its CRD is not installed" for s in snapshot.unserved)
    return Status(False, text, text, Category.CRD)


def look(kube: Kube, check: Check, deadline: Deadline | None = None) -> tuple[Status, Snapshot]:
    """One look (non-blocking): list every source once, evaluate; run each probe once if the state is reached."""
    snapshot = Snapshot()
    for source in check.sources:
        _list(kube, source, deadline or Deadline(60), snapshot)
    status = check.status(snapshot)
    unserved = _unserved_status(snapshot)
    if unserved is not None:
        status = combine([status, unserved])
    if status.done and check.probes:
        status = combine([probe(kube) for probe in check.probes])
    if status.done:
        snapshot.done = status
    return status, snapshot


def require(kube: Kube, check: Check, deadline: Deadline | None = None) -> Snapshot:
    """One look that must find the check done now (no waiting): a CheckFailure with what it sees otherwise."""
    status, snapshot = look(kube, check, deadline)
    if not status.done:
        raise CheckFailure(f"{check.name}: {status.observed}", status.category or check.category)
    return snapshot


def wait_for(kube: Kube, check: Check, deadline: Deadline, describe: str | None = None) -> Snapshot:
    """Wait until the check is done; raise TerminalState or WaitTimeout (with the last observed state)."""
    describe = describe or check.name
    snapshot = Snapshot()
    versions = {s: _list(kube, s, deadline, snapshot) for s in check.sources}
    unserved = _unserved_status(snapshot)
    if unserved is not None:
        raise TerminalState(f"{describe}: {unserved.terminal}", Category.CRD)
    last = check.status(snapshot)
    if not last.done:
        last = _watch_until_done(kube, check, deadline, describe, snapshot, versions, last)
    answers = _run_probes(kube, check, deadline, describe) if check.probes else []
    snapshot.done = combine([last, *answers]) if check.evaluate is not None else combine(answers)
    return snapshot


def _fail(describe: str, status: Status, check: Check) -> TerminalState:
    return TerminalState(f"{describe}: {status.terminal}", status.category or check.category)


def _persisted(describe: str, status: Status, persistence: Persistence) -> TerminalState | None:
    """TerminalState once a persisting state of `status` has persisted (with that state's category), else None."""
    persisted = persistence.update(status.persisting, time.monotonic())
    if persisted is None:
        return None
    sentence, item = persisted
    return TerminalState(f"{describe}: {status.observed} ({sentence})", item.category)


def _watch_until_done(kube: Kube, check: Check, deadline: Deadline, describe: str, snapshot: Snapshot,
                      versions: dict[Source, str | None], last: Status) -> Status:
    if last.terminal:
        raise _fail(describe, last, check)
    persistence = Persistence()
    failure = _persisted(describe, last, persistence)   # the first lists are the first observation
    if failure is not None:
        raise failure
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    watchers = [_Watcher(kube, s, rv, events, stop, deadline) for s, rv in versions.items()]
    for w in watchers:
        w.start()
    next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
    try:
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise WaitTimeout(f"{describe}: timed out after {deadline.elapsed():.0f}s; last observed: "
                                  f"{last.observed}", last.category or check.category)
            due = persistence.next_due(last.persisting, time.monotonic())
            try:
                source, etype, payload = events.get(timeout=min(remaining, PROGRESS_EVERY_SECONDS,
                                                                PROGRESS_EVERY_SECONDS if due is None else due))
            except queue.Empty:
                if last.persisting:   # no event, but a time window may have ended
                    failure = _persisted(describe, last, persistence)
                    if failure is not None:
                        raise failure from None
            else:
                if etype == "FAILED":
                    raise payload
                if etype == "RELIST":
                    snapshot.replace(source, payload)
                else:
                    snapshot.apply(source, etype, payload)
                last = check.status(snapshot)
                if last.done:
                    return last
                if last.terminal:
                    raise _fail(describe, last, check)
                failure = _persisted(describe, last, persistence)
                if failure is not None:
                    raise failure
            if time.monotonic() >= next_progress:
                # "not yet" first: a progress line that begins with "kserve ready" reads as if it were ready
                log.info("not yet: %s (%.0fs left): %s", describe, deadline.remaining(), last.observed)
                next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
    finally:
        stop.set()
        for w in watchers:
            w.halt()


def _run_probes(kube: Kube, check: Check, deadline: Deadline, describe: str) -> list[Status]:
    """Each probe until it answers done (its answer is returned); terminal or out of time raises."""
    answers = []
    for probe in check.probes:
        attempt = 0
        while True:
            status = probe(kube)
            if status.done:
                answers.append(status)
                break
            if status.terminal:
                raise _fail(describe, status, check)
            attempt += 1
            delay = min(_backoff(attempt, PROBE_BACKOFF_CAP), deadline.remaining())
            if deadline.remaining() <= delay:
                raise WaitTimeout(f"{describe}: timed out after {deadline.elapsed():.0f}s; last observed: "
                                  f"{status.observed}", status.category or check.category)
            kube.retries.add("probe", describe, status.observed[:200], attempt, delay)
            log.info("%s: %s; probing again in %.2fs", describe, status.observed, delay)
            time.sleep(delay)   # backoff between probe attempts, bounded by the deadline
    return answers
