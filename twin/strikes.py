"""How each twin fault strikes a running twin, how it is undone, and how the undo is checked.

One entry per fault kind of twin/faults.py (a self-test keeps the two lists equal). A fault strikes the installed,
healthy stack, as something breaks a verified cluster; the twin writes its faults file first, so the stand-ins and
model Pods that read it (cert-stuck, isvc-stuck, predict-wrong, ...) need nothing more here. Undoing a fault puts the
cluster back as the twin handed it over, so one twin can serve many fault runs (tests/twinruns.py); `leftovers` says
what of a kind is still in the cluster, whatever fault struck it.

    strike(twin, fault)   -> state the undo needs (what the strike replaced)
    undo(twin, fault, state)
    leftovers(twin)       -> ["what is still broken", ...]
"""
from __future__ import annotations

import copy
import datetime
import fnmatch
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Callable

from twin import kwok
from twin.faults import Fault
from twin.waits import wait_object

log = logging.getLogger("twin.strikes")

ADMISSION = "admissionregistration.k8s.io/v1"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
CRD_API = "apiextensions.k8s.io/v1"
RBAC_API = "rbac.authorization.k8s.io/v1"
SECRET_READER = "twin-fault-every-serviceaccount-reads-secrets"
KNATIVE_WEBHOOK = ("knative-serving", "webhook", "webhook-certs", "validation.webhook.serving.knative.dev")
ROLLOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Strike:
    """What a fault kind does to a running twin. `strike` returns the state `undo` needs; `leftovers` looks at the
    cluster (not at the fault) and says what of this kind is still there."""
    strike: Callable[[Any, Fault], Any] = lambda twin, fault: None
    undo: Callable[[Any, Fault, Any], None] = lambda twin, fault, state: None
    leftovers: Callable[[Any], list[str]] | None = None


# -- the pods of a Deployment: KWOK fault stages (crashloop, imagepull) -----------------------------------------------

def _stage_prefix(fault: Fault) -> str:
    return f"twin-fault-{fault.kind}-{fault.namespace}-{fault.name}"


def _deployment_pods(twin, fault: Fault) -> tuple[dict | None, str]:
    dep = twin.admin.get("apps/v1", "Deployment", fault.name, fault.namespace)
    if dep is None:
        return None, ""
    labels = dep["spec"]["selector"].get("matchLabels") or {}
    return dep, ",".join(f"{k}={v}" for k, v in labels.items())


def _strike_pods(twin, fault: Fault) -> None:
    dep, selector = _deployment_pods(twin, fault)
    if dep is None:
        return
    ns, name = fault.namespace, fault.name
    labels = dep["spec"]["selector"].get("matchLabels") or {}
    container = dep["spec"]["template"]["spec"]["containers"][0]["name"]
    if fault.kind == "crashloop":
        twin.admin.create(kwok.crashloop_stage(_stage_prefix(fault), labels, container))
        # KWOK plays its Stages on a Pod's changes: mark the running Pods so the new Stage meets them now.
        for pod in twin.admin.list("v1", "Pod", ns, label_selector=selector)[0]:
            twin.admin.patch("v1", "Pod", pod["metadata"]["name"], ns,
                             {"metadata": {"annotations": {kwok.FAULT_LABEL: fault.kind}}})
    else:
        for stage in kwok.imagepull_stages(_stage_prefix(fault), labels, container):
            twin.admin.create(stage)
        # Its Pods are replaced, as after a restart or a reschedule: the new ones cannot pull.
        _replace_pods(twin, ns, selector)
    # The stack is handed over broken, as a verified cluster would be found: the Deployment's status says so
    # before the twin is (a check looking at once must not see the Ready status of the replaced Pods).
    wait_object(twin.admin, "apps/v1", "Deployment", name, ns,
                lambda o: o is not None and int((o.get("status") or {}).get("readyReplicas") or 0) <
                int((o.get("spec") or {}).get("replicas", 1)), 60.0,
                f"deployment {ns}/{name} not Ready after the {fault.kind} fault")


