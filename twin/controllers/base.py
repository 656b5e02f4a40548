"""What every twin controller shares: the runtime context, conditions, events, small store helpers."""
from __future__ import annotations

import datetime
import hashlib
import logging
import random
import threading
from typing import Any

from twin.api_store import ApiError
from twin.faults import FaultSet

log = logging.getLogger("twin.controllers")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(dt: datetime.datetime) -> str:
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_hash(text: str, n: int = 10) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    out = ""
    for _ in range(n):
        digest, r = divmod(digest, len(alphabet))
        out += alphabet[r]
    return out


def random_suffix(n: int = 5) -> str:
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=n))


def key_of(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def set_condition(conditions: list[dict] | None, ctype: str, status: str, reason: str | None = None,
                  message: str | None = None, **extra: Any) -> list[dict]:
    """A new condition list with `ctype` set; lastTransitionTime kept unless the status changes."""
    conditions = [dict(c) for c in conditions or []]
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now_iso()
            cond["status"] = status
            for k, v in (("reason", reason), ("message", message)):
                if v is None:
                    cond.pop(k, None)
                else:
                    cond[k] = v
            cond.update(extra)
            return conditions
    cond = {"type": ctype, "status": status, "lastTransitionTime": now_iso()}
    if reason is not None:
        cond["reason"] = reason
    if message is not None:
        cond["message"] = message
    cond.update(extra)
    conditions.append(cond)
    return conditions


def condition(obj: dict | None, ctype: str) -> dict | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(obj: dict | None, ctype: str) -> bool:
    cond = condition(obj, ctype)
    return bool(cond) and cond.get("status") == "True"


class Context:
    """The twin's runtime as controllers see it."""

    def __init__(self, store, profile, faults: FaultSet, api=None, gateway=None):
        self.store = store
        self.profile = profile
        self.faults = faults
        self.api = api
        self.gateway = gateway
        self.lock = threading.RLock()   # serialises controller logic (dispatcher, timers, model-server threads)
        self.stopped = threading.Event()
        self.controllers: dict[str, Any] = {}

    # -- store helpers ------------------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.store.get(api_version, kind, name, namespace)
        except ApiError:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector=None) -> list[dict]:
        try:
            return self.store.list(api_version, kind, namespace, label_selector)
        except ApiError:
            return []

    def served(self, api_version: str, kind: str) -> bool:
        return self.store.resource_for(api_version, kind) is not None

    def write_status(self, obj: dict, status: dict) -> dict | None:
        """update_status only when it changes something; None when the object is gone."""
        if (obj.get("status") or {}) == status:
            return obj
        ns, name = key_of(obj)
        try:
            return self.store.update_status(obj["apiVersion"], obj["kind"], name, ns or None, status)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("status of %s %s/%s not written: %s", obj["kind"], ns, name, exc.message)
            return None

    def apply(self, obj: dict, manager: str) -> dict | None:
        try:
            return self.store.apply(obj, field_manager=manager)
        except ApiError as exc:
            meta = obj.get("metadata") or {}
            log.warning("%s could not apply %s %s/%s: %s", manager, obj.get("kind"), meta.get("namespace", ""),
                        meta.get("name"), exc.message)
            return None

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self.store.delete(api_version, kind, name, namespace)
        except ApiError:
            pass

    def deployment_ready(self, namespace: str, name: str) -> bool:
        dep = self.get("apps/v1", "Deployment", name, namespace)
        if dep is None:
            return False
        status = dep.get("status") or {}
        return (status.get("readyReplicas") or 0) >= 1 and is_true(dep, "Available")

    def event(self, involved: dict, reason: str, message: str, type_: str = "Normal",
              component: str = "twin") -> None:
        """A core/v1 Event about `involved`, like the real controllers record."""
        if not self.served("v1", "Event"):
            return
        meta = involved.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        ts = now_iso()
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": f"{meta.get('name')}.{random.getrandbits(64):016x}"[:253], "namespace": ns},
                 "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                                    "name": meta.get("name"), "namespace": meta.get("namespace"),
                                    "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
                 "reason": reason, "message": message, "type": type_, "count": 1,
                 "firstTimestamp": ts, "lastTimestamp": ts, "source": {"component": component},
                 "reportingComponent": component, "reportingInstance": ""}
        try:
            self.store.create(event)
        except ApiError:
            pass


class Controller:
    """Reacts to store events (on the store's one dispatcher thread, under ctx.lock)."""

    name = "controller"

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def store(self):
        return self.ctx.store

    def on_event(self, event_type: str, obj: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:
        pass


def owner_ref(obj: dict, controller: bool = True) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}
