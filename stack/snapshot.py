"""What a check looks at: Sources (a list+watch each), the Snapshot of their latest objects, and the Status a check
answers. A snapshot is read by kind, namespace and name, never by the position of a source."""
from __future__ import annotations

from dataclasses import dataclass, field

from stack.failures import Category


@dataclass(frozen=True)
class Source:
    api_version: str
    kind: str
    namespace: str | None = None          # None: every namespace (or a cluster-scoped kind)
    label_selector: str | None = None
    field_selector: str | None = None

    def covers(self, api_version: str, kind: str, namespace: str | None) -> bool:
        """Whether this source lists objects of that kind in that namespace (None: any namespace)."""
        return (self.api_version, self.kind) == (api_version, kind) and (
            self.namespace is None or namespace is None or self.namespace == namespace)


@dataclass(frozen=True)
class Persisting:
    """A state that is terminal only when it persists (an image pull the kubelet retries after a back-off).

    `key` names what is failing (pod uid/container), `what` says it in words ("image pull of container manager");
    `failed_attempt` marks an observation of a new failed try (it counts once per change into it). Terminal after
    `attempts` failed tries, or after `seconds` without a break (stack.wait.Persistence keeps that evidence), with
    `category`."""
    key: str
    what: str
    failed_attempt: bool
    attempts: int
    seconds: float
    category: Category


@dataclass
class Status:
    done: bool
    observed: str                         # what is seen now, as a sentence about the stack
    terminal: str | None = None           # set when waiting longer cannot help
    category: Category | None = None      # why it is not done, when the check knows
    persisting: list[Persisting] = field(default_factory=list)   # terminal only if they persist


def object_key(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name', '')}"


@dataclass
class Snapshot:
    """The latest objects of every source, and the objects deleted while they were watched."""
    objects: dict[Source, dict[str, dict]] = field(default_factory=dict)
    deleted: dict[Source, dict[str, dict]] = field(default_factory=dict)
    unserved: list[Source] = field(default_factory=list)   # kinds the API server does not serve (CRD absent)
    done: Status | None = None       # what the check that waited on it was done with (its probes' answers too)

    def replace(self, source: Source, items: list[dict]) -> None:
        """A (re-)list: objects seen before and absent now count as deleted."""
        before = self.objects.get(source, {})
        now = {object_key(o): o for o in items}
        for key in before.keys() - now.keys():
            self.deleted.setdefault(source, {})[key] = before[key]
        self.objects[source] = now

    def apply(self, source: Source, event_type: str, obj: dict) -> None:
        key = object_key(obj)
        if event_type == "DELETED":
            self.objects.setdefault(source, {}).pop(key, None)
            self.deleted.setdefault(source, {})[key] = obj
        else:
            self.objects.setdefault(source, {})[key] = obj
            self.deleted.get(source, {}).pop(key, None)

    def _matching(self, table: dict[Source, dict[str, dict]], api_version: str, kind: str,
                  namespace: str | None) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for source, objs in table.items():
            if source.covers(api_version, kind, namespace):
                out.update({k: o for k, o in objs.items()
                            if namespace is None or (o.get("metadata") or {}).get("namespace") == namespace})
        return out

    def items(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        return list(self._matching(self.objects, api_version, kind, namespace).values())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self._matching(self.objects, api_version, kind, namespace).get(f"{namespace or ''}/{name}")

    def was_deleted(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Seen during this wait and gone since (a DELETED event, or absent from a re-list)."""
        key = f"{namespace or ''}/{name}"
        return (key in self._matching(self.deleted, api_version, kind, namespace)
                and self.get(api_version, kind, name, namespace) is None)

    def serves(self, api_version: str, kind: str) -> bool:
        return not any((s.api_version, s.kind) == (api_version, kind) for s in self.unserved)
