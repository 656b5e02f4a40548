"""The Kubernetes objects a component's install creates, synthesised from the profile inventory.

`inventory_objects(profile, component)` stands in for what cannot be had offline (Helm charts, some release
manifests: twin/upstream.py says which) when the twin's helm stand-in and manifest mirror serve the installers.
The objects look like the real ones: no twin-only labels or annotations.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re


log = logging.getLogger(__name__)

PLACEHOLDER_CA = "Cg=="
INJECT_CA_FROM = "cert-manager.io/inject-ca-from"
INJECT_CA_FROM_SECRET = "cert-manager.io/inject-ca-from-secret"

# the order `helm install` (and a sensible kubectl apply) creates things in
_KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole",
               "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Deployment", "Issuer",
               "ClusterIssuer", "Certificate", "ClusterServingRuntime", "Gateway", "HorizontalPodAutoscaler",
               "PodDisruptionBudget", "MutatingWebhookConfiguration",
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
    # `ca: self`: no caBundle, as upstream's YAML ships it; the component writes its own (twin/standins/selfca.py)
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
        # what the chart writes (Istio's gateway: `auto`, which the sidecar injector fills in on the Pods)
        containers.append({"name": cname, "image": (item.get("template_images") or {}).get(cname)
                           or resolve_image(image)})
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
    if name == "kserve-controller-manager" and containers:
        # As KServe's kserve.yaml ships it (v0.11.0 .. v0.20.0): controller-runtime's webhook server reads its
        # certificate, cert-manager's Secret, from its default directory; without it the real manager exits.
        containers[0]["volumeMounts"] = [{"name": "cert", "mountPath": "/tmp/k8s-webhook-server/serving-certs",
                                          "readOnly": True}]
        pod_spec["volumes"] = [{"name": "cert", "secret": {"secretName": "kserve-webhook-server-cert",
                                                           "defaultMode": 420}}]
    if item.get("node_selector"):
        pod_spec["nodeSelector"] = dict(item["node_selector"])
    spec: dict = {"selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": labels}, "spec": pod_spec}}
    if kind == "Deployment":
        spec = {"replicas": _chart_replicas(comp, name) or item.get("replicas", 1), **spec}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
            "spec": spec}


def _gateway_chart_template(dep: dict) -> None:
    """What Istio's gateway chart renders (manifests/charts/gateway/templates/deployment.yaml at 1.19.0 and 1.30.3)
    besides `image: auto` (the profile's template_images): the injection label and the gateway template, which
    make istiod's injector set the real image on the Pods."""
    template = dep["spec"]["template"]
    template["metadata"].setdefault("labels", {})["sidecar.istio.io/inject"] = "true"
    template["metadata"].setdefault("annotations", {})["inject.istio.io/templates"] = "gateway"


def _service_accounts(comp, workloads: list[dict]) -> list[dict]:
    """A ServiceAccount per synthesised workload, bound to one broad ClusterRole of the component.

    The real charts and manifests carry each controller's own narrow RBAC; a synthesised component cannot know it,
    so its processes get every verb on every resource (stated in the twin's limitations).
    """
    objs, subjects = [], []
    for w in workloads:
        ns, sa = w["metadata"]["namespace"], w["spec"]["template"]["spec"]["serviceAccountName"]
        if {"name": sa, "namespace": ns} not in [{"name": s["name"], "namespace": s["namespace"]} for s in subjects]:
            objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}})
            subjects.append({"kind": "ServiceAccount", "name": sa, "namespace": ns})
    if subjects:
        name = f"{comp.name}-synthesised"
        objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
        objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": name},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                     "subjects": subjects})
    return objs


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
    # The other ConfigMaps serving-core.yaml ships (config/core/configmaps): only their `_example` keys, so every
    # reader (Knative's controllers, KServe's reconciler of config-autoscaler) gets the defaults, as on a fresh install.
    for name, component in (("config-autoscaler", "autoscaler"), ("config-defaults", "controller"),
                            ("config-deployment", "controller"), ("config-features", "controller"),
                            ("config-gc", "controller"), ("config-leader-election", "controller"),
                            ("config-logging", "logging"), ("config-network", "networking"),
                            ("config-observability", "observability"), ("config-tracing", "tracing")):
        data = {"_example": "# defaults apply (synthesised by the twin: serving-core.yaml is not at hand offline)\n"}
        if name == "config-autoscaler":
            # The twin's cluster is configured to scale an idle revision to zero quickly (Knative's minimum stable
            # window, 6 s; a grace period of 6 s), as an operator may: AC-SCALE-TO-ZERO reads and waits for these.
            data.update({"stable-window": "6s", "scale-to-zero-grace-period": "6s"})
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": ns, "labels": dict(labels, **{
                         "app.kubernetes.io/component": component})},
                     "data": data})
    objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "config-istio", "namespace": ns,
                              "labels": dict(labels, **{"app.kubernetes.io/component": "net-istio",
                                                        "networking.knative.dev/ingress-provider": "istio"})},
                 "data": {"_example": "# defaults apply\n"}})
    objs += _knative_availability(comp, labels)
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


