"""AC-HA: is the stack itself highly available? Read-only, from the profile's `ha:` sections.

For each workload a profile lists (`HAWorkload`: a Deployment, the replicas upstream recommends, the leader Leases its
component holds):
- at least its replicas Ready, on at least two nodes (or two values of each topology key its Pods' topology spread
  constraints name);
- a PodDisruptionBudget covers its Pods and allows a disruption now (`status.disruptionsAllowed >= 1`); a budget
  whose minAvailable equals the replicas blocks every drain (kubernetes/website configure-pdb.md), and two budgets
  over one Pod make the eviction API answer 500 (api-eviction.md);
- each leader Lease is held by a Running, Ready Pod of that workload and was renewed within its
  leaseDurationSeconds. A holder is named by its Pod's hostname, which is the Pod's name: client-go and
  controller-runtime `<hostname>_<uuid>` (knative.dev/pkg leaderelection/config.go UniqueID; controller-runtime
  pkg/leaderelection), Knative's autoscaler `<pod>_<pod IP>` (knative/serving pkg/autoscaler/bucket/bucket.go
  Identity), cert-manager's controller `<hostname>-external-cert-manager-controller` (cmd/controller/app/controller.go
  @v1.13.0).
And every webhook of the profile's webhook configurations whose failurePolicy is Fail (the v1 default) has at least
two ready endpoints behind its Service: with one, a single Pod's restart or drain stops admission of what it guards.

`read_posture(kube, profile)` reads what the cluster shows (`Posture`); `findings(posture, now)` says what is not highly
available, each finding naming its workload or webhook; `record_of(posture)` is what the run record keeps (the sign-off's
table and the findings). Nothing here changes the cluster.
"""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from stack.durations import kubectl_age, parse_time
from stack.readiness import condition_true
from stack.record import HAPosture, HAWebhookRow, HAWorkloadRow

if TYPE_CHECKING:
    from stack.kube import Kube
    from stack.profile import HAWorkload, LeaseRef, Profile

HOSTNAME_KEY = "kubernetes.io/hostname"
MIN_ENDPOINTS = 2       # a Fail webhook with fewer ready endpoints is a single point of failure for admission


# -- what the cluster shows ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodSeen:
    name: str
    node: str | None
    ready: bool
    running: bool
    created: str | None


@dataclass(frozen=True)
class BudgetSeen:
    name: str
    rule: str                       # "minAvailable 1" | "maxUnavailable 25%"
    disruptions_allowed: int
    current_healthy: int
    expected_pods: int


@dataclass(frozen=True)
class LeaseSeen:
    ref: str                        # namespace/name
    holder: str | None
    renewed: datetime | None
    duration_seconds: int | None


@dataclass(frozen=True)
class WorkloadSeen:
    spec: HAWorkload
    found: bool
    pods: tuple[PodSeen, ...] = ()
    spread_keys: tuple[str, ...] = (HOSTNAME_KEY,)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)    # node -> its labels (spread keys only)
    budgets: tuple[BudgetSeen, ...] = ()
    leases: dict[LeaseRef, tuple[LeaseSeen, ...]] = field(default_factory=dict)

    @property
    def ready_pods(self) -> list[PodSeen]:
        return [p for p in self.pods if p.ready and p.running]

    def spread(self, key: str) -> set[str]:
        """The distinct values of a topology key over the Ready Pods' nodes."""
        if key == HOSTNAME_KEY:
            return {p.node for p in self.ready_pods if p.node}
        return {self.node_labels.get(p.node, {}).get(key) for p in self.ready_pods if p.node} - {None}


@dataclass(frozen=True)
class WebhookSeen:
    configuration: str              # Kind/name
    webhook: str
    failure_policy: str
    service: str | None             # namespace/name (None: a URL webhook)
    ready_endpoints: int
    guards: tuple[str, ...]         # group/version/resource it intercepts


@dataclass(frozen=True)
class Posture:
    workloads: tuple[WorkloadSeen, ...]
    webhooks: tuple[WebhookSeen, ...]


@dataclass(frozen=True)
class Finding:
    subject: str                    # the workload (namespace/name) or the webhook (configuration/webhook)
    aspect: str                     # replicas | spread | budget | lease | webhook
    text: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.text}"