def _undo_pods(twin, fault: Fault, _state) -> None:
    """The Stages go, and the Pods they marked are replaced, as `kubectl rollout restart` would after a fix."""
    for stage in twin.admin.list(kwok.API_VERSION, "Stage", label_selector=f"{kwok.FAULT_LABEL}={fault.kind}")[0]:
        if stage["metadata"]["name"].startswith(_stage_prefix(fault)):
            twin.admin.delete(kwok.API_VERSION, "Stage", stage["metadata"]["name"])
    dep, selector = _deployment_pods(twin, fault)
    if dep is not None:
        _replace_pods(twin, fault.namespace, selector)
        twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS)


def _pod_stages_left(kind: str) -> Callable[[Any], list[str]]:
    def left(twin) -> list[str]:
        stages = twin.admin.list(kwok.API_VERSION, "Stage", label_selector=f"{kwok.FAULT_LABEL}={kind}")[0]
        return [f"KWOK Stage {s['metadata']['name']} ({kind}) is still there" for s in stages]
    return left


def _replace_pods(twin, namespace: str, selector: str) -> None:
    for pod in twin.admin.list("v1", "Pod", namespace, label_selector=selector)[0]:
        twin.admin.delete("v1", "Pod", pod["metadata"]["name"], namespace)


# -- scaled-down ----------------------------------------------------------------------------------------------------

def _strike_scale(twin, fault: Fault) -> int | None:
    """`kubectl scale --replicas=0`: the ReplicaSet controller deletes the Pods. Handed over once they are gone, as
    such a cluster is found. Returns the replicas to scale back to."""
    dep = twin.admin.get("apps/v1", "Deployment", fault.name, fault.namespace)
    if dep is None:
        return None
    twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {"spec": {"replicas": 0}},
                     subresource="scale")
    wait_object(twin.admin, "apps/v1", "Deployment", fault.name, fault.namespace,
                lambda o: o is not None and not (o.get("status") or {}).get("replicas"), ROLLOUT_SECONDS,
                f"deployment {fault.target} scaled to 0")
    return int((dep.get("spec") or {}).get("replicas", 1))


def _undo_scale(twin, fault: Fault, replicas: int | None) -> None:
    if replicas is None:
        return
    twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {"spec": {"replicas": replicas}},
                     subresource="scale")
    twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS)


def _scaled_down_left(twin) -> list[str]:
    out = []
    for _, item in twin.profile.inventory("deployments"):
        dep = twin.admin.get("apps/v1", "Deployment", item["name"], item["namespace"])
        if dep is not None and int((dep.get("spec") or {}).get("replicas", 1)) < item.get("replicas", 1):
            out.append(f"deployment {item['namespace']}/{item['name']} is scaled to {dep['spec'].get('replicas')}")
    return out


# -- crd-missing ----------------------------------------------------------------------------------------------------

def _strike_crd(twin, fault: Fault) -> dict | None:
    """The CRD as installed (to put back), then the reaper: deleted now and whenever something creates it again."""
    saved = twin.admin.get(CRD_API, "CustomResourceDefinition", fault.target)
    twin.start_crd_reaper()
    return saved


def _undo_crd(twin, fault: Fault, saved: dict | None) -> None:
    if not twin.fault_set.has("crd-missing"):
        twin.stop_crd_reaper()
    if saved is None:
        return
    wait_object(twin.admin, CRD_API, "CustomResourceDefinition", fault.target, None, lambda o: o is None, 60.0,
                f"CRD {fault.target} deleted")
    body = {k: v for k, v in saved.items() if k != "status"}
    body["metadata"] = {k: v for k, v in saved["metadata"].items()
                        if k in ("name", "labels", "annotations")}
    twin.admin.create(body)
    wait_object(twin.admin, CRD_API, "CustomResourceDefinition", fault.target, None,
                lambda o: any(c.get("type") == "Established" and c.get("status") == "True"
                              for c in ((o or {}).get("status") or {}).get("conditions") or []),
                60.0, f"CRD {fault.target} Established again")


