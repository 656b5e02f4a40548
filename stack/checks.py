"""Declarative readiness checks, built from the profile inventory. The installers' gates and the acceptance suites use
the same builders, and `stack.wait.wait_for(kube, check, deadline)` (or `stack.wait.look`) runs any of them.

A Check names its own sources (what to list and watch), evaluates a snapshot of them by kind, namespace and name, and
carries the failure category its failures belong to. `all_of` composes checks. A check may also hold probes: active
requests (an admission dry-run) that run once its watched state is reached.

    namespaces(names)               every namespace exists and is Active
    crds(specs)                     every CRD exists, is Established and NamesAccepted, serves the versions
    workloads(refs)                 Deployments/DaemonSets Available with Ready pods; terminal on crash loops and on
                                    image pulls that keep failing through the kubelet's back-off
    deployed(refs)                  the workloads exist and a Deployment asks for the replicas the profile expects:
                                    on an installed stack, what is absent or scaled down stays so
    endpoints(refs)                 Services' Endpoints have a ready address
    webhook_ca_bundles(specs)       webhook configurations exist with a valid PEM caBundle
    webhooks_admit(names, profile)  the caBundles of those configurations and the Endpoints of their Services
    certificates(refs), issuers(kind, refs)   cert-manager objects Ready
    inference_service(ns, name)     an InferenceService Ready with a URL; terminal on its pods' pull/crash loops
    admission_probe(probe, ns)      a webhook admits a valid dry-run object and denies an invalid one
    absent(refs)                    objects gone (after a delete)
    pods_scaled(ns, selector, ...)  at least N Ready Pods with those labels, or at most M left (an autoscaler's work)
    while_running(check, prerequisite)  `check`, terminal as soon as what does its work is (a crash loop, an image
                                    pull that keeps failing): a wait need not run out to say so
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from stack import readiness
from stack.failures import Category
from stack.profile import WorkloadRef
from stack.retry import race_signature
from stack.snapshot import Snapshot, Source, Status

if TYPE_CHECKING:
    from stack.kube import Kube
    from stack.profile import Profile

CRD_API, CRD_KIND = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
ADMISSION_API = "admissionregistration.k8s.io/v1"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
CM_API = "cert-manager.io/v1"
ISVC_API, ISVC_KIND = "serving.kserve.io/v1beta1", "InferenceService"

Probe = Callable[["Kube"], Status]


@dataclass(frozen=True)
class Check:
    name: str                                         # what it checks, for messages: "kserve ready"
    category: Category                                # the category of its failures, unless a status says better
    sources: tuple[Source, ...] = ()
    evaluate: Callable[[Snapshot], Status] | None = None
    probes: tuple[Probe, ...] = ()

    def status(self, snapshot: Snapshot) -> Status:
        if self.evaluate is None:
            return Status(True, f"{self.name}: nothing to watch")
        return _stamped(self.evaluate(snapshot), self.category)


def _stamped(status: Status, category: Category) -> Status:
    if status.done or status.category is not None:
        return status
    return dataclasses.replace(status, category=category)


def combine(statuses: Iterable[Status]) -> Status:
    """Done when all are; otherwise what is pending, the first terminal state, the category of the first that is
    terminal (else of the first pending), and the pending ones' persisting states."""
    statuses = list(statuses)
    pending = [s for s in statuses if not s.done]
    if not pending:
        return Status(True, "; ".join(s.observed for s in statuses))
    first = next((s for s in pending if s.terminal), pending[0])
    return Status(False, " | ".join(s.observed for s in pending), first.terminal, first.category,
                  [p for s in pending for p in s.persisting])


def all_of(*checks: Check | None, name: str | None = None) -> Check:
    """One check of several: their sources (each listed once), their states, then their probes."""
    parts = [c for c in checks if c is not None]
    if not parts:
        raise ValueError("all_of needs at least one check")
    watched = [c for c in parts if c.evaluate is not None]

    def evaluate(snapshot: Snapshot) -> Status:
        return combine(c.status(snapshot) for c in watched)

    probes = tuple(_stamped_probe(p, c.category) for c in parts for p in c.probes)
    return Check(name or "; ".join(c.name for c in parts), parts[0].category,
                 tuple(dict.fromkeys(s for c in parts for s in c.sources)), evaluate if watched else None, probes)


