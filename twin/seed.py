"""The Kubernetes objects a component's install creates, synthesised from the profile inventory.

`inventory_objects(profile, component)` stands in for `helm install` / the release manifests (the twin's install
backend uses it), `seed(store, profile, faults)` applies every component for a preinstalled twin, and
`cluster_objects(profile)` is what a fresh kind cluster already holds (namespaces, CoreDNS, kube-proxy, kindnet).
The objects look like the real ones: no twin-only labels or annotations.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Iterable

from twin import pki
from twin.faults import Fault, FaultSet

log = logging.getLogger(__name__)

NODE_NAME = "twin-control-plane"
# The one mark a twin carries on purpose: any client (the suite's existing-cluster mode included) can tell that this
# cluster is simulated, so a twin run is never reported as evidence about a real cluster.
SIMULATED_LABEL = "kstack.io/simulated"
NODE_LABELS = {
    "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
    "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
    "node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/exclude-from-external-load-balancers": "",
}
PLACEHOLDER_CA = "Cg=="
INJECT_CA_FROM = "cert-manager.io/inject-ca-from"
INJECT_CA_FROM_SECRET = "cert-manager.io/inject-ca-from-secret"

# the order `helm install` (and a sensible kubectl apply) creates things in
_KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole",
               "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Deployment", "Issuer",
               "ClusterIssuer", "Certificate", "ClusterServingRuntime", "Gateway", "MutatingWebhookConfiguration",
               "ValidatingWebhookConfiguration"]


def _order(obj: dict) -> int:
    kind = obj.get("kind")
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def strip_v(version: str) -> str:
    return version[1:] if version.startswith("v") else version


def fake_digest(text: str) -> str:
    return hashlib.sha256(("twin-image/" + text).encode()).hexdigest()


def resolve_image(image: str) -> str:
    """An inventory image with `@sha256:*` (a digest the profile cannot pin) gets a deterministic fake digest."""
    if image.endswith("@sha256:*"):
        repo = image[: -len("@sha256:*")]
        return f"{repo}@sha256:{fake_digest(repo)}"
    return image


def image_digest(image: str) -> str:
    """The digest an image resolves to: the pinned one, else deterministic."""
    m = re.search(r"@sha256:([0-9a-f]{64})$", image)
    return m.group(1) if m else fake_digest(image)


def image_repo(image: str) -> str:
    """`quay.io/x/y:v1@sha256:..` -> `quay.io/x/y`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    return name


def image_id(image: str) -> str:
    return f"docker-pullable://{image_repo(image)}@sha256:{image_digest(image)}"


def _split_rule(rule: str) -> tuple[str, str, str]:
    parts = rule.split("/", 2)  # the resource may be "*/*" (resources and their subresources)
    if len(parts) != 3:
        raise ValueError(f"webhook rule {rule!r} is not group/version/plural")
    return parts[0], parts[1], parts[2]


def _secret_name_for_service(service: str) -> str:
    return (service[: -len("-service")] if service.endswith("-service") else service) + "-cert"


# ---------------------------------------------------------------------------------------------------------------
# webhook details the inventory does not spell out (paths, selectors), as the real components ship them

def _webhook_path(config_kind: str, webhook: str, rules: list[str]) -> str:
    validating = config_kind == "ValidatingWebhookConfiguration"
    if webhook == "webhook.cert-manager.io":
        return "/validate" if validating else "/mutate"
    if "sidecar-injector.istio.io" in webhook:
        return "/inject"
    if webhook.endswith("validation.istio.io"):
        return "/validate"
    if webhook.startswith("config.webhook."):
        return "/config-validation"
    if webhook.startswith("validation.webhook."):
        return "/resource-validation"
    if webhook.startswith("webhook.") and "knative" in webhook:
        return "/defaulting"
    if webhook.endswith(".pod-mutator"):
        return "/mutate-pods"
    for rule in rules:
        group, version, plural = _split_rule(rule)
        if group and group != "*" and version != "*" and plural != "*":
            verb = "validate" if validating else "mutate"
            singular = plural[:-1] if plural.endswith("s") else plural
            return f"/{verb}-{group.replace('.', '-')}-{version}-{singular}"
    return "/validate" if validating else "/mutate"


def _expr(key, op, values=None) -> dict:
    out = {"key": key, "operator": op}
    if values is not None:
        out["values"] = list(values)
    return out


