"""twin.seed: the objects a component's install creates, synthesised from the profile inventory."""
from __future__ import annotations

import json

import pytest

from stack.profile import Profile, available_profiles
from twin.seed import PLACEHOLDER_CA, inventory_objects, resolve_image

PROFILES = available_profiles()


@pytest.fixture(scope="module")
def seed_profile() -> Profile:
    return Profile.load("seed")


def _by(objs, kind, name=None, namespace=None):
    out = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
           and (namespace is None or o["metadata"].get("namespace") == namespace)]
    return out


@pytest.mark.parametrize("profile_name", PROFILES)
def test_every_inventory_item_is_synthesised(profile_name):
    profile = Profile.load(profile_name)
    for comp in profile.install_order():
        objs = inventory_objects(profile, comp.name)
        inv = comp.inventory
        assert {n for n in inv.get("namespaces") or []} <= {o["metadata"]["name"] for o in _by(objs, "Namespace")}
        assert {c["name"] for c in inv.get("crds") or []} == \
            {o["metadata"]["name"] for o in _by(objs, "CustomResourceDefinition")}
        for kind, key in (("Deployment", "deployments"), ("DaemonSet", "daemonsets")):
            for item in inv.get(key) or []:
                (obj,) = _by(objs, kind, item["name"], item["namespace"])
                containers = obj["spec"]["template"]["spec"]["containers"]
                assert [c["name"] for c in containers] == list(item["containers"])
                for c in containers:
                    assert "*" not in c["image"]
                labels = obj["spec"]["template"]["metadata"]["labels"]
                assert all(labels[k] == v for k, v in obj["spec"]["selector"]["matchLabels"].items())
        for item in inv.get("services") or []:
            assert _by(objs, "Service", item["name"], item["namespace"])
        for item in inv.get("webhooks") or []:
            (cfg,) = _by(objs, item["kind"], item["name"])
            assert [w["name"] for w in cfg["webhooks"]] == (item.get("webhooks") or [item["name"]])
            for w in cfg["webhooks"]:
                assert w["failurePolicy"] == "Fail" and w["sideEffects"] == "None"
                assert w["admissionReviewVersions"] == ["v1"]
        # objects look like the real ones: no twin-only labels or annotations
        text = json.dumps(objs).replace("twin-control-plane", "").replace("synthesised by the twin", "")
        assert "twin" not in text


def test_crds_versions_scope_and_schema(seed_profile):
    objs = inventory_objects(seed_profile, "istio")
    (crd,) = _by(objs, "CustomResourceDefinition", "gateways.networking.istio.io")
    spec = crd["spec"]
    assert spec["group"] == "networking.istio.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "gateways" and spec["names"]["kind"] == "Gateway"
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == \
        [("v1alpha3", True, True), ("v1beta1", True, False)]
    assert spec["versions"][0]["schema"]["openAPIV3Schema"] == {"type": "object",
                                                                "x-kubernetes-preserve-unknown-fields": True}
    assert spec["versions"][0]["subresources"] == {"status": {}}
    (cluster,) = _by(inventory_objects(seed_profile, "cert-manager"), "CustomResourceDefinition",
                     "clusterissuers.cert-manager.io")
    assert cluster["spec"]["scope"] == "Cluster"