def while_running(check: Check, prerequisite: Check) -> Check:
    """`check`, watched together with the workloads that do its work (`prerequisite`): done when `check` is; terminal
    at once when the prerequisite meets a terminal state (the autoscaler in a crash loop will not scale anything),
    with the prerequisite's category. Its probes are `check`'s."""
    def evaluate(snapshot: Snapshot) -> Status:
        status = check.status(snapshot)
        if status.done or status.terminal:
            return status
        blocker = prerequisite.status(snapshot)
        if blocker.terminal:
            return Status(False, f"{status.observed}; {blocker.observed}",
                          f"{check.name} cannot happen: {blocker.terminal}", blocker.category)
        return status

    return Check(check.name, check.category, tuple(dict.fromkeys(check.sources + prerequisite.sources)), evaluate,
                 check.probes)


def _stamped_probe(probe: Probe, category: Category) -> Probe:
    return lambda kube: _stamped(probe(kube), category)


def _deleted(snap: Snapshot, api_version: str, kind: str, name: str, namespace: str | None) -> Status | None:
    """Terminal when the awaited object was seen during this wait and is gone now: it will not become ready."""
    if snap.get(api_version, kind, name, namespace) is not None or not snap.was_deleted(api_version, kind, name,
                                                                                          namespace):
        return None
    text = f"{kind.lower()} {namespace + '/' if namespace else ''}{name} was deleted while it was awaited"
    return Status(False, text, text)


def split_ref(ref: str) -> tuple[str | None, str]:
    """'NS/NAME' -> (NS, NAME); 'NAME' -> (None, NAME)."""
    ns, _, name = ref.rpartition("/")
    return (ns or None), name


def _namespaced_sources(api_version: str, kind: str, refs: Iterable[str]) -> tuple[Source, ...]:
    return tuple(dict.fromkeys(Source(api_version, kind, split_ref(r)[0]) for r in refs))


# -- builders -----------------------------------------------------------------------------------------------------------
def namespaces(names: Iterable[str], name: str = "namespaces") -> Check:
    names = list(names)

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for ns in names:
            obj = snap.get("v1", "Namespace", ns)
            phase = (obj.get("status") or {}).get("phase", "Active") if obj else None
            statuses.append(Status(phase == "Active", f"namespace {ns} {'absent' if obj is None else 'is ' + phase}"))
        return combine(statuses)

    return Check(name, Category.NOT_READY, (Source("v1", "Namespace"),), evaluate)


def crds(specs: Iterable[dict], *, absent_is_terminal: bool = False, name: str = "CRDs") -> Check:
    """specs: inventory CRD entries ({name, versions}). On an installed stack an absent CRD will not appear by
    waiting: `absent_is_terminal` fails at once then."""
    wanted = [(c["name"], c.get("versions")) for c in specs]

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for crd_name, versions in wanted:
            obj = snap.get(CRD_API, CRD_KIND, crd_name)
            status = _deleted(snap, CRD_API, CRD_KIND, crd_name, None) or readiness.crd_status(obj, crd_name, versions)
            if obj is None and absent_is_terminal:
                status = dataclasses.replace(status, terminal=status.observed)
            statuses.append(status)
        return combine(statuses) if statuses else Status(True, "no CRDs expected")

    return Check(name, Category.CRD, (Source(CRD_API, CRD_KIND),), evaluate)


def _workload_sources(refs: list[WorkloadRef], pods: bool) -> tuple[Source, ...]:
    sources: list[Source] = []
    for ns in dict.fromkeys(r.namespace for r in refs):
        kinds = {r.kind for r in refs if r.namespace == ns}
        sources += [Source("apps/v1", k, ns) for k in ("Deployment", "DaemonSet") if k in kinds]
        if pods:
            sources.append(Source("v1", "Pod", ns))
    return tuple(sources)