def _crds_left(twin) -> list[str]:
    out = ["the crd-missing reaper still runs"] if twin.crd_reaper_running() else []
    for _, crd in twin.profile.inventory("crds"):
        obj = twin.admin.get(CRD_API, "CustomResourceDefinition", crd["name"])
        if obj is None:
            out.append(f"CRD {crd['name']} is missing")
    return out


# -- cabundle-invalid -------------------------------------------------------------------------------------------------

def _strike_ca_bundle(twin, fault: Fault) -> dict[str, list[dict]]:
    """Another CA in the configuration's caBundle (its keeper, cainjector or the component, leaves it there while
    the fault is on: twin/standins/selfca.py, certmanager.py). Returns the webhooks as they were."""
    from twin import pki
    wrong = pki.b64(pki.stranger_ca().cert_pem)
    saved = {}
    for kind in WEBHOOK_KINDS:
        obj = twin.admin.get(ADMISSION, kind, fault.target)
        if obj is None:
            continue
        saved[kind] = copy.deepcopy(obj.get("webhooks") or [])
        for webhook in obj.get("webhooks") or []:
            webhook.setdefault("clientConfig", {})["caBundle"] = wrong
        twin.admin.patch(obj["apiVersion"], kind, fault.target, None, {"webhooks": obj["webhooks"]})
    return saved


def _undo_ca_bundle(twin, fault: Fault, saved: dict[str, list[dict]]) -> None:
    """The caBundles as they were (the keepers, with the fault off, agree and leave them)."""
    for kind, webhooks in saved.items():
        obj = twin.admin.get(ADMISSION, kind, fault.target)
        if obj is None:
            continue
        bundles = {w["name"]: (w.get("clientConfig") or {}).get("caBundle") for w in webhooks}
        for webhook in obj.get("webhooks") or []:
            if bundles.get(webhook["name"]):
                webhook.setdefault("clientConfig", {})["caBundle"] = bundles[webhook["name"]]
        twin.admin.patch(obj["apiVersion"], kind, fault.target, None, {"webhooks": obj["webhooks"]})


def webhook_tls_problems(twin) -> list[str]:
    """Each webhook of the profile's configurations that calls a Service: its caBundle must verify the certificate
    the Service's endpoints serve for `<service>.<namespace>.svc`, as the API server verifies it. An endpoint that
    refuses the connection says nothing about the caBundle (its workload's readiness is looked at elsewhere)."""
    out = []
    for _, item in twin.profile.inventory("webhooks"):
        obj = twin.admin.get(ADMISSION, item["kind"], item["name"])
        if obj is None:
            out.append(f"{item['kind']} {item['name']} is missing")
            continue
        for webhook in obj.get("webhooks") or []:
            problem = _webhook_tls_problem(twin, webhook.get("clientConfig") or {})
            if problem:
                out.append(f"{item['kind']} {item['name']} webhook {webhook['name']}: {problem}")
    return out


def _webhook_tls_problem(twin, client: dict) -> str | None:
    service = client.get("service")
    if not service:
        return None
    from twin import pki
    bundle = pki.unb64(client.get("caBundle"))
    if not bundle:
        return "no caBundle"
    try:
        ctx = ssl.create_default_context(cadata=bundle.decode(errors="replace"))
    except (ssl.SSLError, ValueError) as e:
        return f"its caBundle is not a CA: {e}"
    for address in _service_endpoints(twin, service["namespace"], service["name"], int(service.get("port") or 443)):
        try:
            with twin.netns.create_connection(address, timeout=5.0) as sock, \
                    ctx.wrap_socket(sock, server_hostname=f"{service['name']}.{service['namespace']}.svc"):
                return None
        except ssl.SSLError as e:
            return f"TLS to {address[0]}:{address[1]} does not verify with its caBundle: {e}"
        except OSError:
            continue
    return None