def _webhook_selectors(webhook: str) -> tuple[dict, dict]:
    """(namespaceSelector, objectSelector) as the real charts/manifests set them."""
    inject, rev, injection = "sidecar.istio.io/inject", "istio.io/rev", "istio-injection"
    table = {
        "rev.namespace.sidecar-injector.istio.io": (
            {"matchExpressions": [_expr(rev, "In", ["default"]), _expr(injection, "DoesNotExist")]},
            {"matchExpressions": [_expr(inject, "NotIn", ["false"])]}),
        "rev.object.sidecar-injector.istio.io": (
            {"matchExpressions": [_expr(rev, "DoesNotExist"), _expr(injection, "DoesNotExist")]},
            {"matchExpressions": [_expr(inject, "NotIn", ["false"]), _expr(rev, "In", ["default"])]}),
        "namespace.sidecar-injector.istio.io": (
            {"matchExpressions": [_expr(injection, "In", ["enabled"])]},
            {"matchExpressions": [_expr(inject, "NotIn", ["false"])]}),
        "object.sidecar-injector.istio.io": (
            {"matchExpressions": [_expr(injection, "DoesNotExist"), _expr(rev, "DoesNotExist")]},
            {"matchExpressions": [_expr(inject, "In", ["true"]), _expr(rev, "DoesNotExist")]}),
        "rev.validation.istio.io": ({}, {"matchExpressions": [_expr(rev, "In", ["default"])]}),
        "inferenceservice.kserve-webhook-server.pod-mutator": (
            {"matchExpressions": [_expr("control-plane", "DoesNotExist")]},
            {"matchExpressions": [_expr("serving.kserve.io/inferenceservice", "Exists")]}),
        "config.webhook.serving.knative.dev": (
            {}, {"matchExpressions": [
                _expr("app.kubernetes.io/name", "In", ["knative-serving"]),
                _expr("app.kubernetes.io/component", "In",
                      ["autoscaler", "controller", "logging", "networking", "observability", "tracing"])]}),
        "config.webhook.istio.networking.internal.knative.dev": (
            {}, {"matchExpressions": [_expr("app.kubernetes.io/name", "In", ["knative-serving"]),
                                      _expr("app.kubernetes.io/component", "In", ["net-istio"])]}),
        "webhook.istio.networking.internal.knative.dev": (
            {}, {"matchExpressions": [_expr("serving.knative.dev/configuration", "Exists")]}),
    }
    if webhook in table:
        return table[webhook]
    if webhook == "webhook.cert-manager.io":
        return ({"matchExpressions": [_expr("cert-manager.io/disable-validation", "NotIn", ["true"])]}, {})
    return {}, {}


def webhook_configuration(comp, entry: dict) -> dict:
    kind, name = entry["kind"], entry["name"]
    names = entry.get("webhooks") or [name]
    rules = entry.get("rules") or []
    svc_ns, _, svc_name = (entry.get("service") or "/").partition("/")
    annotations = {}
    ca_bundle = None
    inject = entry.get("inject_ca_from")
    if inject and inject.startswith("secret:"):
        annotations[INJECT_CA_FROM_SECRET] = inject[len("secret:"):]
    elif inject:
        annotations[INJECT_CA_FROM] = inject
    if entry.get("ca") == "cert-manager":
        ca_bundle = PLACEHOLDER_CA
    elif entry.get("ca") == "self" and not inject and entry.get("service"):
        ca_bundle = pki.b64(pki.component_ca(entry["service"]).cert_pem)
    webhooks = []
    for webhook in names:
        ns_selector, obj_selector = _webhook_selectors(webhook)
        client: dict = {}
        if entry.get("service"):
            client["service"] = {"namespace": svc_ns, "name": svc_name,
                                 "path": _webhook_path(kind, webhook, rules), "port": 443}
        if ca_bundle is not None:
            client["caBundle"] = ca_bundle
        item = {"name": webhook, "admissionReviewVersions": ["v1"], "clientConfig": client,
                "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
                "namespaceSelector": ns_selector, "objectSelector": obj_selector, "timeoutSeconds": 10,
                "rules": []}
        for rule in rules:
            group, version, plural = _split_rule(rule)
            item["rules"].append({"apiGroups": [group], "apiVersions": [version], "resources": [plural],
                                  "operations": ["CREATE", "UPDATE"], "scope": "*"})
        if kind == "MutatingWebhookConfiguration":
            item["reinvocationPolicy"] = "Never"
        webhooks.append(item)
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": meta, "webhooks": webhooks}


# ---------------------------------------------------------------------------------------------------------------
# workloads