def workloads(refs: Iterable[WorkloadRef], *, absent_is_terminal: bool = False, name: str = "workloads") -> Check:
    """Deployments and DaemonSets Available, all replicas Ready at the current generation; terminal on crash loops of
    their pods and on image pulls that persist through the kubelet's back-off (categorised by the pods' state). Once
    the stack is installed (or verified as it is, --install never) nothing creates a missing workload:
    `absent_is_terminal` fails at once then."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for r in refs:
            obj = snap.get("apps/v1", r.kind, r.name, r.namespace)
            pods = [p for p in snap.items("v1", "Pod", r.namespace) if obj and readiness.selects(obj, p)]
            fn = readiness.deployment_status if r.kind == "Deployment" else readiness.daemonset_status
            status = (_deleted(snap, "apps/v1", r.kind, r.name, r.namespace)
                      or fn(obj, pods, f"{r.namespace}/{r.name}", r.min_replicas))
            if obj is None and absent_is_terminal:
                status = dataclasses.replace(status, terminal=status.observed)
            statuses.append(status)
        return combine(statuses) if statuses else Status(True, "no workloads expected")

    return Check(name, Category.NOT_READY, _workload_sources(refs, pods=True), evaluate)


def deployed(refs: Iterable[WorkloadRef], name: str = "deployed") -> Check:
    """The workloads exist, and each Deployment asks for at least the replicas the profile expects (spec only, not
    readiness). On an installed stack what fails this stays failed: nothing in the stack creates its own controllers
    or scales them back up, so a check that needs them may fail at once (stack/blocking.py)."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for r in refs:
            obj = snap.get("apps/v1", r.kind, r.name, r.namespace)
            ref = f"{r.kind.lower()} {r.namespace}/{r.name}"
            want = int(((obj or {}).get("spec") or {}).get("replicas", 1))
            if obj is None:
                statuses.append(Status(False, f"{ref} absent", f"{ref} absent"))
            elif r.kind == "Deployment" and want < r.min_replicas:
                text = f"{ref} scaled to {want} replica(s), the profile expects at least {r.min_replicas}"
                statuses.append(Status(False, text, text))
            else:
                statuses.append(Status(True, f"{ref} deployed"))
        return combine(statuses) if statuses else Status(True, "no workloads expected")

    return Check(name, Category.NOT_READY, _workload_sources(refs, pods=False), evaluate)


def endpoints(refs: Iterable[str], *, category: Category = Category.WEBHOOK_TLS, name: str = "endpoints") -> Check:
    """refs: NS/NAME of Services whose Endpoints must have a ready address (the profile gates webhook Services)."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for ref in refs:
            ns, svc = split_ref(ref)
            statuses.append(readiness.endpoints_status(snap.get("v1", "Endpoints", svc, ns), ref))
        return combine(statuses) if statuses else Status(True, "no endpoints expected")

    return Check(name, category, _namespaced_sources("v1", "Endpoints", refs), evaluate)


def webhook_ca_bundles(specs: Iterable[tuple[str | None, str]], name: str = "webhook CA bundles") -> Check:
    """specs: (kind or None for either kind, configuration name); each must exist with a valid PEM caBundle."""
    specs = list(specs)
    kinds = tuple(k for k in WEBHOOK_KINDS if any(kind in (None, k) for kind, _ in specs))

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for kind, cfg_name in specs:
            found = [(k, snap.get(ADMISSION_API, k, cfg_name)) for k in WEBHOOK_KINDS if kind in (None, k)]
            found = [(k, c) for k, c in found if c is not None]
            if not found:
                statuses.append(Status(False, f"{kind or 'webhook configuration'} {cfg_name} absent"))
            statuses += [readiness.webhook_config_status(c, f"{k} {cfg_name}") for k, c in found]
        return combine(statuses) if statuses else Status(True, "no webhook configurations expected")

    return Check(name, Category.WEBHOOK_TLS, tuple(Source(ADMISSION_API, k) for k in kinds), evaluate)


def webhooks_admit(names: Iterable[str], profile: Profile) -> Check | None:
    """The named webhook configurations can admit: caBundle valid and the Endpoints of their Services (from the
    inventory) non-empty. None when no name is given."""
    names = list(names)
    if not names:
        return None
    services = [w["service"] for _, w in profile.inventory("webhooks") if w["name"] in names and w.get("service")]
    return all_of(webhook_ca_bundles([(None, n) for n in names]), endpoints(dict.fromkeys(services)) if services else None,
                  name=f"webhooks {', '.join(names)}")


def certificates(refs: Iterable[str], name: str = "certificates") -> Check:
    """refs: NS/NAME of cert-manager Certificates that must be Ready at their current generation."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        statuses = []
        for ref in refs:
            ns, cert = split_ref(ref)
            statuses.append(_deleted(snap, CM_API, "Certificate", cert, ns)
                            or readiness.certificate_status(snap.get(CM_API, "Certificate", cert, ns), ref))
        return combine(statuses)

    return Check(name, Category.CERTIFICATE, _namespaced_sources(CM_API, "Certificate", refs), evaluate)