# -- judgement (pure) --------------------------------------------------------------------------------------------------
def _age(renewed: datetime | None, now: datetime) -> float | None:
    return None if renewed is None else (now - renewed).total_seconds()


def holder_pod(holder: str | None, pods: tuple[PodSeen, ...]) -> PodSeen | None:
    """The Pod whose name starts the holder identity (followed by `_`, `-` or nothing); the longest such name."""
    if not holder:
        return None
    named = [p for p in pods if holder == p.name or holder.startswith(p.name + "_") or holder.startswith(p.name + "-")]
    return max(named, key=lambda p: len(p.name), default=None)


def workload_findings(w: WorkloadSeen, now: datetime) -> list[Finding]:
    ref, want = w.spec.ref, w.spec.replicas
    if not w.found:
        return [Finding(ref, "replicas", "the Deployment is absent")]
    out = []
    ready = w.ready_pods
    if len(ready) < want:
        out.append(Finding(ref, "replicas", f"{len(ready)} Ready replica(s), fewer than the {want} HA needs"))
    for key in w.spread_keys:
        values = w.spread(key)
        if len(values) < 2:
            where = "node" if key == HOSTNAME_KEY else f"value of {key}"
            out.append(Finding(ref, "spread", f"its Ready Pods run on {len(values)} {where}"
                                              f"{'s' if len(values) != 1 else ''} ({', '.join(sorted(values)) or 'none'}):"
                                              " one node's loss or drain takes it all down"))
    if not w.budgets:
        out.append(Finding(ref, "budget", "no PodDisruptionBudget covers its Pods: a drain may evict every one at once"))
    elif len(w.budgets) > 1:
        out.append(Finding(ref, "budget", f"{len(w.budgets)} PodDisruptionBudgets cover its Pods "
                                          f"({', '.join(b.name for b in w.budgets)}): the eviction API refuses such "
                                          "Pods with 500, so no drain completes"))
    for b in w.budgets:
        if b.disruptions_allowed < 1:
            out.append(Finding(ref, "budget", f"PodDisruptionBudget {b.name} ({b.rule}, {b.current_healthy} of "
                                              f"{b.expected_pods} Pods healthy) allows no disruption now: a drain of "
                                              "its node blocks"))
    for lease_ref, seen in w.leases.items():
        out += _lease_findings(ref, lease_ref, seen, w.pods, now)
    return out


def _lease_findings(ref: str, lease_ref: LeaseRef, seen: tuple[LeaseSeen, ...], pods: tuple[PodSeen, ...],
                    now: datetime) -> list[Finding]:
    if not seen:
        return [Finding(ref, "lease", f"no Lease {lease_ref}: no leader holds it (leader election off, or never led)")]
    out = []
    for lease in seen:
        if not lease.holder:
            out.append(Finding(ref, "lease", f"Lease {lease.ref} is held by no one"))
            continue
        age = _age(lease.renewed, now)
        if age is None or lease.duration_seconds is None or age > lease.duration_seconds:
            renewed = "never renewed" if age is None else f"last renewed {age:.0f} s ago"
            out.append(Finding(ref, "lease", f"Lease {lease.ref} held by {lease.holder} is stale: {renewed}, "
                                             f"longer than its leaseDurationSeconds ({lease.duration_seconds})"))
        pod = holder_pod(lease.holder, pods)
        if pod is None:
            out.append(Finding(ref, "lease", f"Lease {lease.ref} is held by {lease.holder}, which is no Pod of {ref}"))
        elif not (pod.running and pod.ready):
            out.append(Finding(ref, "lease", f"Lease {lease.ref} is held by Pod {pod.name}, which is not Running "
                                             "and Ready"))
    return out


def webhook_findings(w: WebhookSeen) -> list[Finding]:
    if w.failure_policy != "Fail" or w.service is None or w.ready_endpoints >= MIN_ENDPOINTS:
        return []
    return [Finding(f"{w.configuration} {w.webhook}", "webhook",
                    f"failurePolicy Fail with {w.ready_endpoints} ready endpoint(s) behind Service {w.service}: a "
                    f"single point of failure for admission of {', '.join(w.guards) or 'what it intercepts'}")]