def _service_endpoints(twin, namespace: str, name: str, port: int) -> list[tuple[str, int]]:
    """The ready endpoints of the Service's port (pod IP, target port), as the API server picks one to call."""
    svc = twin.admin.get("v1", "Service", name, namespace)
    if svc is None:
        return []
    port_name = next((p.get("name") or "" for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
    slices = twin.admin.list("discovery.k8s.io/v1", "EndpointSlice", namespace,
                             label_selector=f"kubernetes.io/service-name={name}")[0]
    out = []
    for eps in slices:     # a slice's ports carry the Service ports' names ("" for an unnamed one)
        target = next((p.get("port") for p in eps.get("ports") or [] if (p.get("name") or "") == port_name), None)
        out += [(endpoint["addresses"][0], int(target)) for endpoint in eps.get("endpoints") or []
                if target and (endpoint.get("conditions") or {}).get("ready", True) and endpoint.get("addresses")]
    return out


# -- default-sa-reads-secrets -----------------------------------------------------------------------------------------

def _strike_secret_reader(twin, _fault: Fault) -> None:
    """The leak AC-RBAC-DEFAULT-SA looks for: a cluster-wide binding of a Secret reader to every ServiceAccount
    (the real RBAC authorizer then answers the suite's SubjectAccessReviews with it)."""
    twin.admin.create({"apiVersion": RBAC_API, "kind": "ClusterRole", "metadata": {"name": SECRET_READER},
                       "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]})
    twin.admin.create({"apiVersion": RBAC_API, "kind": "ClusterRoleBinding", "metadata": {"name": SECRET_READER},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                   "name": SECRET_READER},
                       "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                     "name": "system:serviceaccounts"}]})


def _undo_secret_reader(twin, _fault: Fault, _state) -> None:
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        twin.admin.delete(RBAC_API, kind, SECRET_READER)


def _secret_reader_left(twin) -> list[str]:
    return [f"{kind} {SECRET_READER} is still there" for kind in ("ClusterRoleBinding", "ClusterRole")
            if twin.admin.get(RBAC_API, kind, SECRET_READER) is not None]


# -- cert-expiring ----------------------------------------------------------------------------------------------------

def _strike_expiring_ca(twin, _fault: Fault) -> dict:
    """Knative's webhook CA is replaced by one that expires in 6 hours and its webhook restarted; with the fault on,
    the stand-in keeps it instead of renewing it (twin/standins/knative_webhook.py). The twin hands over once the
    webhook serves and its caBundle is the short-lived CA, as a cluster whose rotation stopped would be found.
    Returns the Secret's data as it was."""
    from twin import pki
    from twin.standins import selfca
    ns, service, secret, _ = KNATIVE_WEBHOOK
    saved = dict((twin.admin.get("v1", "Secret", secret, ns) or {}).get("data") or {})
    ca = selfca.new_ca(f"{service}.{ns}.svc", datetime.timedelta(hours=6))
    _serve_knative_webhook_ca(twin, {"ca-cert.pem": pki.b64(ca.cert_pem), "ca-key.pem": pki.b64(ca.key_pem)},
                              "the 6-hour CA")
    return saved


def _undo_expiring_ca(twin, _fault: Fault, saved: dict) -> None:
    """The CA as it was, served again (a restart, as knative.dev/pkg's webhook would after a fixed rotation)."""
    if saved.get("ca-cert.pem"):
        _serve_knative_webhook_ca(twin, saved, "its CA again")


def _serve_knative_webhook_ca(twin, data: dict, what: str) -> None:
    ns, service, secret, configuration = KNATIVE_WEBHOOK
    twin.admin.patch("v1", "Secret", secret, ns, {"data": data})
    for pod in twin.admin.list("v1", "Pod", ns, label_selector="app=webhook")[0]:
        twin.admin.delete("v1", "Pod", pod["metadata"]["name"], ns)
    bundle = data["ca-cert.pem"]
    wait_object(twin.admin, ADMISSION, "ValidatingWebhookConfiguration", configuration, None,
                lambda o: o is not None and all((w.get("clientConfig") or {}).get("caBundle") == bundle
                                                for w in o.get("webhooks") or []),
                60.0, f"Knative's webhook serving {what}")
    twin.wait_deployment_ready(ns, service, 60.0)


def _expiring_ca_left(twin) -> list[str]:
    from twin import pki
    ns, _, secret, _ = KNATIVE_WEBHOOK
    data = (twin.admin.get("v1", "Secret", secret, ns) or {}).get("data") or {}
    certs = pki.load_certs(pki.unb64(data.get("ca-cert.pem")))
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    return [f"Knative's webhook CA expires at {c.not_valid_after_utc:%Y-%m-%dT%H:%MZ}, within a day"
            for c in certs if c.not_valid_after_utc < soon]


# -- mtls-permissive --------------------------------------------------------------------------------------------------

def _strike_permissive(twin, _fault: Fault) -> str | None:
    """The mesh-wide PeerAuthentication turned to PERMISSIVE, as someone relaxing it for a migration and
    forgetting it leaves it: the sidecars then take plaintext from outside the mesh. Returns the mode before."""
    before = twin.mesh_mtls_mode()
    twin.set_mesh_mtls("PERMISSIVE", "twin-fault")
    return before


def _undo_permissive(twin, _fault: Fault, before: str | None) -> None:
    twin.set_mesh_mtls(before, "twin-fault")


def _permissive_left(twin) -> list[str]:
    now, wanted = twin.mesh_mtls_mode(), twin.handed_over_mesh_mtls
    return [] if now == wanted else [f"the mesh-wide PeerAuthentication is {now}, handed over as {wanted}"]


# -- the API faults (the fault proxy in front of the API server) -------------------------------------------------------

def _api_faults_left(twin) -> list[str]:
    faults = twin.api.faults
    return [f"the API fault proxy still {what}" for on, what in
            ((faults.flaky_rate, f"fails {faults.flaky_rate:.0%} of the requests"), (faults.watch_drop, "drops watches"),
             (faults.no_self_subject_review, "hides SelfSubjectReview"))
            if on]


def _set_api_faults(twin, _fault: Fault = None, _state=None) -> None:
    """The proxy's faults follow the active fault set (api-flaky's highest rate, watch-drop, no-selfsubjectreview)."""
    twin.api.faults.flaky_rate = twin.fault_set.rate()
    twin.api.faults.watch_drop = twin.fault_set.has("watch-drop")
    twin.api.faults.no_self_subject_review = twin.fault_set.has("no-selfsubjectreview")


# -- the stack's availability (AC-HA) ---------------------------------------------------------------------------------

HA_FAULT_ANNOTATION = "kstack.io/twin-fault"     # on what an availability fault changed, until it is undone
STALE_HOLDER = "twin-fault-gone-pod_0"           # a holder identity no Pod of any node has


def _strike_one_replica(twin, fault: Fault) -> int | None:
    """`kubectl scale --replicas=1`; handed over once the others are gone. Returns the replicas to scale back to."""
    dep = twin.admin.get("apps/v1", "Deployment", fault.name, fault.namespace)
    if dep is None:
        return None
    before = int((dep.get("spec") or {}).get("replicas", 1))
    twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: f"{fault.kind}, from {before}"}}})
    twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {"spec": {"replicas": 1}},
                     subresource="scale")
    twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS)
    return before