def _pdb(namespace: str, name: str, selector: dict, rule: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})},
            "spec": {**rule, "selector": {"matchLabels": selector}}}


def _hpa(namespace: str, name: str, low: int, high: int, labels: dict) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"minReplicas": low, "maxReplicas": high,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 100}}}]}}


def _knative_availability(comp, labels: dict) -> list[dict]:
    """config/core/deployments/activator-hpa.yaml and webhook-hpa.yaml (the same at knative-v1.11.0 and v1.23.0):
    HPA activator 1..20 and webhook 1..5 at 100% CPU, PDBs activator-pdb and webhook-pdb with minAvailable 80%."""
    ns = "knative-serving"
    names = {item["name"] for item in comp.inventory.get("deployments") or [] if item["namespace"] == ns}
    out = []
    for name, high in (("activator", 20), ("webhook", 5)):
        if name in names:
            out.append(_hpa(ns, name, 1, high, dict(labels, **{"app.kubernetes.io/component": name})))
            out.append(_pdb(ns, f"{name}-pdb", {"app": name}, {"minAvailable": "80%"},
                            dict(labels, **{"app.kubernetes.io/component": name})))
    return out


def _values(comp, release: str) -> dict:
    return next((r.get("values") or {} for r in comp.helm_releases if r["release"] == release), {})


def _chart_replicas(comp, deployment: str) -> int | None:
    """The replicas a component's chart gives a Deployment for the profile's values (None: the chart's default, or
    not a chart of these): cert-manager's replicaCount, webhook.replicaCount, cainjector.replicaCount
    (deploy/charts/cert-manager values.yaml); istiod's HPA floor autoscaleMin (top-level from 1.28, pilot.* before;
    replicaCount without autoscaling) and the gateway's autoscaling.minReplicas (replicaCount without autoscaling),
    the HPA's floor being the count it keeps with no CPU metrics on kind."""
    if comp.name == "cert-manager":
        values = _values(comp, "cert-manager")
        key = {"cert-manager": None, "cert-manager-webhook": "webhook", "cert-manager-cainjector": "cainjector"}
        if deployment in key:
            return ((values.get(key[deployment]) or {}) if key[deployment] else values).get("replicaCount")
    if comp.name == "istio" and deployment == "istiod":
        values = _values(comp, "istiod")
        merged = {**(values.get("pilot") or {}), **{k: v for k, v in values.items() if k != "pilot"}}
        return merged.get("autoscaleMin") if merged.get("autoscaleEnabled", True) else merged.get("replicaCount")
    if comp.name == "istio" and deployment == "istio-ingressgateway":
        values = _values(comp, "istio-ingressgateway")
        scaling = values.get("autoscaling") or {}
        return scaling.get("minReplicas") if scaling.get("enabled", True) else values.get("replicaCount")
    return None