_NAMED_PORTS = {"webhook-server": 9443, "https-webhook": 8443, "http-metrics": 9090, "metrics": 9090}


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _compatible(selector: dict, labels: dict, service: str = "", workload: str = "") -> bool:
    """A Service selector meant for this workload: shares a label and contradicts none, or (charts that select on
    app.kubernetes.io/* while the inventory lists `app`) names the same thing without contradicting."""
    shared = [k for k in selector if k in labels]
    if shared:
        return all(labels[k] == selector[k] for k in shared)
    name = selector.get("app.kubernetes.io/name")
    return bool(selector) and (service == workload or (name is not None and name == labels.get("app")))


def _workload(comp, item: dict, kind: str, services: list[dict], version_label: str | None) -> dict:
    ns, name = item["namespace"], item["name"]
    selector = dict(item.get("labels") or {"app": name})
    labels = dict(selector)
    mine = [s for s in services if s["namespace"] == ns
            and _compatible(s.get("selector") or {}, selector, s["name"], name)]
    for svc in mine:
        for k, v in (svc.get("selector") or {}).items():
            labels.setdefault(k, v)
    meta_labels = dict(labels)
    if version_label:
        meta_labels[version_label] = strip_v(comp.version)
        labels[version_label] = strip_v(comp.version)
    containers = []
    for cname, image in item["containers"].items():
        containers.append({"name": cname, "image": resolve_image(image)})
    ports: list[dict] = []
    for svc in mine:
        if not _selects(svc.get("selector") or {}, labels):
            continue
        for port in svc.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str):
                number = _NAMED_PORTS.get(target) or (10250 if target == "https" and "cert-manager" in name
                                                      else 8443 if target == "https" else port.get("port"))
                entry = {"name": target, "containerPort": number, "protocol": "TCP"}
            else:
                entry = {"containerPort": target, "protocol": "TCP"}
                if port.get("name") and len(port["name"]) <= 15:
                    entry["name"] = port["name"]
            if all(p["containerPort"] != entry["containerPort"] for p in ports):
                ports.append(entry)
    if ports and containers:
        containers[0]["ports"] = ports
    pod_spec: dict = {"containers": containers, "serviceAccountName": name}
    if item.get("node_selector"):
        pod_spec["nodeSelector"] = dict(item["node_selector"])
    spec: dict = {"selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": labels}, "spec": pod_spec}}
    if kind == "Deployment":
        spec = {"replicas": item.get("replicas", 1), **spec}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
            "spec": spec}


def _service(item: dict, gateway: dict | None, used_node_ports: set) -> dict:
    ns, name = item["namespace"], item["name"]
    stype = item.get("type")
    if gateway and gateway.get("namespace") == ns and gateway.get("name") == name and not stype:
        stype = "NodePort"
    stype = stype or "ClusterIP"
    ports = []
    for n, port in enumerate(item.get("ports") or []):
        out = {"port": port["port"], "targetPort": port.get("targetPort", port["port"]), "protocol": "TCP"}
        if port.get("name"):
            out = {"name": port["name"], **out}
        if stype in ("NodePort", "LoadBalancer"):
            node_port = port.get("nodePort")
            if not node_port:
                seed = int(hashlib.sha256(f"{ns}/{name}/{n}".encode()).hexdigest(), 16)
                node_port = 30000 + seed % 2768
                while node_port in used_node_ports:
                    node_port = 30000 + (node_port - 29999) % 2768
            used_node_ports.add(node_port)
            out["nodePort"] = node_port
        ports.append(out)
    spec: dict = {"type": stype, "ports": ports}
    if item.get("selector"):
        spec["selector"] = dict(item["selector"])
    if stype in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _crd(comp, item: dict, version_label: str | None) -> dict:
    name = item["name"]
    plural, group = name.split(".", 1)
    kind = item.get("kind") or (plural[:-1] if plural.endswith("s") else plural).capitalize()
    versions = []
    for n, version in enumerate(item["versions"]):
        versions.append({"name": version, "served": True, "storage": n == 0,
                         "schema": {"openAPIV3Schema": {"type": "object",
                                                        "x-kubernetes-preserve-unknown-fields": True}},
                         "subresources": {"status": {}}})
    meta: dict = {"name": name}
    if comp.name == "knative":
        meta["labels"] = {"knative.dev/crd-install": "true", "app.kubernetes.io/name": "knative-serving"}
        if version_label:
            meta["labels"][version_label] = strip_v(comp.version)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta,
            "spec": {"group": group, "scope": item.get("scope", "Namespaced"),
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": kind + "List"},
                     "versions": versions}}


