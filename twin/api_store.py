"""The twin API server's storage: resource registry, per-kind strategy (defaults, validation), objects, history.

Everything that decides *what* a write does lives here, so the HTTP layer (apiserver.py) and the twin's own
controllers (through the public Store methods) get exactly the same semantics: resourceVersion, generation,
status-subresource rules, managedFields, finalizers, owner garbage collection, namespace termination, CRD
registration, watch history. The HTTP-only concerns (admission, request log, faults, wire formats) stay out.

Locking: one RLock guards objects, registry and history. Writes read the live object, compute the new one
outside the lock (patches, admission callbacks may be slow or call back into the store), then commit under the
lock only if the object did not change meanwhile (otherwise they retry), the way the real apiserver's
GuaranteedUpdate does. Stored dicts are never mutated in place, so events can share them safely.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime
import itertools
import json
import logging
import queue
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

from twin import api_patch

log = logging.getLogger(__name__)

HISTORY_LIMIT = 2000
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


class ApiError(Exception):
    """An API error; apiserver.py turns it into a Status object with the same code, reason and message."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _not_found(info, name):
    return ApiError(404, "NotFound", f'{_qualified(info)} "{name}" not found',
                    {"name": name, "group": info.group, "kind": info.plural})


def _qualified(info) -> str:
    return f"{info.plural}.{info.group}" if info.group else info.plural


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------------------
# registry

@dataclass
class ResourceInfo:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: set = field(default_factory=set)
    singular: str = ""
    short_names: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    list_kind: str = ""
    crd: str | None = None  # name of the defining CustomResourceDefinition, None for built-ins

    def __post_init__(self):
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or self.kind + "List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gk(self) -> tuple[str, str]:
        return self.group, self.kind


_BUILTINS = [
    # group, version, plural, kind, namespaced, subresources, shortNames, categories
    ("", "v1", "namespaces", "Namespace", False, {"status", "finalize"}, ["ns"], []),
    ("", "v1", "nodes", "Node", False, {"status"}, ["no"], []),
    ("", "v1", "pods", "Pod", True, {"status", "log"}, ["po"], ["all"]),
    ("", "v1", "services", "Service", True, {"status", "proxy"}, ["svc"], ["all"]),
    ("", "v1", "endpoints", "Endpoints", True, set(), ["ep"], []),
    ("", "v1", "configmaps", "ConfigMap", True, set(), ["cm"], []),
    ("", "v1", "secrets", "Secret", True, set(), [], []),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, set(), ["sa"], []),
    ("", "v1", "events", "Event", True, set(), ["ev"], []),
    ("apps", "v1", "deployments", "Deployment", True, {"status"}, ["deploy"], ["all"]),
    ("apps", "v1", "daemonsets", "DaemonSet", True, {"status"}, ["ds"], ["all"]),
    ("apps", "v1", "replicasets", "ReplicaSet", True, {"status"}, ["rs"], ["all"]),
    ("apps", "v1", "statefulsets", "StatefulSet", True, {"status"}, ["sts"], ["all"]),
    ("batch", "v1", "jobs", "Job", True, {"status"}, [], ["all"]),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
     False, set(), [], ["api-extensions"]),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
     False, set(), [], ["api-extensions"]),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, {"status"},
     ["crd", "crds"], ["api-extensions"]),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, set(), [], []),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, set(), [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, set(), [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, set(), [], []),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, {"status"}, ["pdb"], []),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, {"status"}, ["hpa"],
     ["all"]),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", True, {"status"}, ["ing"], []),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, set(), [], []),
]