def findings(posture: Posture, now: datetime | None = None) -> list[Finding]:
    """What is not highly available, workload by workload, then webhook by webhook."""
    now = now or datetime.now(timezone.utc)
    out = [f for w in posture.workloads for f in workload_findings(w, now)]
    return out + [f for w in posture.webhooks for f in webhook_findings(w)]


def _leases_text(ref: LeaseRef, seen: tuple[LeaseSeen, ...], pods: tuple[PodSeen, ...], now: datetime) -> str:
    """One Lease: its holder and when it was renewed; a pattern's Leases (Knative's buckets): how many, held by
    which Pods, renewed at most how long ago."""
    if not seen:
        return f"{ref}: absent"
    ages = [max(0.0, a) for a in (_age(lease.renewed, now) for lease in seen) if a is not None]
    renewed = f" (renewed {max(ages):.0f} s ago)" if ages else ""
    if len(seen) == 1:
        return f"{seen[0].ref}: {seen[0].holder or 'no holder'}{renewed}"
    holders = sorted({(holder_pod(lease.holder, pods) or PodSeen(lease.holder or "no holder", None, False, False,
                                                                 None)).name for lease in seen})
    return f"{ref}: {len(seen)} Leases held by {', '.join(holders)}" + (
        f" (renewed at most {max(ages):.0f} s ago)" if ages else "")


def record_of(posture: Posture, now: datetime | None = None) -> HAPosture:
    """The posture as the run record keeps it (the sign-off's table): workload, Ready replicas of wanted, nodes,
    budgets, Lease holders (renewed how long ago), age of its oldest Ready Pod; the webhooks; the findings."""
    now = now or datetime.now(timezone.utc)
    rows = []
    for w in posture.workloads:
        ready = w.ready_pods
        budgets = "; ".join(f"{b.name} ({b.rule}, allows {b.disruptions_allowed})" for b in w.budgets) or "none"
        leases = "; ".join(_leases_text(ref, seen, w.pods, now) for ref, seen in w.leases.items()) or "—"
        oldest = min((p.created for p in ready if p.created), default=None)
        rows.append(HAWorkloadRow(w.spec.ref, f"{len(ready)}/{w.spec.replicas}" if w.found else "absent",
                                  ", ".join(sorted(w.spread(HOSTNAME_KEY))) or "none", budgets, leases,
                                  kubectl_age(oldest, now)))
    hooks = [HAWebhookRow(f"{h.configuration} {h.webhook}", h.failure_policy, h.service, h.ready_endpoints,
                          list(h.guards)) for h in posture.webhooks]
    return HAPosture(rows, hooks, [str(f) for f in findings(posture, now)])


# -- reading the cluster -----------------------------------------------------------------------------------------------
def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; an empty selector selects everything in
    policy/v1 (a PDB with `selector: {}` covers every Pod of its namespace)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values or op == "NotIn" and labels.get(key) in values \
                or op == "Exists" and key not in labels or op == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_seen(pod: dict) -> PodSeen:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return PodSeen(meta.get("name", ""), (pod.get("spec") or {}).get("nodeName"), condition_true(pod, "Ready"),
                   status.get("phase") == "Running" and not meta.get("deletionTimestamp"),
                   meta.get("creationTimestamp"))


def _rule(pdb: dict) -> str:
    spec = pdb.get("spec") or {}
    if spec.get("minAvailable") is not None:
        return f"minAvailable {spec['minAvailable']}"
    if spec.get("maxUnavailable") is not None:
        return f"maxUnavailable {spec['maxUnavailable']}"
    return "no minAvailable or maxUnavailable"


def _budget_seen(pdb: dict) -> BudgetSeen:
    st = pdb.get("status") or {}
    return BudgetSeen(pdb["metadata"]["name"], _rule(pdb), int(st.get("disruptionsAllowed") or 0),
                      int(st.get("currentHealthy") or 0), int(st.get("expectedPods") or 0))


def _lease_seen(lease: dict) -> LeaseSeen:
    spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    return LeaseSeen(f"{meta.get('namespace')}/{meta.get('name')}", spec.get("holderIdentity") or None,
                     parse_time(renewed), spec.get("leaseDurationSeconds"))