def _chart_budgets(comp) -> list[dict]:
    """The PodDisruptionBudgets the components' Helm charts render for the profile's values:
    - cert-manager deploy/charts/cert-manager templates/{,webhook-,cainjector-}poddisruptionbudget.yaml (v1.13.0,
      v1.21.1): with `podDisruptionBudget.enabled` (and webhook., cainjector.), minAvailable or maxUnavailable as
      given, else minAvailable 1;
    - Istio istio-discovery templates/poddisruptionbudget.yaml: PDB istiod with minAvailable 1 whenever
      global.defaultPodDisruptionBudget.enabled (default true) up to 1.27, and from 1.28 only with autoscaleMin > 1
      (or replicaCount > 1 without autoscaling: kubernetes/kubernetes#93476's workaround);
    - Istio gateway templates/poddisruptionbudget.yaml: with a non-empty `podDisruptionBudget` value, its spec (from
      1.28 only beside more than one replica).
    Selectors as the charts' (cert-manager's app.kubernetes.io/name+instance+component; istiod app+istio; the
    gateway.s app and istio labels, _helpers.tpl selectorLabels)."""
    out = []
    if comp.name == "cert-manager":
        values = _values(comp, "cert-manager")
        for key, part, component in ((None, "cert-manager", "controller"), ("webhook", "webhook", "webhook"),
                                     ("cainjector", "cainjector", "cainjector")):
            budget = ((values.get(key) or {}) if key else values).get("podDisruptionBudget") or {}
            if budget.get("enabled"):
                rule = {k: budget[k] for k in ("minAvailable", "maxUnavailable") if k in budget} or {"minAvailable": 1}
                name = "cert-manager" if key is None else f"cert-manager-{key}"
                out.append(_pdb("cert-manager", name, {"app.kubernetes.io/name": part,
                                                       "app.kubernetes.io/instance": "cert-manager",
                                                       "app.kubernetes.io/component": component}, rule))
    if comp.name == "istio":
        minor = _version_tuple(comp.version)[:2]
        istiod = _values(comp, "istiod")
        pilot = istiod.get("pilot") or {}
        low = istiod.get("autoscaleMin", pilot.get("autoscaleMin", 1))
        if minor < (1, 28) or int(low) > 1:
            out.append(_pdb("istio-system", "istiod", {"app": "istiod", "istio": "pilot"}, {"minAvailable": 1}))
        gateway = _values(comp, "istio-ingressgateway")
        budget = gateway.get("podDisruptionBudget") or {}
        replicas = int((gateway.get("autoscaling") or {}).get("minReplicas", gateway.get("replicaCount", 1)))
        if budget and (minor < (1, 28) or replicas > 1):
            out.append(_pdb("istio-system", "istio-ingressgateway", {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                            dict(budget)))
    return out


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

def inventory_objects(profile, component_name: str, preinstalled: bool = False) -> list[dict]:
    """The objects installing `component_name` creates, in apply order.

    `preinstalled`: the state after the installer's patches too (Knative's config-domain carries example.com).
    """
    comp = profile.components[component_name]
    inv = comp.inventory
    version_label = comp.version_probe.get("label")
    objs: list[dict] = [_namespace(comp, ns, version_label) for ns in inv.get("namespaces") or []]
    entries = inv.get("webhooks") or []
    for item in inv.get("crds") or []:
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
    objs.extend(_service_accounts(comp, [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")]))
    gateway = profile.gateway or {}
    for obj in objs:
        if obj["kind"] == "Deployment" and (obj["metadata"]["namespace"], obj["metadata"]["name"]) == \
                (gateway.get("namespace"), gateway.get("name")):
            _gateway_chart_template(obj)
    used_ports: set = {p.get("nodePort") for _, s in profile.inventory("services") for p in s.get("ports") or []
                       if p.get("nodePort")}
    for item in services:
        objs.append(_service(item, profile.gateway, used_ports))
    if comp.name == "kserve":
        objs.extend(_kserve_extras(profile, comp, entries))
    if comp.name == "knative":
        objs.extend(_knative_extras(profile, comp, preinstalled, version_label))
    objs.extend(_chart_budgets(comp))
    for entry in entries:
        objs.append(webhook_configuration(comp, entry))
    return sorted(objs, key=_order)