# ---------------------------------------------------------------------------------------------------------------
# per-component extras

def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def _kserve_extras(profile, comp, entries: list[dict]) -> list[dict]:
    objs: list[dict] = []
    version = comp.version
    gateway = profile.gateway or {"namespace": "istio-system", "name": "istio-ingressgateway"}
    iris = profile.iris or {}
    ns = next(iter(comp.inventory.get("namespaces") or ["kserve"]))
    ingress = {
        "ingressGateway": "knative-serving/knative-ingress-gateway",
        "ingressService": f"{gateway['name']}.{gateway['namespace']}.svc.cluster.local",
        "localGateway": "knative-serving/knative-local-gateway",
        "localGatewayService": f"knative-local-gateway.{gateway['namespace']}.svc.cluster.local",
        "ingressDomain": "example.com", "ingressClassName": "istio",
        "domainTemplate": "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}",
        "urlScheme": "http", "disableIstioVirtualHost": False,
    }
    data = {
        "deploy": json.dumps({"defaultDeploymentMode": iris.get("deployment_mode") or "Serverless"}),
        "ingress": json.dumps(ingress, indent=1),
        "storageInitializer": json.dumps({"image": f"kserve/storage-initializer:{version}", "memoryRequest": "100Mi",
                                          "memoryLimit": "1Gi", "cpuRequest": "100m", "cpuLimit": "1"}),
        "credentials": json.dumps({"storageSpecSecretName": "storage-config",
                                   "storageSecretNameAnnotation": "serving.kserve.io/storageSecretName",
                                   "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
                                   "s3": {"s3AccessKeyIDName": "AWS_ACCESS_KEY_ID",
                                          "s3SecretAccessKeyName": "AWS_SECRET_ACCESS_KEY"}}),
    }
    objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inferenceservice-config",
                                                                       "namespace": ns}, "data": data})
    # cert-manager-backed webhook TLS: Issuer selfsigned-issuer + one Certificate per inject-ca-from target
    issuers: set[str] = set()
    certs: dict[str, dict] = {}
    for entry in entries:
        inject = entry.get("inject_ca_from")
        if entry.get("ca") != "cert-manager" or not inject or inject.startswith("secret:") or "/" not in inject:
            continue
        cert_ns, cert_name = inject.split("/", 1)
        svc_ns, _, svc_name = (entry.get("service") or f"{cert_ns}/kserve-webhook-server-service").partition("/")
        if cert_ns not in issuers:
            issuers.add(cert_ns)
            objs.append({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                         "metadata": {"name": "selfsigned-issuer", "namespace": cert_ns},
                         "spec": {"selfSigned": {}}})
        if inject not in certs:
            dns = f"{svc_name}.{svc_ns}.svc"
            certs[inject] = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                             "metadata": {"name": cert_name, "namespace": cert_ns},
                             "spec": {"commonName": dns, "dnsNames": [dns],
                                      "issuerRef": {"kind": "Issuer", "name": "selfsigned-issuer"},
                                      "secretName": _secret_name_for_service(svc_name)}}
    objs.extend(certs.values())
    if _version_tuple(version) < (0, 17) and ns == "kserve":
        objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": "kserve-webhook-server-secret", "namespace": ns}})
    crd_names = {c["name"] for c in comp.inventory.get("crds") or []}
    if "clusterservingruntimes.serving.kserve.io" in crd_names:
        protocols = ["v1"] if _version_tuple(version) <= (0, 11, 0) else ["v1", "v2"]
        objs.append({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
                     "metadata": {"name": "kserve-sklearnserver"},
                     "spec": {"annotations": {"prometheus.kserve.io/port": "8080",
                                              "prometheus.kserve.io/path": "/metrics"},
                              "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True,
                                                         "priority": 1}],
                              "protocolVersions": protocols,
                              "containers": [{"name": "kserve-container",
                                              "image": f"kserve/sklearnserver:{version}",
                                              "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models",
                                                       "--http_port=8080"],
                                              "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                                            "limits": {"cpu": "1", "memory": "2Gi"}}}]}})
    return objs


def _knative_extras(profile, comp, preinstalled: bool, version_label: str | None) -> list[dict]:
    ns = "knative-serving"
    labels = {"app.kubernetes.io/name": "knative-serving", "app.kubernetes.io/component": "controller",
              (version_label or "app.kubernetes.io/version"): strip_v(comp.version)}
    data = {"_example": "################################\n#                              #\n"
                        "#    EXAMPLE CONFIGURATION     #\n#                              #\n"
                        "################################\n\n"
                        "# Default value for domain.\n# Routes having the cluster domain suffix (by default 'svc.cluster.local')\n"
                        "# will not be exposed through Ingress. You can define your own label\n"
                        "# selector to assign that domain suffix to your Route here, or you can set\n"
                        "# the label\n#    \"networking.knative.dev/visibility=cluster-local\"\n"
                        "# to achieve the same effect.  This shows how to make routes having\n"
                        "# the label app=secret only exposed to the local cluster.\nsvc.cluster.local: |\n"
                        "  selector:\n    app: secret\n"}
    if preinstalled:
        data["example.com"] = ""
    objs = [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "config-domain", "namespace": ns, "labels": labels}, "data": data}]
    istio_crds = {c["name"] for _, c in profile.inventory("crds")}
    gateway = profile.gateway or {"namespace": "istio-system", "name": "istio-ingressgateway"}
    selector = {"istio": gateway["name"][len("istio-"):] if gateway["name"].startswith("istio-") else gateway["name"]}
    if "gateways.networking.istio.io" in istio_crds:
        net_labels = {"app.kubernetes.io/name": "knative-serving", "app.kubernetes.io/component": "net-istio",
                      "networking.knative.dev/ingress-provider": "istio",
                      (version_label or "app.kubernetes.io/version"): strip_v(comp.version)}
        objs.append({"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
                     "metadata": {"name": "knative-ingress-gateway", "namespace": ns, "labels": net_labels},
                     "spec": {"selector": selector, "servers": [{"port": {"number": 80, "name": "http",
                                                                          "protocol": "HTTP"}, "hosts": ["*"]}]}})
        objs.append({"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
                     "metadata": {"name": "knative-local-gateway", "namespace": ns, "labels": net_labels},
                     "spec": {"selector": selector, "servers": [{"port": {"number": 8081, "name": "http",
                                                                          "protocol": "HTTP"}, "hosts": ["*"]}]}})
    return objs