def _undo_one_replica(twin, fault: Fault, replicas: int | None) -> None:
    if replicas is None:
        return
    twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: None}}, "spec": {"replicas": replicas}})
    twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS)


def _strike_one_node(twin, fault: Fault) -> bool:
    """A nodeSelector on one worker's hostname in the Pod template: the rollout puts every replica there."""
    dep = twin.admin.get("apps/v1", "Deployment", fault.name, fault.namespace)
    if dep is None:
        return False
    node = twin.node_names[-1]
    patched = twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: fault.kind}},
        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": node}}}}})
    twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS,
                               generation=int(patched["metadata"].get("generation") or 0))
    return True


def _undo_one_node(twin, fault: Fault, struck: bool) -> None:
    if not struck:
        return
    patched = twin.admin.patch("apps/v1", "Deployment", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: None}},
        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": None}}}}})
    twin.wait_deployment_ready(fault.namespace, fault.name, ROLLOUT_SECONDS,
                               generation=int(patched["metadata"].get("generation") or 0))


def _strike_pdb(twin, fault: Fault) -> dict | None:
    """minAvailable 100% (kubernetes/website configure-pdb.md: "you are requiring zero voluntary evictions"); the
    disruption controller then says disruptionsAllowed 0. Returns the spec to put back."""
    pdb = twin.admin.get("policy/v1", "PodDisruptionBudget", fault.name, fault.namespace)
    if pdb is None:
        return None
    rule = {k: pdb["spec"].get(k) for k in ("minAvailable", "maxUnavailable")}
    twin.admin.patch("policy/v1", "PodDisruptionBudget", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: fault.kind}},
        "spec": {"minAvailable": "100%", "maxUnavailable": None}})
    wait_object(twin.admin, "policy/v1", "PodDisruptionBudget", fault.name, fault.namespace,
                lambda o: o is not None and (o.get("status") or {}).get("disruptionsAllowed") == 0
                and (o.get("status") or {}).get("observedGeneration") == o["metadata"].get("generation"),
                ROLLOUT_SECONDS, f"PodDisruptionBudget {fault.target} allowing no disruption")
    return rule