def test_knative_version_label_and_config_domain(seed_profile):
    objs = inventory_objects(seed_profile, "knative")
    (ns,) = _by(objs, "Namespace", "knative-serving")
    assert ns["metadata"]["labels"]["app.kubernetes.io/version"] == "1.11.0"
    for dep in _by(objs, "Deployment"):
        assert dep["metadata"]["labels"]["app.kubernetes.io/version"] == "1.11.0"
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.startswith("gcr.io/knative-releases/") and "@sha256:" in image and len(image.split(":")[-1]) == 64
    (domain,) = _by(objs, "ConfigMap", "config-domain", "knative-serving")
    assert "example.com" not in domain["data"]  # the installer's patch adds it
    (domain,) = _by(inventory_objects(seed_profile, "knative", preinstalled=True), "ConfigMap", "config-domain")
    assert domain["data"]["example.com"] == ""
    assert domain["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"


def test_digest_images_are_deterministic():
    image = "gcr.io/knative-releases/knative.dev/serving/cmd/webhook@sha256:*"
    assert resolve_image(image) == resolve_image(image)
    assert resolve_image("quay.io/x/y:v1") == "quay.io/x/y:v1"
    assert resolve_image(image).startswith("gcr.io/knative-releases/knative.dev/serving/cmd/webhook@sha256:")


def test_webhook_configurations(seed_profile):
    objs = inventory_objects(seed_profile, "kserve")
    (mut,) = _by(objs, "MutatingWebhookConfiguration", "inferenceservice.serving.kserve.io")
    assert mut["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "kserve/serving-cert"}
    defaulter, mutator = mut["webhooks"]
    assert defaulter["clientConfig"] == {"service": {"namespace": "kserve", "name": "kserve-webhook-server-service",
                                                     "path": "/mutate-serving-kserve-io-v1beta1-inferenceservice",
                                                     "port": 443}, "caBundle": PLACEHOLDER_CA}
    assert defaulter["rules"][0] == {"apiGroups": ["serving.kserve.io"], "apiVersions": ["v1beta1"],
                                     "resources": ["inferenceservices"], "operations": ["CREATE", "UPDATE"],
                                     "scope": "*"}
    assert mutator["rules"][1]["apiGroups"] == [""] and mutator["rules"][1]["resources"] == ["pods"]
    assert mutator["objectSelector"]["matchExpressions"][0]["key"] == "serving.kserve.io/inferenceservice"
    # cert-manager's own webhook: injected from its CA secret, no caBundle shipped
    cm = inventory_objects(seed_profile, "cert-manager")
    (val,) = _by(cm, "ValidatingWebhookConfiguration", "cert-manager-webhook")
    assert val["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from-secret": "cert-manager/cert-manager-webhook-ca"}
    assert "caBundle" not in val["webhooks"][0]["clientConfig"]
    assert val["webhooks"][0]["rules"][0]["apiVersions"] == ["*"]
    # ca: self: no caBundle shipped, as upstream's YAML; the component writes its own (twin/standins/selfca.py)
    (istio,) = _by(inventory_objects(seed_profile, "istio"), "ValidatingWebhookConfiguration",
                   "istiod-default-validator")
    assert "caBundle" not in istio["webhooks"][0]["clientConfig"]


def test_kserve_extras(seed_profile):
    objs = inventory_objects(seed_profile, "kserve")
    (issuer,) = _by(objs, "Issuer", "selfsigned-issuer", "kserve")
    assert issuer["spec"] == {"selfSigned": {}}
    (cert,) = _by(objs, "Certificate", "serving-cert", "kserve")
    assert cert["spec"]["secretName"] == "kserve-webhook-server-cert"
    assert cert["spec"]["dnsNames"] == ["kserve-webhook-server-service.kserve.svc"]
    (cm,) = _by(objs, "ConfigMap", "inferenceservice-config", "kserve")
    assert json.loads(cm["data"]["deploy"]) == {"defaultDeploymentMode": "Serverless"}
    ingress = json.loads(cm["data"]["ingress"])
    assert ingress["ingressDomain"] == "example.com"
    assert ingress["domainTemplate"] == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert ingress["ingressService"] == "istio-ingressgateway.istio-system.svc.cluster.local"
    (crd,) = _by(objs, "CustomResourceDefinition", "inferenceservices.serving.kserve.io")
    assert crd["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "kserve/serving-cert"
    assert crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"] == PLACEHOLDER_CA
    (ns,) = _by(objs, "Namespace", "kserve")
    assert ns["metadata"]["labels"]["control-plane"] == "kserve-controller-manager"
    # the controller's pod carries the labels its Services select
    (dep,) = _by(objs, "Deployment", "kserve-controller-manager")
    assert dep["spec"]["template"]["metadata"]["labels"]["controller-tools.k8s.io"] == "1.0"
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "webhook-server", "containerPort": 9443, "protocol": "TCP"} in ports


def test_gateway_service_is_nodeport(seed_profile):
    (svc,) = _by(inventory_objects(seed_profile, "istio"), "Service", "istio-ingressgateway", "istio-system")
    assert svc["spec"]["type"] == "NodePort"
    http2 = next(p for p in svc["spec"]["ports"] if p["name"] == "http2")
    assert http2["nodePort"] == 31080
    assert all(30000 <= p["nodePort"] <= 32767 for p in svc["spec"]["ports"])