def _namespace(comp, name: str, version_label: str | None) -> dict:
    labels: dict = {}
    if comp.name == "knative" and name == "knative-serving":
        labels["app.kubernetes.io/name"] = "knative-serving"
    if version_label and comp.name == "knative":
        labels[version_label] = strip_v(comp.version)
    if comp.name == "kserve" and _version_tuple(comp.version) < (0, 17):
        labels.update({"control-plane": "kserve-controller-manager", "controller-tools.k8s.io": "1.0",
                       "istio-injection": "disabled"})
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


# ---------------------------------------------------------------------------------------------------------------
# public

def inventory_objects(profile, component_name: str, preinstalled: bool = False,
                      faults: Iterable[Fault] | FaultSet = ()) -> list[dict]:
    """The objects installing `component_name` creates, in apply order.

    `preinstalled`: the state after the installer's patches too (Knative's config-domain carries example.com).
    `faults`: crd-missing CRDs are left out.
    """
    comp = profile.components[component_name]
    inv = comp.inventory
    faults = faults if isinstance(faults, FaultSet) else FaultSet(faults)
    missing = faults.targets("crd-missing")
    version_label = comp.version_probe.get("label")
    objs: list[dict] = [_namespace(comp, ns, version_label) for ns in inv.get("namespaces") or []]
    entries = inv.get("webhooks") or []
    for item in inv.get("crds") or []:
        if item["name"] in missing:
            continue
        crd = _crd(comp, item, version_label)
        if item["name"] == "inferenceservices.serving.kserve.io":
            inject = next((e for e in entries if e.get("ca") == "cert-manager" and e.get("inject_ca_from")
                           and not e["inject_ca_from"].startswith("secret:")), None)
            if inject:
                svc_ns, _, svc_name = (inject.get("service") or "kserve/kserve-webhook-server-service").partition("/")
                crd["metadata"]["annotations"] = {INJECT_CA_FROM: inject["inject_ca_from"]}
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": {"caBundle": PLACEHOLDER_CA,
                                     "service": {"name": svc_name, "namespace": svc_ns, "path": "/convert",
                                                 "port": 443}},
                    "conversionReviewVersions": ["v1", "v1beta1"]}}
        objs.append(crd)
    services = inv.get("services") or []
    for item in inv.get("deployments") or []:
        objs.append(_workload(comp, item, "Deployment", services, version_label))
    for item in inv.get("daemonsets") or []:
        objs.append(_workload(comp, item, "DaemonSet", services, version_label))
    used_ports: set = {p.get("nodePort") for _, s in profile.inventory("services") for p in s.get("ports") or []
                       if p.get("nodePort")}
    for item in services:
        objs.append(_service(item, profile.gateway, used_ports))
    if comp.name == "kserve":
        objs.extend(_kserve_extras(profile, comp, entries))
    if comp.name == "knative":
        objs.extend(_knative_extras(profile, comp, preinstalled, version_label))
    for entry in entries:
        objs.append(webhook_configuration(comp, entry))
    return sorted(objs, key=_order)


