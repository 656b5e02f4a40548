"""The twin's own waits on its API (start-up, faults): get, then watch the one object until a predicate holds.

(twin/ does not use the suite's stack/wait.py: the twin is the suite's test subject, not part of it.)
"""
from __future__ import annotations

import time
from typing import Callable

from twin.standins.runtime import Kube, _transient


class TwinWaitTimeout(Exception):
    """What was awaited, and the object as last seen."""


def wait_object(kube: Kube, api_version: str, kind: str, name: str, namespace: str | None,
                ready: Callable[[dict | None], bool], timeout: float, what: str) -> dict | None:
    deadline = time.monotonic() + max(timeout, 0.1)
    last: dict | None = None
    delay = 0.1
    while True:
        try:
            items, rv = kube.list(api_version, kind, namespace, field_selector=f"metadata.name={name}")
            last = items[0] if items else None
            if ready(last):
                return last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            res = kube.resource(api_version, kind)
            for event in kube.dyn.watch(res, namespace=namespace, resource_version=rv,
                                        field_selector=f"metadata.name={name}", timeout=max(1, int(remaining))):
                if event["type"] == "ERROR":
                    break
                last = None if event["type"] == "DELETED" else event["raw_object"]
                if ready(last):
                    return last
                if time.monotonic() >= deadline:
                    break
        except Exception as e:  # noqa: BLE001
            if not _transient(e):
                raise
            time.sleep(delay)      # bounded reconnect backoff
            delay = min(delay * 2, 2.0)
        if time.monotonic() >= deadline:
            break
    status = (last or {}).get("status")
    raise TwinWaitTimeout(f"the twin timed out after {timeout:.0f}s waiting for {what}; last seen: "
                          f"{'absent' if last is None else status}")