def _spread_keys(template: dict) -> tuple[str, ...]:
    keys = [c.get("topologyKey") for c in (template.get("spec") or {}).get("topologySpreadConstraints") or []]
    return tuple(dict.fromkeys([HOSTNAME_KEY, *[k for k in keys if k]]))


def read_workload(kube: "Kube", spec: HAWorkload, nodes: Callable[[], dict[str, dict[str, str]]]) -> WorkloadSeen:
    """`nodes()`: every node's labels, read only where a topology key other than the node's name is judged."""
    dep = kube.get("apps/v1", "Deployment", spec.name, spec.namespace)
    leases = {ref: _read_leases(kube, ref) for ref in spec.leases}
    if dep is None:
        return WorkloadSeen(spec, False, leases=leases)
    template = (dep.get("spec") or {}).get("template") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    selector = (dep.get("spec") or {}).get("selector")
    pods = [p for p in kube.list("v1", "Pod", spec.namespace)[0]
            if selector_matches(selector, (p.get("metadata") or {}).get("labels") or {})]
    budgets = [_budget_seen(b) for b in kube.list("policy/v1", "PodDisruptionBudget", spec.namespace)[0]
               if selector_matches((b.get("spec") or {}).get("selector"), template_labels)]
    keys = _spread_keys(template)
    labels = {n: {k: v for k, v in node_labels.items() if k in keys}
              for n, node_labels in nodes().items()} if keys != (HOSTNAME_KEY,) else {}
    return WorkloadSeen(spec, True, tuple(_pod_seen(p) for p in pods), keys, labels, tuple(budgets), leases)


def _read_leases(kube: "Kube", ref: LeaseRef) -> tuple[LeaseSeen, ...]:
    if "*" not in ref.name:
        lease = kube.get("coordination.k8s.io/v1", "Lease", ref.name, ref.namespace)
        return (_lease_seen(lease),) if lease else ()
    return tuple(_lease_seen(x) for x in kube.list("coordination.k8s.io/v1", "Lease", ref.namespace)[0]
                 if fnmatch.fnmatchcase(x["metadata"]["name"], ref.name))


def _guards(webhook: dict) -> tuple[str, ...]:
    out = []
    for rule in webhook.get("rules") or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                out.append(f"{group or 'core'}/{resource}")
    return tuple(dict.fromkeys(out))


def _ready_endpoints(kube: "Kube", namespace: str, service: str) -> int:
    slices = kube.list("discovery.k8s.io/v1", "EndpointSlice", namespace,
                       label_selector=f"kubernetes.io/service-name={service}")[0]
    # An endpoint's `ready` unset means ready (discovery.k8s.io/v1 EndpointConditions: "nil ... should be interpreted
    # as true"); one address per endpoint counts once.
    return len({(e.get("targetRef") or {}).get("name") or tuple(e.get("addresses") or [])
                for s in slices for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready") is not False})


def read_webhooks(kube: "Kube", profile: "Profile") -> list[WebhookSeen]:
    out = []
    for _, item in profile.inventory("webhooks"):
        cfg = kube.get("admissionregistration.k8s.io/v1", item["kind"], item["name"])
        for webhook in (cfg or {}).get("webhooks") or []:
            svc = (webhook.get("clientConfig") or {}).get("service")
            ready = _ready_endpoints(kube, svc["namespace"], svc["name"]) if svc else 0
            out.append(WebhookSeen(f"{item['kind']}/{item['name']}", webhook.get("name", "?"),
                                   webhook.get("failurePolicy") or "Fail",
                                   f"{svc['namespace']}/{svc['name']}" if svc else None, ready, _guards(webhook)))
    return out


def read_posture(kube: "Kube", profile: "Profile") -> Posture:
    """What the cluster shows of every workload of the profile's `ha:` sections, and of its webhooks."""
    @functools.cache
    def nodes() -> dict[str, dict[str, str]]:
        return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}) for n in kube.list("v1", "Node")[0]}

    return Posture(tuple(read_workload(kube, w, nodes) for w in profile.ha_workloads()),
                   tuple(read_webhooks(kube, profile)))