def kubernetes_version(profile) -> str:
    """v1.27.3 from the kind node image tag when it matches the profile's max minor, else v<max>.0."""
    _, high = profile.kubernetes_range
    m = re.search(r":v(\d+)\.(\d+)\.(\d+)", profile.kind.get("node_image", ""))
    if m and f"{m.group(1)}.{m.group(2)}" == high:
        return f"v{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return f"v{high}.0"


def cluster_objects(profile) -> list[dict]:
    """What a fresh kind cluster holds before anything is installed (the parts suites and diagnostics see)."""
    version = kubernetes_version(profile)
    minor = int(version.split(".")[1])
    coredns = "v1.10.1" if minor <= 28 else "v1.11.1"
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in ("default", "kube-system", "kube-public", "kube-node-lease", "local-path-storage")]
    objs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": {SIMULATED_LABEL: "true"}}})
    objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                 "spec": {"replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                          "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                                       "spec": {"serviceAccountName": "coredns", "containers": [{
                                           "name": "coredns", "image": f"registry.k8s.io/coredns/coredns:{coredns}",
                                           "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                                     {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                                     {"name": "metrics", "containerPort": 9153,
                                                      "protocol": "TCP"}]}]}}}})
    objs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                 "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIP": "10.96.0.10",
                          "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}})
    objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "local-path-provisioner", "namespace": "local-path-storage"},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "local-path-provisioner"}},
                          "template": {"metadata": {"labels": {"app": "local-path-provisioner"}},
                                       "spec": {"serviceAccountName": "local-path-provisioner-service-account",
                                                "containers": [{"name": "local-path-provisioner",
                                                                "image": "docker.io/kindest/local-path-provisioner:"
                                                                         "v20230511-dc714da8"}]}}}})
    for name, image in (("kube-proxy", f"registry.k8s.io/kube-proxy:{version}"),
                        ("kindnet", "docker.io/kindest/kindnetd:v20230511-dc714da8")):
        labels = {"k8s-app": name} if name == "kube-proxy" else {"app": name, "k8s-app": name, "tier": "node"}
        sel = {"k8s-app": name} if name == "kube-proxy" else {"app": name}
        objs.append({"apiVersion": "apps/v1", "kind": "DaemonSet",
                     "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
                     "spec": {"selector": {"matchLabels": sel},
                              "template": {"metadata": {"labels": labels},
                                           "spec": {"serviceAccountName": name,
                                                    "nodeSelector": {"kubernetes.io/os": "linux"},
                                                    "containers": [{"name": name if name != "kindnet"
                                                                    else "kindnet-cni", "image": image}]}}}})
    return objs


def _manager(comp) -> str:
    return "helm" if comp.helm_releases else "kubectl-client-side-apply"


def apply_objects(store, objs: Iterable[dict], manager: str = "kubectl") -> list[dict]:
    """Apply in order; objects whose kind is not served (a missing CRD) are skipped with a log line."""
    from twin.api_store import ApiError  # the store module is light; imported here to keep seed importable alone
    out = []
    for obj in objs:
        if store.resource_for(obj["apiVersion"], obj["kind"]) is None:
            log.info("seed: %s %s skipped: %s/%s is not served", obj["kind"], obj["metadata"]["name"],
                     obj["apiVersion"], obj["kind"])
            continue
        try:
            out.append(store.apply(obj, field_manager=manager))
        except ApiError as exc:
            log.warning("seed: %s %s/%s not applied: %s", obj["kind"], obj["metadata"].get("namespace", ""),
                        obj["metadata"]["name"], exc.message)
    return out


def seed(store, profile, faults: Iterable[Fault] | FaultSet = (), preinstalled: bool = True) -> list[dict]:
    """Apply every component's objects (dependency order) through the store: a preinstalled stack."""
    out = []
    for comp in profile.install_order():
        out += apply_objects(store, inventory_objects(profile, comp.name, preinstalled=preinstalled, faults=faults),
                             _manager(comp))
    return out