def _undo_pdb(twin, fault: Fault, rule: dict | None) -> None:
    if rule is None:
        return
    twin.admin.patch("policy/v1", "PodDisruptionBudget", fault.name, fault.namespace, {
        "metadata": {"annotations": {HA_FAULT_ANNOTATION: None}}, "spec": rule})


def _strike_lease(twin, fault: Fault) -> dict | None:
    """Its leader's Pod is gone and its candidates hang (the stand-ins' electors skip it while the fault is in the
    faults file): the Lease names a holder no Pod has, last renewed ten durations ago."""
    lease = twin.admin.get("coordination.k8s.io/v1", "Lease", fault.name, fault.namespace)
    if lease is None:
        return None
    duration = int((lease.get("spec") or {}).get("leaseDurationSeconds") or 60)
    renewed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=10 * duration)
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    twin.admin.patch("coordination.k8s.io/v1", "Lease", fault.name, fault.namespace, {
        "spec": {"holderIdentity": STALE_HOLDER, "renewTime": stamp, "acquireTime": stamp}})
    return lease


def _undo_lease(twin, fault: Fault, lease: dict | None) -> None:
    """As an operator after a hung election: the fault gone from the faults file, `kubectl rollout restart` of the
    workload whose Lease it is (its hung candidates would otherwise find another leader and exit, as client-go's
    leaders do), then a candidate takes the expired Lease."""
    if lease is None:
        return
    for w in twin.profile.ha_workloads():
        if any(ref.namespace == fault.namespace and fnmatch.fnmatchcase(fault.name, ref.name) for ref in w.leases):
            dep = twin.admin.get("apps/v1", "Deployment", w.name, w.namespace)
            labels = (dep or {}).get("spec", {}).get("selector", {}).get("matchLabels") or {}
            if labels:
                _replace_pods(twin, w.namespace, ",".join(f"{k}={v}" for k, v in labels.items()))
                twin.wait_deployment_ready(w.namespace, w.name, ROLLOUT_SECONDS)
    wait_object(twin.admin, "coordination.k8s.io/v1", "Lease", fault.name, fault.namespace,
                lambda o: o is not None and (o.get("spec") or {}).get("holderIdentity") not in (None, "", STALE_HOLDER),
                ROLLOUT_SECONDS, f"Lease {fault.target} taken over by a candidate")