def version_priority(version: str):
    """Kubernetes version ordering for discovery: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (1, 0, 0, 0, version)
    stage = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (0, -stage, -int(m.group(1)), -int(m.group(3) or 0), version)


def split_api_version(api_version: str) -> tuple[str, str]:
    return tuple(api_version.split("/", 1)) if "/" in (api_version or "") else ("", api_version or "")


# ---------------------------------------------------------------------------------------------------------------
# selectors

_LABEL_TERM = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\((.*)\))?\s*$")


def parse_label_selector(selector) -> list[tuple]:
    """dict or selector string -> [(key, op, values)] with op in = != in notin exists !exists."""
    if not selector:
        return []
    if isinstance(selector, dict):
        return [(k, "=", (str(v),)) for k, v in selector.items()]
    terms, depth, current = [], 0, ""
    for char in selector:  # split on commas outside parentheses
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    out = []
    for term in terms:
        m = _LABEL_TERM.match(term)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label selector: {term!r}")
        negate, key, eq, value, set_op, values = m.groups()
        if eq:
            out.append((key, "!=" if eq == "!=" else "=", (value,)))
        elif set_op:
            out.append((key, set_op, tuple(v.strip() for v in values.split(",") if v.strip())))
        else:
            out.append((key, "!exists" if negate else "exists", ()))
    return out


def labels_match(requirements: list[tuple], labels: dict | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present, value = key in labels, labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def parse_field_selector(selector: str | None) -> list[tuple]:
    if not selector:
        return []
    out = []
    for term in selector.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\[\]-]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


def _field_value(obj: dict, path: str) -> str:
    node = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(requirements: list[tuple], obj: dict) -> bool:
    return all((_field_value(obj, path) == value) == (op == "=") for path, op, value in requirements)


# ---------------------------------------------------------------------------------------------------------------
# per-kind strategy: defaults and validation (a small, realistic subset of the real apiserver's)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS_LABEL_KINDS = {("", "Namespace"), ("", "Service")}
_PATH_SEGMENT_KINDS = {("rbac.authorization.k8s.io", k) for k in ("Role", "RoleBinding", "ClusterRole",
                                                                   "ClusterRoleBinding")}
_POD_TEMPLATE_KINDS = {("apps", "Deployment"), ("apps", "DaemonSet"), ("apps", "ReplicaSet"),
                       ("apps", "StatefulSet"), ("batch", "Job")}


def _name_errors(info: ResourceInfo, name: str) -> list[tuple]:
    if info.gk in _PATH_SEGMENT_KINDS:
        if name in (".", "..") or "/" in name or "%" in name:
            return [("metadata.name", f'Invalid value: "{name}": may not contain \'/\' or \'%\'')]
        return []
    if info.gk in _DNS_LABEL_KINDS:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return [("metadata.name", f'Invalid value: "{name}": {_LABEL_MSG}')]
        return []
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [("metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}')]
    return []


def _default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if "serviceAccountName" in spec or "serviceAccount" in spec:
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _pod_spec_errors(spec, prefix: str, restart_policies=None) -> list[tuple]:
    if not isinstance(spec, dict):
        return [(prefix, "Required value")]
    errors = []
    containers = spec.get("containers")
    if not containers:
        errors.append((f"{prefix}.containers", "Required value"))
    for n, container in enumerate(containers or []):
        if not isinstance(container, dict) or not container.get("name"):
            errors.append((f"{prefix}.containers[{n}].name", "Required value"))
        elif not container.get("image"):
            errors.append((f"{prefix}.containers[{n}].image", "Required value"))
    if restart_policies and spec.get("restartPolicy") not in restart_policies:
        supported = ", ".join(f'"{p}"' for p in restart_policies)
        errors.append((f"{prefix}.restartPolicy", f'Unsupported value: "{spec.get("restartPolicy")}": '
                                                  f'supported values: {supported}'))
    return errors


def apply_defaults(info: ResourceInfo, obj: dict, creating: bool) -> None:
    """Idempotent defaulting, run on every write like the real apiserver's decoding defaulters."""
    meta = obj["metadata"]
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    gk = info.gk
    if gk == ("", "Namespace"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if creating:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
    elif gk == ("", "Pod") and spec is not None:
        _default_pod_spec(spec)
        if creating and not obj.get("status"):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif gk == ("", "Secret"):
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        for key, value in string_data.items():
            obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()
    elif gk == ("", "Service") and spec is not None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
        if creating and not obj.get("status"):
            obj["status"] = {"loadBalancer": {}}
    elif gk in _POD_TEMPLATE_KINDS and spec is not None:
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            if gk == ("batch", "Job"):
                template["spec"].setdefault("restartPolicy", "Always")  # then rejected by validation, as real
            _default_pod_spec(template["spec"])
        if gk in {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet")}:
            spec.setdefault("replicas", 1)
        if gk != ("apps", "ReplicaSet") and gk != ("batch", "Job"):
            spec.setdefault("revisionHistoryLimit", 10)
        if gk == ("apps", "Deployment"):
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
            spec.setdefault("progressDeadlineSeconds", 600)
        elif gk == ("apps", "StatefulSet"):
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        elif gk == ("apps", "DaemonSet"):
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        elif gk == ("batch", "Job"):
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            if creating and not spec.get("manualSelector") and meta.get("uid"):
                job_labels = {"batch.kubernetes.io/controller-uid": meta["uid"], "controller-uid": meta["uid"],
                              "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"]}
                spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})
                if isinstance(template, dict):
                    template.setdefault("metadata", {}).setdefault("labels", {}).update(job_labels)
    elif gk[0] == "admissionregistration.k8s.io":
        for webhook in obj.get("webhooks") or []:
            if not isinstance(webhook, dict):
                continue
            webhook.setdefault("failurePolicy", "Fail")
            webhook.setdefault("matchPolicy", "Equivalent")
            webhook.setdefault("namespaceSelector", {})
            webhook.setdefault("objectSelector", {})
            webhook.setdefault("timeoutSeconds", 10)
            if gk[1] == "MutatingWebhookConfiguration":
                webhook.setdefault("reinvocationPolicy", "Never")
            service = (webhook.get("clientConfig") or {}).get("service")
            if isinstance(service, dict):
                service.setdefault("port", 443)
            for rule in webhook.get("rules") or []:
                if isinstance(rule, dict):
                    rule.setdefault("scope", "*")
    elif gk == ("apiextensions.k8s.io", "CustomResourceDefinition") and spec is not None:
        names = spec.get("names")
        if isinstance(names, dict) and names.get("kind"):
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")
        spec.setdefault("conversion", {"strategy": "None"})