def issuers(kind: str, refs: Iterable[str], name: str | None = None) -> Check:
    """refs: NS/NAME of cert-manager Issuers (or names of ClusterIssuers) that must be Ready."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        return combine(readiness.issuer_status(snap.get(CM_API, kind, split_ref(r)[1], split_ref(r)[0]), kind, r)
                       for r in refs)

    return Check(name or f"{kind}s Ready", Category.CERTIFICATE, _namespaced_sources(CM_API, kind, refs), evaluate)


def inference_service(namespace: str, name: str, *, pods: bool = True) -> Check:
    """The InferenceService Ready, PredictorReady and IngressReady with a URL; terminal when it is deleted and (with
    `pods`, one more source) when the pods of its namespace cannot pull or crash in a loop."""
    ref = f"{namespace}/{name}"

    def evaluate(snap: Snapshot) -> Status:
        return _deleted(snap, ISVC_API, ISVC_KIND, name, namespace) or readiness.inference_service_status(
            snap.get(ISVC_API, ISVC_KIND, name, namespace), snap.items("v1", "Pod", namespace) if pods else [], ref)

    sources = (Source(ISVC_API, ISVC_KIND, namespace, field_selector=f"metadata.name={name}"),)
    return Check(f"inferenceservice {ref} Ready", Category.PREDICT,
                 sources + ((Source("v1", "Pod", namespace),) if pods else ()), evaluate)


def absent(refs: Iterable[tuple[str, str, str]], name: str = "deleted") -> Check:
    """refs: (apiVersion, kind, name) of cluster-scoped objects that must be gone."""
    refs = list(refs)

    def evaluate(snap: Snapshot) -> Status:
        left = [f"{kind.lower()} {n}" for api, kind, n in refs if snap.get(api, kind, n) is not None]
        return Status(not left, "still present: " + ", ".join(left) if left else "all gone")

    return Check(name, Category.NOT_READY, tuple(dict.fromkeys(Source(api, kind) for api, kind, _ in refs)), evaluate)


def pods_scaled(namespace: str, label_selector: str, *, at_least: int | None = None, at_most: int | None = None,
                name: str = "replicas") -> Check:
    """At least `at_least` Ready Pods with these labels (not terminating), or at most `at_most` Pods left at all
    (terminating ones count until they are gone): what an autoscaler's scaling out or in leaves."""
    def evaluate(snap: Snapshot) -> Status:
        pods = snap.items("v1", "Pod", namespace)
        ready = [p for p in pods if readiness.condition_true(p, "Ready") and not p["metadata"].get("deletionTimestamp")]
        seen = f"{len(pods)} pod(s), {len(ready)} Ready: {', '.join(sorted(p['metadata']['name'] for p in pods))}"
        done = (at_least is None or len(ready) >= at_least) and (at_most is None or len(pods) <= at_most)
        return Status(done, seen if pods else "no pod left")

    return Check(name, Category.AUTOSCALING, (Source("v1", "Pod", namespace, label_selector),), evaluate)


# -- admission probes ---------------------------------------------------------------------------------------------------
def admission_probe(probe: dict, namespace: str) -> Check:
    """The way `cmctl check api` proves cert-manager, for any webhook: a dry-run create of `admit` is admitted and one
    of `deny` is denied with a message matching `deny_pattern`. A known install race (connection refused, no
    endpoints, CA not injected or not trusted yet, kind not served yet) and an admitted invalid object (a webhook
    with failurePolicy Ignore that is not serving yet) are worth another try; any other refusal is terminal."""
    webhook, pattern = probe["webhook"], probe["deny_pattern"]

    def prepared(kube: Kube, template: dict) -> dict:
        obj = copy.deepcopy(template)
        if kube.resource(obj["apiVersion"], obj["kind"]).namespaced:
            obj.setdefault("metadata", {})["namespace"] = namespace
        return obj

    def refused(text: str, error: Exception) -> Status:
        race = race_signature(error)
        return Status(False, f"{text} ({race})") if race else Status(False, text, text)

    def run(kube: Kube) -> Status:
        from stack.kube import Forbidden, KubeError   # noqa: PLC0415 - stack.kube is only needed when a probe runs
        admit_kind, deny_kind = probe["admit"]["kind"], probe["deny"]["kind"]
        try:
            kube.create(prepared(kube, probe["admit"]), dry_run=True)
        except Forbidden:
            raise        # the authorizer refused the suite, not the webhook the object: a permission failure
        except KubeError as e:
            return refused(f"webhook {webhook} is not admitting a valid {admit_kind}: {e.message}", e)
        try:
            kube.create(prepared(kube, probe["deny"]), dry_run=True)
        except Forbidden:
            raise
        except KubeError as e:
            if re.search(pattern, e.message or str(e)):
                return Status(True, f"webhook {webhook} admits a valid {admit_kind} and denies an invalid "
                                    f"{deny_kind}: {e.message or e}")
            return refused(f"an invalid {deny_kind} was refused, but not by webhook {webhook}: {e.message}", e)
        return Status(False, f"webhook {webhook} admitted an invalid {deny_kind} (expected a denial matching "
                             f"/{pattern}/)")

    return Check(f"webhook {webhook} admitting", Category.WEBHOOK_TLS, probes=(run,))
