"""Diagnostics captured at the moment of a failure: the involved objects as YAML, their events, and the current and
previous logs of the involved pods. Everything is redacted; collection errors are recorded, never raised."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from stack.kube import Kube, KubeError
from stack.redact import redact_object, scrub

LOG_TAIL_LINES = 200


@dataclass
class Attachment:
    name: str
    body: str
    kind: str = "text"   # text | yaml


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None


def _yaml(obj) -> str:
    return yaml.safe_dump(redact_object(obj), sort_keys=False, default_flow_style=False)


def collect(kube: Kube, namespaces: list[str] = (), objects: list[ObjectRef] = (),
            pod_selector: dict[str, str] | None = None) -> list[Attachment]:
    out: list[Attachment] = []
    errors: list[str] = []

    docs = []
    for ref in objects:
        try:
            obj = kube.get(ref.api_version, ref.kind, ref.name, ref.namespace)
            docs.append(obj if obj else {"absent": f"{ref.kind} {ref.namespace or ''}/{ref.name}"})
        except KubeError as e:
            errors.append(f"get {ref.kind} {ref.name}: {e}")
    if docs:
        out.append(Attachment("objects.yaml", "---\n".join(_yaml(d) for d in docs), "yaml"))

    for ns in namespaces:
        try:
            events, _ = kube.list("v1", "Event", ns)
            events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
            lines = [f"{e.get('lastTimestamp') or e.get('eventTime') or '-'} {e.get('type', '')} {e.get('reason', '')} "
                     f"{e['involvedObject'].get('kind')}/{e['involvedObject'].get('name')}: {e.get('message', '')}"
                     for e in events]
            out.append(Attachment(f"events-{ns}.txt", "\n".join(lines) or "(no events)"))
            selector = ",".join(f"{k}={v}" for k, v in (pod_selector or {}).items()) or None
            pods, _ = kube.list("v1", "Pod", ns, label_selector=selector)
            out.append(Attachment(f"pods-{ns}.yaml", "---\n".join(_yaml(p) for p in pods) or "(no pods)", "yaml"))
            for pod in pods:
                out += _pod_logs(kube, pod)
        except KubeError as e:
            errors.append(f"namespace {ns}: {e}")
    if errors:
        out.append(Attachment("collection-errors.txt", "\n".join(errors)))
    for a in out:
        a.body = scrub(a.body)
    return out


def _pod_logs(kube: Kube, pod: dict) -> list[Attachment]:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    status = pod.get("status") or {}
    out = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        c = cs["name"]
        out.append(Attachment(f"log-{ns}-{name}-{c}.txt", kube.pod_log(ns, name, c)))
        if cs.get("restartCount", 0) > 0 or (cs.get("lastState") or {}).get("terminated"):
            out.append(Attachment(f"log-{ns}-{name}-{c}-previous.txt", kube.pod_log(ns, name, c, previous=True)))
    return out
