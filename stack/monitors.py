"""AC-MONITORS: the Prometheus Operator monitors a profile declares exist and select live targets.

A ServiceMonitor or PodMonitor that selects nothing is scraped by nobody, and nothing says so: Prometheus simply has
no such target. So each declared monitor is resolved against the live API the way the operator resolves it into
scrape targets (its generated kubernetes_sd relabelling):
- ServiceMonitor: the Services matching spec.selector in the namespaces of spec.namespaceSelector (by default the
  monitor's own), then their EndpointSlices: a target is a ready endpoint of a slice that carries the port an
  endpoint names (`port`, a Service port name, or `targetPort`, the port behind it);
- PodMonitor: the Pods matching spec.selector in those namespaces that are Running and Ready, with a container port
  named by a podMetricsEndpoints' `port` (or numbered by its `portNumber`).
The label selectors go to the API server as they are (matchLabels and matchExpressions in its selector syntax): the
API does the matching, not code of ours.
"""
from __future__ import annotations

from dataclasses import dataclass

from stack.kube import Kube
from stack.profile import MonitorRef
from stack.readiness import condition_true

API = "monitoring.coreos.com/v1"
KINDS = ("ServiceMonitor", "PodMonitor")
_OPERATORS = {"In": "in", "NotIn": "notin"}


@dataclass(frozen=True)
class MonitorTargets:
    """What one declared monitor scrapes: its live targets, or why it has none."""
    ref: MonitorRef
    exists: bool
    targets: tuple[str, ...] = ()      # "namespace/object:port address", one per ready endpoint
    problem: str | None = None         # set exactly when the monitor is missing or selects no live target

    @property
    def ok(self) -> bool:
        return self.problem is None


class SelectorError(ValueError):
    """A label selector the API's selector syntax cannot express (an unknown operator)."""


def selector_string(selector: dict | None) -> str:
    """A metav1.LabelSelector in the API's label-selector syntax; "" selects everything (as an empty selector does
    for the operator)."""
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e["key"], ",".join(e.get("values") or [])
        if op in _OPERATORS:
            terms.append(f"{key} {_OPERATORS[op]} ({values})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise SelectorError(f"unknown label selector operator {op!r} for key {key!r}")
    return ",".join(terms)


def namespaces(monitor: dict) -> list[str | None]:
    """The namespaces a monitor selects from: [None] (all of them) for `any: true`, its matchNames, else its own."""
    chosen = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if chosen.get("any"):
        return [None]
    return list(chosen.get("matchNames") or []) or [monitor["metadata"]["namespace"]]


def resolve(kube: Kube, ref: MonitorRef) -> MonitorTargets:
    monitor = kube.get(API, ref.kind, ref.name, ref.namespace)
    if monitor is None:
        return MonitorTargets(ref, exists=False, problem=f"{ref} does not exist")
    try:
        selector = selector_string((monitor.get("spec") or {}).get("selector"))
    except SelectorError as e:
        return MonitorTargets(ref, exists=True, problem=f"{ref}: {e}")
    scopes = namespaces(monitor)
    if ref.kind == "ServiceMonitor":
        targets, problem = _service_targets(kube, monitor, selector, scopes)
    else:
        targets, problem = _pod_targets(kube, monitor, selector, scopes)
    return MonitorTargets(ref, exists=True, targets=tuple(targets), problem=f"{ref}: {problem}" if problem else None)


def _where(selector: str, scopes: list[str | None]) -> str:
    return (f"labels {selector or '(any)'} in "
            + ("every namespace" if scopes == [None] else "namespace " + ", ".join(str(s) for s in scopes)))


def _service_targets(kube: Kube, monitor: dict, selector: str,
                     scopes: list[str | None]) -> tuple[list[str], str | None]:
    endpoints = monitor["spec"].get("endpoints") or []
    if not endpoints:
        return [], "declares no endpoints"
    services = [s for ns in scopes for s in kube.list("v1", "Service", ns, label_selector=selector or None)[0]]
    if not services:
        return [], f"selects no Service ({_where(selector, scopes)})"
    targets, seen = [], []
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        slices, _ = kube.list("discovery.k8s.io/v1", "EndpointSlice", ns,
                              label_selector=f"kubernetes.io/service-name={name}")
        for ep in endpoints:
            wanted = _service_port(svc, ep)
            seen.append(f"{ns}/{name} ({wanted or 'no port named ' + repr(ep.get('port') or ep.get('targetPort'))})")
            if wanted is None:
                continue
            for sl in slices:
                if not any(p.get("name", "") == wanted for p in sl.get("ports") or []):
                    continue
                for e in sl.get("endpoints") or []:
                    if (e.get("conditions") or {}).get("ready") is not False:   # unset means ready (the API's rule)
                        targets += [f"{ns}/{name}:{wanted} {a}" for a in e.get("addresses") or []]
    if not targets:
        return [], "selects Services but no ready endpoint on the monitored port: " + "; ".join(seen)
    return targets, None


def _service_port(svc: dict, endpoint: dict) -> str | None:
    """The Service port name (as EndpointSlices carry it) an endpoint scrapes, or None when the Service has none:
    `port` names a Service port; `targetPort` names or numbers the port behind one."""
    ports = (svc.get("spec") or {}).get("ports") or []
    if endpoint.get("port"):
        return endpoint["port"] if any(p.get("name") == endpoint["port"] for p in ports) else None
    target = endpoint.get("targetPort")
    if target is None:
        return None
    for p in ports:
        if str(p.get("targetPort", p.get("port"))) == str(target):
            return p.get("name", "")
    return None


def _pod_targets(kube: Kube, monitor: dict, selector: str, scopes: list[str | None]) -> tuple[list[str], str | None]:
    endpoints = monitor["spec"].get("podMetricsEndpoints") or []
    if not endpoints:
        return [], "declares no podMetricsEndpoints"
    pods = [p for ns in scopes for p in kube.list("v1", "Pod", ns, label_selector=selector or None)[0]]
    if not pods:
        return [], f"selects no Pod ({_where(selector, scopes)})"
    live = [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and condition_true(p, "Ready")
            and not p["metadata"].get("deletionTimestamp")]
    if not live:
        return [], f"selects {len(pods)} Pod(s), none Running and Ready"
    targets = []
    for pod in live:
        ports = [port for c in pod["spec"].get("containers") or [] for port in c.get("ports") or []]
        ip = (pod.get("status") or {}).get("podIP")
        for ep in endpoints:
            for port in ports:
                if (ep.get("port") and port.get("name") == ep["port"]) or \
                        (ep.get("portNumber") and port.get("containerPort") == ep["portNumber"]):
                    targets.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}:"
                                   f"{port.get('name') or port['containerPort']} {ip}:{port['containerPort']}")
    if not targets:
        wanted = ", ".join(repr(ep.get("port") or ep.get("portNumber")) for ep in endpoints)
        return [], f"selects {len(live)} live Pod(s), none with a container port {wanted}"
    return targets, None