def _availability_left(twin) -> list[str]:
    out = []
    for kind, api in (("Deployment", "apps/v1"), ("PodDisruptionBudget", "policy/v1")):
        for obj in twin.admin.list(api, kind)[0]:
            mark = (obj["metadata"].get("annotations") or {}).get(HA_FAULT_ANNOTATION)
            if mark:
                out.append(f"{kind} {obj['metadata']['namespace']}/{obj['metadata']['name']} still carries {mark}")
    for lease in twin.admin.list("coordination.k8s.io/v1", "Lease")[0]:
        if (lease.get("spec") or {}).get("holderIdentity") == STALE_HOLDER:
            out.append(f"Lease {lease['metadata']['namespace']}/{lease['metadata']['name']} is held by {STALE_HOLDER}")
    return out


# -- the registry -----------------------------------------------------------------------------------------------------

STRIKES: dict[str, Strike] = {
    "crashloop": Strike(_strike_pods, _undo_pods, _pod_stages_left("crashloop")),
    "imagepull": Strike(_strike_pods, _undo_pods, _pod_stages_left("imagepull")),
    "scaled-down": Strike(_strike_scale, _undo_scale, _scaled_down_left),
    "crd-missing": Strike(_strike_crd, _undo_crd, _crds_left),
    "cabundle-invalid": Strike(_strike_ca_bundle, _undo_ca_bundle, webhook_tls_problems),
    # The stand-ins and the model Pods read these from the faults file: nothing else strikes or undoes them.
    "cert-stuck": Strike(),
    "cert-wrong-san": Strike(),
    "isvc-stuck": Strike(),
    "predict-wrong": Strike(),     # also the S3 URI handed over: the store's wrong model (twin.s3_settings)
    "api-flaky": Strike(_set_api_faults, _set_api_faults, _api_faults_left),
    "watch-drop": Strike(_set_api_faults, _set_api_faults, _api_faults_left),
    "no-selfsubjectreview": Strike(_set_api_faults, _set_api_faults, _api_faults_left),
    "default-sa-reads-secrets": Strike(_strike_secret_reader, _undo_secret_reader, _secret_reader_left),
    "cert-expiring": Strike(_strike_expiring_ca, _undo_expiring_ca, _expiring_ca_left),
    "metrics-not-counting": Strike(),
    "autoscaler-missing": Strike(),
    "scale-to-zero-stuck": Strike(),
    "mtls-permissive": Strike(_strike_permissive, _undo_permissive, _permissive_left),
    "single-replica": Strike(_strike_one_replica, _undo_one_replica, _availability_left),
    "one-node": Strike(_strike_one_node, _undo_one_node, _availability_left),
    "pdb-blocks": Strike(_strike_pdb, _undo_pdb, _availability_left),
    "lease-stale": Strike(_strike_lease, _undo_lease, _availability_left),
    # The S3 settings handed over (twin.s3_settings) follow the active faults; nothing strikes the store.
    "s3-wrong-credentials": Strike(),
    "s3-no-bucket": Strike(),
    "s3-wrong-key": Strike(),
}


def leftovers(twin) -> list[str]:
    """What any fault left in the twin: an active fault in its faults file (what the stand-ins, model Pods and the
    S3 settings handed over follow), then each kind's own look at the cluster, once."""
    from twin.faults import read_fault_file
    out = [f"the faults file still names {spec}" for spec in read_fault_file(twin.faults_file)]
    checks = [s.leftovers for s in STRIKES.values() if s.leftovers is not None]
    for check in dict.fromkeys(checks):
        out += check(twin)
    return list(dict.fromkeys(out))