def validation_errors(info: ResourceInfo, obj: dict, old: dict | None) -> list[tuple]:
    gk, spec = info.gk, obj.get("spec")
    errors: list[tuple] = []
    if gk == ("", "Pod"):
        errors += _pod_spec_errors(spec, "spec")
    elif gk in _POD_TEMPLATE_KINDS:
        if not isinstance(spec, dict):
            return [("spec", "Required value")]
        selector = spec.get("selector")
        template = spec.get("template") if isinstance(spec.get("template"), dict) else None
        if not selector:
            errors.append(("spec.selector", "Required value"))
        if template is None:
            errors.append(("spec.template", "Required value"))
        else:
            labels = (template.get("metadata") or {}).get("labels") or {}
            wanted = (selector or {}).get("matchLabels") or {}
            if selector and any(labels.get(k) != v for k, v in wanted.items()):
                errors.append(("spec.template.metadata.labels",
                               f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
            policies = ("OnFailure", "Never") if gk == ("batch", "Job") else ("Always",)
            errors += _pod_spec_errors(template.get("spec"), "spec.template.spec", policies)
        if old is not None and gk[0] == "apps" and (old.get("spec") or {}).get("selector") != selector:
            errors.append(("spec.selector", f"Invalid value: {json.dumps(selector)}: field is immutable"))
    elif gk == ("", "Service"):
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
            errors.append(("spec.ports", "Required value"))
        old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") != old_ip:
            errors.append(("spec.clusterIP", f'Invalid value: "{spec.get("clusterIP")}": field is immutable'))
    elif gk[0] == "admissionregistration.k8s.io":
        for n, webhook in enumerate(obj.get("webhooks") or []):
            where = f"webhooks[{n}]"
            if not isinstance(webhook, dict):
                errors.append((where, "Invalid value: must be an object"))
                continue
            if len(str(webhook.get("name", "")).split(".")) < 3:
                errors.append((f"{where}.name", f'Invalid value: "{webhook.get("name", "")}": should be a domain '
                                                f'with at least three segments separated by dots'))
            client = webhook.get("clientConfig") or {}
            if not client.get("service") and not client.get("url"):
                errors.append((f"{where}.clientConfig", "Required value: exactly one of url or service is required"))
            if webhook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                errors.append((f"{where}.sideEffects", f'Unsupported value: "{webhook.get("sideEffects", "")}": '
                                                       f'supported values: "None", "NoneOnDryRun"'))
            if not webhook.get("admissionReviewVersions"):
                errors.append((f"{where}.admissionReviewVersions", "Required value: must specify one of v1, v1beta1"))
    elif gk == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        spec = spec if isinstance(spec, dict) else {}
        names = spec.get("names") or {}
        for path, value in (("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
                            ("spec.names.kind", names.get("kind"))):
            if not value:
                errors.append((path, "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errors.append(("spec.scope", f'Unsupported value: "{spec.get("scope", "")}": '
                                         f'supported values: "Cluster", "Namespaced"'))
        versions = spec.get("versions") or []
        if not versions:
            errors.append(("spec.versions", "Invalid value: null: must have exactly one version marked as storage "
                                            "version"))
        elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            errors.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        expected = f'{names.get("plural")}.{spec.get("group")}'
        if names.get("plural") and spec.get("group") and obj["metadata"]["name"] != expected:
            errors.append(("metadata.name", f'Invalid value: "{obj["metadata"]["name"]}": must be '
                                            f'spec.names.plural+"."+spec.group'))
    return errors


def _invalid(info: ResourceInfo, name: str, errors: list[tuple]) -> ApiError:
    texts = [f"{path}: {detail}" for path, detail in errors]
    message = f'{info.kind} "{name}" is invalid: ' + (texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]")
    causes = [{"reason": "FieldValueInvalid" if "Invalid value" in d else "FieldValueRequired",
               "message": d, "field": p} for p, d in errors]
    return ApiError(422, "Invalid", message, {"name": name, "group": info.group, "kind": info.kind,
                                              "causes": causes})


def _crd_status(crd: dict, old: dict | None) -> dict:
    """What the apiextensions controllers would write within milliseconds of a CRD write."""
    spec = crd.get("spec") or {}
    names = copy.deepcopy(spec.get("names") or {})
    old_status = (old or {}).get("status") or {}
    old_conditions = {c.get("type"): c for c in old_status.get("conditions") or []}
    now = now_iso()

    def condition(kind, reason, message):
        previous = old_conditions.get(kind) or {}
        since = previous.get("lastTransitionTime") if previous.get("status") == "True" else None
        return {"type": kind, "status": "True", "lastTransitionTime": since or now, "reason": reason,
                "message": message}

    stored = list(old_status.get("storedVersions") or [])
    storage = next((v.get("name") for v in spec.get("versions") or [] if v.get("storage")), None)
    if storage and storage not in stored:
        stored.append(storage)
    return {"acceptedNames": names, "storedVersions": stored,
            "conditions": [condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                           condition("Established", "InitialNamesAccepted", "the initial names have been accepted")]}


# ---------------------------------------------------------------------------------------------------------------
# store

Event = collections.namedtuple("Event", "rv type group kind obj old")


@dataclass
class WriteContext:
    """Who writes and how: decides managedFields and which part of the object the write may change."""
    manager: str = "twin-controller"
    operation: str = "Update"       # "Update" or "Apply" (managedFields already computed by the builder)
    subresource: str = ""           # "" or "status"
    keep_status_on_create: bool = True   # controllers may seed status; HTTP creates drop it like the real API


class Watcher:
    """One open watch: events for one group/kind arrive on `queue` (pushed at commit, in commit order)."""

    def __init__(self, info: ResourceInfo, namespace, label_selector, field_selector):
        self.info = info
        self.namespace = namespace
        self.labels = parse_label_selector(label_selector)
        self.fields = parse_field_selector(field_selector)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.initial: list[tuple[str, dict]] = []

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def translate(self, event: Event) -> tuple[str, dict] | None:
        """Selector-aware event: an object leaving the selection is DELETED for this watch, entering is ADDED."""
        now, before = self.matches(event.obj), (event.type == "MODIFIED" and self.matches(event.old))
        if event.type == "MODIFIED":
            if now and before:
                return "MODIFIED", event.obj
            if now:
                return "ADDED", event.obj
            return ("DELETED", event.obj) if before else None
        return (event.type, event.obj) if now else None


class Store:
    """Thread-safe object store; objects are plain dicts and every method returns deep copies."""

    def __init__(self):
        self._lock = threading.RLock()
        self._resources: dict[tuple, ResourceInfo] = {}       # (group, version, plural) -> info
        self._by_kind: dict[tuple, ResourceInfo] = {}         # (group, version, kind) -> info
        self._storage: dict[tuple, ResourceInfo] = {}         # (group, kind) -> info of the storage version
        self._builtin_groups: list[str] = []
        self._objects: dict[tuple, dict] = collections.defaultdict(dict)  # (group, kind) -> {(ns, name): obj}
        self._uids: dict[str, tuple] = {}                     # uid -> ((group, kind), (ns, name))
        self._rv = 100
        self._history: collections.deque = collections.deque(maxlen=HISTORY_LIMIT)
        self._floor = self._rv                                # watches may resume from any rv >= floor
        self._watchers: list[Watcher] = []
        self._subscribers: list[Callable] = []
        self._dispatch_q: queue.SimpleQueue = queue.SimpleQueue()
        self._work_q: queue.SimpleQueue = queue.SimpleQueue()
        self._terminating: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()
        self._ip_counter = itertools.count(10)
        for group, version, plural, kind, namespaced, subs, short, cats in _BUILTINS:
            self._register(ResourceInfo(group, version, plural, kind, namespaced, set(subs), short_names=list(short),
                                        categories=list(cats)))
            if group not in self._builtin_groups:
                self._builtin_groups.append(group)

    # -- registry ------------------------------------------------------------------------------------------------

    def _register(self, info: ResourceInfo, storage: bool = True) -> None:
        self._resources[(info.group, info.version, info.plural)] = info
        self._by_kind[(info.group, info.version, info.kind)] = info
        if storage or info.gk not in self._storage:
            self._storage[info.gk] = info

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None:
        with self._lock:
            return self._by_kind.get((*split_api_version(api_version), kind))

    def resource_by_plural(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        with self._lock:
            return self._resources.get((group, version, plural))

    def group_versions(self) -> dict[str, list[str]]:
        """{group: [versions, preferred first]} in discovery order (built-in groups first)."""
        with self._lock:
            groups: dict[str, set] = {}
            for group, version, _ in self._resources:
                groups.setdefault(group, set()).add(version)
            order = [g for g in self._builtin_groups if g in groups] + \
                sorted(g for g in groups if g not in self._builtin_groups)
            return {g: sorted(groups[g], key=version_priority) for g in order}

    def resources_in(self, group: str, version: str) -> list[ResourceInfo]:
        with self._lock:
            return [i for (g, v, _), i in self._resources.items() if (g, v) == (group, version)]

    def _info(self, api_version: str, kind: str) -> ResourceInfo:
        info = self.resource_for(api_version, kind)
        if info is None:
            raise ApiError(404, "NotFound", f'the server could not find the requested resource ({kind} '
                                            f'{api_version} is not registered)')
        return info

    def _registered(self, info: ResourceInfo) -> ResourceInfo:
        current = self._resources.get((info.group, info.version, info.plural))
        if current is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return current

    def _register_crd(self, crd: dict) -> None:
        self._unregister_crd(crd["metadata"]["name"], drop_objects=False)
        spec = crd["spec"]
        names = spec["names"]
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            subs = {"status"} if (version.get("subresources") or {}).get("status") is not None else set()
            self._register(ResourceInfo(spec["group"], version["name"], names["plural"], names["kind"],
                                        spec.get("scope") == "Namespaced", subs, names.get("singular", ""),
                                        list(names.get("shortNames") or []), list(names.get("categories") or []),
                                        names.get("listKind", ""), crd=crd["metadata"]["name"]),
                           storage=bool(version.get("storage")))

    def _unregister_crd(self, crd_name: str, drop_objects: bool) -> None:
        mine = [key for key, info in self._resources.items() if info.crd == crd_name]
        gks = {self._resources[key].gk for key in mine}
        for key in mine:
            info = self._resources.pop(key)
            self._by_kind.pop((info.group, info.version, info.kind), None)
        for gk in gks:
            if drop_objects:
                for key, obj in list(self._objects.get(gk, {}).items()):
                    self._delete_now(self._storage[gk], key, obj, collect=True)
                self._objects.pop(gk, None)
            if not any(i.gk == gk for i in self._resources.values()):
                self._storage.pop(gk, None)

    # -- background threads (subscriber dispatch, garbage collection, namespace termination) -----------------

    def _ensure_threads(self) -> None:
        with self._lock:
            self._stopping.clear()
            for name, target in (("dispatch", self._dispatch_loop), ("worker", self._worker_loop)):
                thread = self._threads.get(name)
                if thread is None or not thread.is_alive():
                    thread = threading.Thread(target=target, name=f"twin-apistore-{name}", daemon=True)
                    self._threads[name] = thread
                    thread.start()

    def close(self) -> None:
        """Stop the background threads (pending GC and subscriber events are dropped); restarted on next use."""
        self._stopping.set()
        self._dispatch_q.put(None)
        self._work_q.put(None)
        for thread in list(self._threads.values()):
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        self._threads.clear()

    def subscribe(self, fn: Callable[[str, dict], None]) -> None:
        with self._lock:
            self._subscribers.append(fn)
        self._ensure_threads()

    def unsubscribe(self, fn) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def _dispatch_loop(self) -> None:
        while True:
            event = self._dispatch_q.get()
            if self._stopping.is_set():
                return
            if event is None:
                continue  # a stale stop sentinel from an earlier close()
            for fn in list(self._subscribers):
                try:
                    fn(event.type, copy.deepcopy(event.obj))
                except Exception:  # a controller bug must not stop the event stream for everyone else
                    log.exception("twin store subscriber %r failed on %s %s", fn, event.type, event.kind)

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                task = self._work_q.get(timeout=0.02 if self._terminating else 0.5)
            except queue.Empty:
                task = None
            if self._stopping.is_set():
                return
            try:
                if task is not None and task[0] == "gc":
                    self._collect(task[1])
                for namespace in sorted(self._terminating):
                    self._drain_namespace(namespace)
            except Exception:
                log.exception("twin store background task %r failed", task)

    def _collect(self, owner_uid: str) -> None:
        """Garbage collector: dependents of a deleted owner go too, unless another owner still exists."""
        with self._lock:
            dependents = [(gk, key) for gk, bucket in self._objects.items() for key, obj in bucket.items()
                          if any(r.get("uid") == owner_uid for r in obj["metadata"].get("ownerReferences") or [])]
        for gk, (namespace, name) in dependents:
            with self._lock:
                obj = self._objects.get(gk, {}).get((namespace, name))
                info = self._storage.get(gk)
                if obj is None or info is None:
                    continue
                remaining = [r for r in obj["metadata"]["ownerReferences"]
                             if r.get("uid") != owner_uid and r.get("uid") in self._uids]
            try:
                if remaining:
                    def drop_ref(live):
                        live["metadata"]["ownerReferences"] = [r for r in live["metadata"].get("ownerReferences", [])
                                                               if r.get("uid") != owner_uid]
                        return live
                    self.write(info, namespace, name, drop_ref, WriteContext("garbage-collector"), mode="update")
                else:
                    self.remove(info, namespace, name)
            except ApiError:
                pass  # already gone

    def _drain_namespace(self, namespace: str) -> None:
        with self._lock:
            if ("", namespace) not in self._objects[("", "Namespace")]:
                self._terminating.discard(namespace)
                return
            contents = [(gk, key) for gk, bucket in self._objects.items()
                        if gk in self._storage and self._storage[gk].namespaced
                        for key in bucket if key[0] == namespace]
        for gk, (ns, name) in contents:
            with self._lock:
                obj = self._objects.get(gk, {}).get((ns, name))
                info = self._storage.get(gk)
            if obj is None or info is None or obj["metadata"].get("deletionTimestamp"):
                continue
            try:
                self.remove(info, ns, name)
            except ApiError:
                pass
        with self._lock:
            if any(key[0] == namespace for gk, bucket in self._objects.items()
                   if gk in self._storage and self._storage[gk].namespaced for key in bucket):
                return  # waits for finalizers; checked again on the next tick
            live = self._objects[("", "Namespace")].get(("", namespace))
            self._terminating.discard(namespace)
            if live is None:
                return
            info = self._storage[("", "Namespace")]
            new = copy.deepcopy(live)
            new.setdefault("spec", {})["finalizers"] = []
            if new["metadata"].get("finalizers"):
                self._commit(info, ("", namespace), live, new)
            else:
                self._delete_now(info, ("", namespace), new, collect=True)

    # -- events and history ------------------------------------------------------------------------------------

    def _emit(self, kind: str, info: ResourceInfo, obj: dict, old: dict | None) -> None:
        event = Event(int(obj["metadata"]["resourceVersion"]), kind, info.group, info.kind, obj, old)
        self._history.append(event)
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv - 1
        for watcher in self._watchers:
            if watcher.info.gk == info.gk:
                watcher.queue.put(event)
        if self._subscribers:
            self._dispatch_q.put(event)

    def compact(self) -> None:
        with self._lock:
            self._history.clear()
            self._floor = self._rv

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def watch(self, info: ResourceInfo, namespace=None, resource_version=None, label_selector=None,
              field_selector=None) -> Watcher:
        """Register a watch; `initial` holds the synthetic ADDED events or the replayed history."""
        watcher = Watcher(info, namespace, label_selector, field_selector)
        with self._lock:
            self._registered(info)
            if resource_version in (None, "", "0"):
                watcher.initial = [("ADDED", obj) for obj in self._objects.get(info.gk, {}).values()
                                   if watcher.matches(obj)]
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise ApiError(400, "BadRequest", f'invalid resource version "{resource_version}"') from None
                if since < self._floor:
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({self._floor})")
                for event in self._history:
                    if event.rv > since and (event.group, event.kind) == info.gk:
                        translated = watcher.translate(event)
                        if translated:
                            watcher.initial.append(translated)
            self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def rv_if_drained(self, watcher: Watcher) -> str | None:
        """The current resourceVersion if this watcher has received every event up to it (safe for a BOOKMARK)."""
        with self._lock:
            return str(self._rv) if watcher.queue.empty() else None

    # -- reads -----------------------------------------------------------------------------------------------

    def _view(self, obj: dict, info: ResourceInfo) -> dict:
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = info.api_version, info.kind
        return out

    def read(self, info: ResourceInfo, namespace, name) -> dict | None:
        with self._lock:
            self._registered(info)
            obj = self._objects.get(info.gk, {}).get(((namespace or "") if info.namespaced else "", name))
            return self._view(obj, info) if obj else None

    def query(self, info: ResourceInfo, namespace=None, label_selector=None, field_selector=None):
        """(items, resourceVersion) for a list; items sorted by namespace/name like etcd keys."""
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        with self._lock:
            self._registered(info)
            items = [self._view(obj, info) for key, obj in sorted(self._objects.get(info.gk, {}).items())
                     if (not namespace or not info.namespaced or key[0] == namespace)
                     and labels_match(labels, obj["metadata"].get("labels")) and fields_match(fields, obj)]
            return items, str(self._rv)

    # -- writes ----------------------------------------------------------------------------------------------

    def _check_namespace(self, info: ResourceInfo, namespace: str) -> None:
        if not info.namespaced:
            return
        ns = self._objects[("", "Namespace")].get(("", namespace))
        if ns is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces", "group": ""})
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {namespace} because it "
                                             f"is being terminated", {"name": namespace, "kind": "namespaces"})

    def _prepare(self, info: ResourceInfo, old: dict | None, candidate: dict, ctx: WriteContext) -> dict:
        """Turn a proposed object into the one to store: identity, status rules, defaults, validation,
        generation, managedFields. Idempotent (runs again after mutating admission)."""
        if not isinstance(candidate, dict):
            raise ApiError(400, "BadRequest", "the object must be a JSON/YAML map")
        new = copy.deepcopy(candidate)
        new["apiVersion"], new["kind"] = self._storage.get(info.gk, info).api_version, info.kind
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if not info.namespaced:
            meta.pop("namespace", None)
        if old is not None:
            old_meta = old["metadata"]
            for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generateName"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
        meta.pop("resourceVersion", None)
        meta.pop("selfLink", None)
        has_status = "status" in info.subresources
        if ctx.subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status if isinstance(status, dict) else {}
            meta = new["metadata"]
            meta.pop("resourceVersion", None)
        elif has_status:
            if old is not None:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            elif not ctx.keep_status_on_create:
                new.pop("status", None)
        apply_defaults(info, new, creating=old is None)
        errors = _name_errors(info, meta.get("name", "")) + validation_errors(info, new, old)
        if errors:
            raise _invalid(info, meta.get("name", ""), errors)
        if info.gk == ("", "Service") and isinstance(new.get("spec"), dict):
            spec = new["spec"]
            if spec.get("type") != "ExternalName" and not spec.get("clusterIP"):
                n = next(self._ip_counter)
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 2}"
            if spec.get("clusterIP") and spec.get("type") != "ExternalName":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if info.gk == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            new["status"] = _crd_status(new, old)

        def body(o):
            return {k: v for k, v in (o or {}).items() if k not in ("metadata", "status", "apiVersion", "kind")}
        if old is None:
            meta["generation"] = 1
        else:
            meta["generation"] = old["metadata"].get("generation", 1) + (body(old) != body(new))
        scope = "status" if ctx.subresource == "status" else ("main" if has_status else "all")
        if ctx.operation == "Apply":
            meta["managedFields"] = candidate.get("metadata", {}).get("managedFields") or []
        else:
            meta["managedFields"] = api_patch.track_update(old, new, ctx.manager, info.api_version, scope,
                                                           ctx.subresource, now_iso())
        if not meta["managedFields"]:
            meta.pop("managedFields")
        return new

    def _finished(self, info: ResourceInfo, obj: dict) -> bool:
        """A deleting object whose last finalizer is gone is removed by this write."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        return not (info.gk == ("", "Namespace") and (obj.get("spec") or {}).get("finalizers"))

    def _commit(self, info: ResourceInfo, key: tuple, old: dict | None, new: dict) -> dict:
        """Store `new` (lock held): next resourceVersion, indexes, event, CRD registration."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if old is not None and self._finished(info, new):
            self._rv -= 1
            return self._delete_now(info, key, new, collect=True)
        self._objects[info.gk][key] = new
        self._uids[new["metadata"]["uid"]] = (info.gk, key)
        self._emit("ADDED" if old is None else "MODIFIED", info, new, old)
        if info.gk == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            self._register_crd(new)
        return new

    def _delete_now(self, info: ResourceInfo, key: tuple, obj: dict, collect: bool) -> dict:
        self._rv += 1
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[info.gk].pop(key, None)
        self._uids.pop(final["metadata"].get("uid"), None)
        self._emit("DELETED", info, final, obj)
        if info.gk == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            self._unregister_crd(key[1], drop_objects=True)
        if collect:
            self._work_q.put(("gc", final["metadata"].get("uid")))
            self._ensure_threads()
        return final

    @staticmethod
    def _same(a: dict, b: dict) -> bool:
        def strip(o):
            o = dict(o)
            o["metadata"] = {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}
            return o
        return strip(a) == strip(b)

    def write(self, info: ResourceInfo, namespace, name, build: Callable, ctx: WriteContext, *, mode: str,
              dry_run: bool = False, admit: Callable | None = None) -> tuple[dict, bool]:
        """The one write path. build(live copy or None) -> proposed object; mode "create" | "update" | "upsert".

        admit(old, new) -> replacement dict or None runs outside the lock. Returns (object, created).
        """
        namespace = (namespace or "") if info.namespaced else ""
        if info.namespaced and not namespace:
            raise _invalid(info, name or "", [("metadata.namespace", "Required value")])
        key = (namespace, name)
        for _ in range(50):
            with self._lock:
                info = self._registered(info)
                live = self._objects.get(info.gk, {}).get(key)
                if live is None and mode == "update":
                    raise _not_found(info, name)
                if live is not None and mode == "create":
                    raise ApiError(409, "AlreadyExists", f'{_qualified(info)} "{name}" already exists',
                                   {"name": name, "group": info.group, "kind": info.plural})
                if live is None:
                    self._check_namespace(info, namespace)
            candidate = build(copy.deepcopy(live) if live else None)
            if live is None:
                meta = candidate.setdefault("metadata", {})
                meta["name"] = name
                if info.namespaced:
                    meta["namespace"] = namespace
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = now_iso()
            new = self._prepare(info, live, candidate, ctx)
            if admit is not None:
                mutated = admit(copy.deepcopy(live) if live else None, self._view(new, info))
                if mutated is not None:
                    new = self._prepare(info, live, mutated, ctx)
            with self._lock:
                info = self._registered(info)
                current = self._objects.get(info.gk, {}).get(key)
                if current is not live:
                    continue  # changed meanwhile: recompute on the fresh object
                if live is None:
                    self._check_namespace(info, namespace)
                elif self._same(live, new):
                    return self._view(live, info), False
                if dry_run:
                    if live is not None:
                        new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                    return self._view(new, info), live is None
                return self._view(self._commit(info, key, live, new), info), live is None
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(info)} "{name}": too many '
                                        f'concurrent writes')

    def remove(self, info: ResourceInfo, namespace, name, *, dry_run=False, orphan=False,
               preconditions: dict | None = None) -> tuple[dict, bool]:
        """Delete; returns (object, deleted_now). Finalizers (and namespaces) make it a graceful deletion."""
        key = ((namespace or "") if info.namespaced else "", name)
        with self._lock:
            info = self._registered(info)
            live = self._objects.get(info.gk, {}).get(key)
            if live is None:
                raise _not_found(info, name)
            for field_name in ("uid", "resourceVersion"):
                wanted = (preconditions or {}).get(field_name)
                if wanted and live["metadata"].get(field_name) != wanted:
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(info)} "{name}": '
                                                    f'Precondition failed: {field_name.upper() if field_name == "uid" else "ResourceVersion"}'
                                                    f' in precondition: {wanted}, '
                                                    f'{field_name} in object meta: {live["metadata"].get(field_name)}',
                                   {"name": name, "group": info.group, "kind": info.plural})
            is_namespace = info.gk == ("", "Namespace")
            if is_namespace and name in PROTECTED_NAMESPACES:
                raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                                 f'deleted', {"name": name, "kind": "namespaces"})
            graceful = bool(live["metadata"].get("finalizers")) or is_namespace
            if graceful:
                if live["metadata"].get("deletionTimestamp"):
                    return self._view(live, info), False
                new = copy.deepcopy(live)
                new["metadata"]["deletionTimestamp"] = now_iso()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["generation"] = new["metadata"].get("generation", 1) + 1
                if is_namespace:
                    new.setdefault("status", {})["phase"] = "Terminating"
                if dry_run:
                    return self._view(new, info), False
                new = self._commit(info, key, live, new)
                if is_namespace:
                    self._terminating.add(name)
                    self._work_q.put(("ns", name))
                    self._ensure_threads()
                return self._view(new, info), False
            if dry_run:
                return self._view(live, info), True
            return self._view(self._delete_now(info, key, live, collect=not orphan), info), True

    # -- public API for the twin's controllers -------------------------------------------------------------

    def get(self, api_version, kind, name, namespace=None) -> dict | None:
        return self.read(self._info(api_version, kind), namespace, name)

    def list(self, api_version, kind, namespace=None, label_selector=None) -> list[dict]:
        return self.query(self._info(api_version, kind), namespace, label_selector)[0]

    def _target(self, obj: dict) -> tuple[ResourceInfo, str, str]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "object must be a dict")
        info = self._info(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        return info, meta.get("namespace"), meta.get("name")

    def generate_name(self, info: ResourceInfo, obj: dict) -> str:
        """metadata.name, or generateName plus five random characters (like the real name generator)."""
        meta = obj.get("metadata") or {}
        if meta.get("name"):
            return meta["name"]
        if meta.get("generateName"):
            return meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        raise _invalid(info, "", [("metadata.name", "Required value: name or generateName is required")])

    def create(self, obj: dict) -> dict:
        info, namespace, _ = self._target(obj)
        name = self.generate_name(info, obj)
        return self.write(info, namespace, name, lambda live: copy.deepcopy(obj), WriteContext(), mode="create")[0]

    def apply(self, obj: dict, field_manager: str = "twin-controller", force: bool = True) -> dict:
        info, namespace, name = self._target(obj)
        if not name:
            raise _invalid(info, "", [("metadata.name", "Required value")])
        return self.write(info, namespace, name, self.apply_builder(info, obj, field_manager, force, ""),
                          WriteContext(field_manager, "Apply"), mode="upsert")[0]

    def apply_builder(self, info: ResourceInfo, applied: dict, manager: str, force: bool, subresource: str):
        scope = "status" if subresource == "status" else ("main" if "status" in info.subresources else "all")

        def build(live):
            try:
                result = api_patch.server_side_apply(live, applied, manager, info.api_version, scope, subresource,
                                                     force, now_iso())
            except api_patch.ApplyConflict as conflict:
                raise ApiError(409, "Conflict", conflict.message,
                               {"name": (applied.get("metadata") or {}).get("name", ""), "group": info.group,
                                "kind": info.plural, "causes": conflict.causes()}) from None
            if live is None and subresource == "" and isinstance(applied.get("status"), dict):
                result["status"] = copy.deepcopy(applied["status"])  # kept only by Store.apply (see WriteContext)
            return result
        return build

    def update(self, obj: dict) -> dict:
        info, namespace, name = self._target(obj)
        return self.write(info, namespace, name, self.update_builder(info, obj), WriteContext(), mode="update")[0]

    @staticmethod
    def update_builder(info: ResourceInfo, obj: dict):
        """PUT semantics: optimistic concurrency when the body carries metadata.resourceVersion."""
        def build(live):
            wanted = (obj.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != live["metadata"]["resourceVersion"]:
                name = live["metadata"]["name"]
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(info)} "{name}": the '
                                                f'object has been modified; please apply your changes to the latest '
                                                f'version and try again',
                               {"name": name, "group": info.group, "kind": info.plural})
            return copy.deepcopy(obj)
        return build

    def patch(self, api_version, kind, name, namespace, patch: dict) -> dict:
        info = self._info(api_version, kind)
        return self.write(info, namespace, name, lambda live: api_patch.merge_patch(live, patch), WriteContext(),
                          mode="update")[0]

    def update_status(self, api_version, kind, name, namespace, status: dict) -> dict:
        info = self._info(api_version, kind)
        sub = "status" if "status" in info.subresources else ""

        def build(live):
            live["status"] = copy.deepcopy(status)
            return live
        return self.write(info, namespace, name, build, WriteContext(subresource=sub), mode="update")[0]

    def delete(self, api_version, kind, name, namespace=None) -> None:
        self.remove(self._info(api_version, kind), namespace, name)
