"""twin.seed: the objects a component's install creates, synthesised from the profile inventory."""
from __future__ import annotations

import base64
import json

import pytest

from stack.profile import Profile, available_profiles
from twin import pki
from twin.api_store import Store
from twin.faults import parse_faults
from twin.seed import (PLACEHOLDER_CA, cluster_objects, image_id, inventory_objects, kubernetes_version,
                       resolve_image, seed)

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
        text = json.dumps(objs)
        assert "twin" not in text.replace("twin-control-plane", "")


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
    pinned = "quay.io/x/y:v1@sha256:" + "a" * 64
    assert image_id(pinned) == "docker-pullable://quay.io/x/y@sha256:" + "a" * 64
    assert image_id("docker.io/istio/pilot:1.19.0").startswith("docker-pullable://docker.io/istio/pilot@sha256:")


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
    # ca: self without a secret: a caBundle of the component's own CA
    (istio,) = _by(inventory_objects(seed_profile, "istio"), "ValidatingWebhookConfiguration",
                   "istiod-default-validator")
    (ca,) = pki.load_certs(base64.b64decode(istio["webhooks"][0]["clientConfig"]["caBundle"]))
    assert pki.is_ca(ca) and ca == pki.component_ca("istio-system/istiod").cert


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


def test_crd_missing_fault_leaves_the_crd_out(seed_profile):
    faults = parse_faults(["crd-missing:inferenceservices.serving.kserve.io"], seed_profile)
    names = {o["metadata"]["name"] for o in inventory_objects(seed_profile, "kserve", faults=faults)}
    assert "inferenceservices.serving.kserve.io" not in names
    assert "trainedmodels.serving.kserve.io" in names


def test_kubernetes_version(seed_profile):
    assert kubernetes_version(seed_profile) == "v1.27.3"
    data = dict(seed_profile.data, kubernetes={"min": "1.25", "max": "1.28"})
    assert kubernetes_version(Profile(data)) == "v1.28.0"


def test_seed_applies_everything_through_the_store(seed_profile):
    store = Store()
    try:
        for obj in cluster_objects(seed_profile):
            store.apply(obj)
        applied = seed(store, seed_profile, ())
        expected = sum(len(inventory_objects(seed_profile, c.name, preinstalled=True))
                       for c in seed_profile.install_order())
        assert len(applied) == expected
        for _, crd in seed_profile.inventory("crds"):
            obj = store.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["name"])
            established = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
            assert established["Established"] == "True"
        assert store.get("cert-manager.io/v1", "Certificate", "serving-cert", "kserve") is not None
        assert store.get("apps/v1", "Deployment", "coredns", "kube-system") is not None
    finally:
        store.close()
