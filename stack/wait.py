"""The single wait helper: list, then watch from the resourceVersion, under one shared deadline.

`wait_for` keeps an up-to-date snapshot of one or more watched sources (for example a Deployment and its Pods) and
re-evaluates a check on every event. The check answers done / terminal / what it sees. A terminal state
(ImagePullBackOff, CrashLoopBackOff, ...) fails at once; when the deadline passes, the error says what was last
observed. Expired watches (410 Gone) are re-listed; dropped watches are resumed. No sleep loops.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from kubernetes import watch as k8s_watch

from stack import retry
from stack.kube import Kube, KubeError

log = logging.getLogger("kstack.wait")

WATCH_CHUNK_SECONDS = 10     # server-side watch timeout per request; the loop resumes from the last resourceVersion
PROGRESS_EVERY_SECONDS = 15  # how often a long wait says what it is waiting for
MAX_WATCH_RETRIES = 6        # consecutive transient watch failures before the wait gives up


class Deadline:
    """One overall deadline shared by the phases of a test (or of an install)."""

    def __init__(self, seconds: float, what: str = ""):
        self.seconds, self.what = seconds, what
        self.start = time.monotonic()

    def remaining(self) -> float:
        return max(0.0, self.start + self.seconds - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.remaining() <= 0


class WaitTimeout(AssertionError):
    """The stack did not reach the expected state in time. The message says what was last observed."""


class TerminalState(AssertionError):
    """The stack reached a state it will not leave by itself (image pull failure, crash loop, ...)."""


@dataclass
class Status:
    done: bool
    observed: str                 # what is seen now, as a sentence about the stack
    terminal: str | None = None   # set when waiting longer cannot help


@dataclass
class Source:
    api_version: str
    kind: str
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None


@dataclass
class Snapshot:
    """The latest state of every source, by source index then object key."""
    objects: list[dict[str, dict]] = field(default_factory=list)

    def items(self, index: int = 0) -> list[dict]:
        return list(self.objects[index].values())


def _key(obj: dict) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class _Watcher(threading.Thread):
    """list + watch loop for one source, feeding (index, type, object) events into a queue."""

    def __init__(self, kube: Kube, index: int, source: Source, events: queue.Queue, stop: threading.Event):
        super().__init__(daemon=True, name=f"wait-{source.kind}")
        self.kube, self.index, self.source, self.events, self.stop = kube, index, source, events, stop
        self.watcher = k8s_watch.Watch()

    def halt(self) -> None:
        """End this watcher now: the wait is over, so its open watch must not linger."""
        self.watcher.stop()

    def run(self) -> None:
        s = self.source
        rv = None
        failures = 0
        while not self.stop.is_set():
            try:
                if rv is None:
                    items, rv = self.kube.list(s.api_version, s.kind, s.namespace, s.label_selector, s.field_selector)
                    self.events.put((self.index, "RELIST", items))
                self.watcher = k8s_watch.Watch()
                if self.stop.is_set():
                    return
                for etype, obj in self.kube.watch(s.api_version, s.kind, s.namespace, rv, WATCH_CHUNK_SECONDS,
                                                  s.label_selector, s.field_selector, watcher=self.watcher):
                    if self.stop.is_set():
                        return
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    failures = 0
                    if etype != "BOOKMARK":
                        self.events.put((self.index, etype, obj))
            except KubeError as e:
                if self.stop.is_set():   # the wait is over; an error from the closed stream means nothing
                    return
                if e.status == 410:          # our resourceVersion expired: list again
                    log.info("watch of %s expired (410 Gone); listing again", s.kind)
                    rv = None
                    continue
                reason = retry.is_api_transient(e)
                if reason and failures < MAX_WATCH_RETRIES:   # a 5xx/429 on a watch: resume after a short backoff
                    failures += 1
                    delay = random.uniform(0, min(2.0, 0.2 * 2 ** failures))
                    log.warning("watch of %s failed (%s); retry %d/%d in %.2fs", s.kind, reason, failures,
                                MAX_WATCH_RETRIES, delay)
                    retry.RETRIES.append((f"watch {s.kind}", reason))
                    self.stop.wait(delay)
                    continue
                # Anything else ends this watcher; the waiter reports it (after the list's own retries).
                self.events.put((self.index, "FAILED", e))
                return
            except Exception as e:  # noqa: BLE001 - surfaced to the waiting thread, not swallowed
                if self.stop.is_set():
                    return
                self.events.put((self.index, "FAILED", e))
                return


def wait_for(kube: Kube, sources: list[Source], check: Callable[[Snapshot], Status], *,
             deadline: Deadline, describe: str) -> Snapshot:
    """Wait until check(snapshot) is done; raise TerminalState or WaitTimeout (with the last observed state)."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    snapshot = Snapshot([{} for _ in sources])
    listed = [False] * len(sources)
    watchers = [_Watcher(kube, i, s, events, stop) for i, s in enumerate(sources)]
    for w in watchers:
        w.start()
    last = Status(False, "nothing observed yet")
    next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
    try:
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise WaitTimeout(f"{describe}: timed out after {deadline.elapsed():.0f}s; last observed: {last.observed}")
            try:
                index, etype, payload = events.get(timeout=min(remaining, PROGRESS_EVERY_SECONDS))
            except queue.Empty:
                pass
            else:
                if etype == "FAILED":
                    raise payload
                if etype == "RELIST":
                    snapshot.objects[index] = {_key(o): o for o in payload}
                    listed[index] = True
                elif etype == "DELETED":
                    snapshot.objects[index].pop(_key(payload), None)
                else:
                    snapshot.objects[index][_key(payload)] = payload
                if not all(listed):
                    continue
                last = check(snapshot)
                if last.done:
                    return snapshot
                if last.terminal:
                    raise TerminalState(f"{describe}: {last.terminal}")
            if time.monotonic() >= next_progress:
                log.info("waiting for %s (%.0fs left): %s", describe, deadline.remaining(), last.observed)
                next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
    finally:
        stop.set()
        for w in watchers:
            w.halt()
