"""Admission webhooks emulated as kube-apiserver calls them: probes, caBundle/x509, endpoints, selectors."""
from __future__ import annotations

import base64
import json
import re

import pytest
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from stack.profile import Profile, available_profiles
from twin import Twin, pki
from twin.controllers.webhooks import AdmissionEmulator, rule_matches, selector_matches

ADMISSION = "admissionregistration.k8s.io/v1"


def _clients(twin):
    api = config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)
    return api, dynamic.DynamicClient(api)


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


@pytest.fixture(scope="module")
def seed_twin():
    with Twin(Profile.load("seed")) as twin:
        api, dyn = _clients(twin)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "probes"}})
        yield twin, api, dyn


# ---------------------------------------------------------------------------------------------------------------
# every admission probe of every shipped profile

@pytest.mark.parametrize("profile_name", available_profiles())
def test_admission_probes_of_every_profile(profile_name):
    profile = Profile.load(profile_name)
    probes = [(c.name, p) for c in profile.components.values() for p in c.admission_probes]
    assert probes, f"profile {profile_name} has no admission probes"
    with Twin(profile) as twin:
        api, dyn = _clients(twin)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "probes"}})
        for component, probe in probes:
            admit, deny = probe["admit"], probe["deny"]
            resource = dyn.resources.get(api_version=admit["apiVersion"], kind=admit["kind"])
            created = resource.create(body=admit, namespace="probes", dry_run="All")
            assert created.metadata.name, f"{component}: admit object not admitted"
            resource = dyn.resources.get(api_version=deny["apiVersion"], kind=deny["kind"])
            with pytest.raises(ApiException) as denied:
                resource.create(body=deny, namespace="probes", dry_run="All")
            message = _message(denied.value)
            assert re.search(probe["deny_pattern"], message), f"{component}: {message!r}"
            assert denied.value.status in (400, 403, 422)


def test_every_webhook_has_a_verifying_ca_bundle(seed_twin):
    twin, _, _ = seed_twin
    emulator = AdmissionEmulator(twin.ctx)
    checked = 0
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for cfg in twin.store.list(ADMISSION, kind):
            for webhook in cfg["webhooks"]:
                assert emulator.transport_error(webhook) is None, (cfg["metadata"]["name"], webhook["name"])
                bundle = base64.b64decode(webhook["clientConfig"]["caBundle"])
                assert pki.load_certs(bundle), cfg["metadata"]["name"]
                checked += 1
    assert checked >= 15


# ---------------------------------------------------------------------------------------------------------------
# transport failures: the real kube-apiserver texts

def _gateway(name: str, servers: list | None = None) -> dict:
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
            "metadata": {"name": name},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": servers if servers is not None else
                     [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["x.example.com"]}]}}


def test_wrong_ca_bundle_gives_the_x509_error(seed_twin):
    twin, api, dyn = seed_twin
    configs = dyn.resources.get(api_version=ADMISSION, kind="ValidatingWebhookConfiguration")
    live = configs.get(name="istiod-default-validator").to_dict()
    good = live["webhooks"][0]["clientConfig"]["caBundle"]
    other = pki.b64(pki.component_ca("some/other-ca").cert_pem)
    gateways = dyn.resources.get(api_version="networking.istio.io/v1beta1", kind="Gateway")
    try:
        configs.patch(name="istiod-default-validator", content_type="application/json-patch+json",
                      body=[{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": other}])
        with pytest.raises(ApiException) as err:
            gateways.create(body=_gateway("x509"), namespace="probes", dry_run="All")
        assert err.value.status == 500
        assert _message(err.value) == (
            'Internal error occurred: failed calling webhook "validation.istio.io": failed to call webhook: Post '
            '"https://istiod.istio-system.svc:443/validate?timeout=10s": tls: failed to verify certificate: '
            'x509: certificate signed by unknown authority')
        configs.patch(name="istiod-default-validator", content_type="application/json-patch+json",
                      body=[{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "Cg=="}])
        with pytest.raises(ApiException) as err:
            gateways.create(body=_gateway("placeholder"), namespace="probes", dry_run="All")
        assert _message(err.value).endswith(
            'failed calling webhook "validation.istio.io": could not get REST client: unable to load root '
            'certificates: unable to parse bytes as PEM block')
    finally:
        configs.patch(name="istiod-default-validator", content_type="application/json-patch+json",
                      body=[{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": good}])
    gateways.create(body=_gateway("restored"), namespace="probes", dry_run="All")


def test_no_endpoints_gives_the_real_text(seed_twin):
    twin, api, dyn = seed_twin
    apps = client.AppsV1Api(api)
    ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"template": {"spec": {"containers": [{"image": "gcr.io/knative-samples/helloworld-go"}]}}}}
    services = dyn.resources.get(api_version="serving.knative.dev/v1", kind="Service")
    apps.patch_namespaced_deployment("webhook", "knative-serving", {"spec": {"replicas": 0}})
    try:
        twin.settle()
        with pytest.raises(ApiException) as err:
            services.create(body=ksvc, namespace="probes", dry_run="All")
        assert err.value.status == 500
        assert _message(err.value) == (
            'Internal error occurred: failed calling webhook "webhook.serving.knative.dev": failed to call webhook: '
            'Post "https://webhook.knative-serving.svc:443/defaulting?timeout=10s": no endpoints available for '
            'service "webhook"')
    finally:
        apps.patch_namespaced_deployment("webhook", "knative-serving", {"spec": {"replicas": 1}})
        twin.settle()
    created = services.create(body=ksvc, namespace="probes", dry_run="All")
    # the mutating webhook.serving.knative.dev stamps the creator
    assert created.metadata.annotations["serving.knative.dev/creator"] == "kubernetes-admin"


def test_missing_certificate_secret_means_the_webhook_server_is_down(seed_twin):
    twin, api, dyn = seed_twin
    core = client.CoreV1Api(api)
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "iris"},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}
    resource = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
    emulator = AdmissionEmulator(twin.ctx)
    leaf, error = emulator.serving_certificate("kserve", "kserve-webhook-server-service",
                                               twin.store.get("v1", "Service", "kserve-webhook-server-service",
                                                              "kserve"))
    assert error is None and "kserve-webhook-server-service.kserve.svc" in pki.dns_names(leaf)
    # cert-manager re-issues a deleted Secret (revision 2); the webhook works again afterwards
    core.delete_namespaced_secret("kserve-webhook-server-cert", "kserve")
    twin.settle()
    cert = twin.store.get("cert-manager.io/v1", "Certificate", "serving-cert", "kserve")
    assert cert["status"]["revision"] == 2
    resource.create(body=isvc, namespace="probes", dry_run="All")


def test_selectors_decide_which_webhooks_are_called(seed_twin):
    twin, api, dyn = seed_twin
    core = client.CoreV1Api(api)
    # cert-manager skips namespaces labelled cert-manager.io/disable-validation=true
    core.create_namespace({"metadata": {"name": "no-cm-validation",
                                        "labels": {"cert-manager.io/disable-validation": "true"}}})
    crs = dyn.resources.get(api_version="cert-manager.io/v1", kind="CertificateRequest")
    bad = {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "bad"},
           "spec": {"request": "aW52YWxpZC1jc3I=", "issuerRef": {"name": "x"}}}
    crs.create(body=bad, namespace="no-cm-validation", dry_run="All")
    with pytest.raises(ApiException):
        crs.create(body=bad, namespace="probes", dry_run="All")
    # rev.validation.istio.io only sees objects labelled istio.io/rev=default; validation.istio.io sees all
    gateways = dyn.resources.get(api_version="networking.istio.io/v1beta1", kind="Gateway")
    with pytest.raises(ApiException) as err:
        gateways.create(body=_gateway("empty", servers=[]), namespace="probes", dry_run="All")
    assert 'admission webhook "validation.istio.io" denied the request' in _message(err.value)
    # a plain Pod is not intercepted by the sidecar injector or the KServe pod mutator
    core.create_namespaced_pod("probes", {"metadata": {"name": "plain"},
                                          "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
                               dry_run="All")


def test_selector_and_rule_matching_units():
    assert selector_matches({}, {"a": "b"})
    assert selector_matches({"matchLabels": {"a": "b"}}, {"a": "b"})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {})

    class Req:
        operation, group, version, resource, namespace = "CREATE", "cert-manager.io", "v1", "certificates", "ns"

    assert rule_matches({"operations": ["CREATE"], "apiGroups": ["cert-manager.io"], "apiVersions": ["*"],
                         "resources": ["*/*"]}, Req)
    assert not rule_matches({"operations": ["UPDATE"], "apiGroups": ["*"], "apiVersions": ["*"],
                             "resources": ["*"]}, Req)
    assert not rule_matches({"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"],
                             "resources": ["pods"]}, Req)
    assert not rule_matches({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                             "scope": "Cluster"}, Req)


def test_certificate_validation_texts(seed_twin):
    _, _, dyn = seed_twin
    certs = dyn.resources.get(api_version="cert-manager.io/v1", kind="Certificate")
    with pytest.raises(ApiException) as err:
        certs.create(body={"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
                           "spec": {"issuerRef": {"name": "x"}}}, namespace="probes", dry_run="All")
    assert _message(err.value) == (
        'admission webhook "webhook.cert-manager.io" denied the request: [spec.secretName: Required value: must be '
        'specified, spec: Invalid value: "": at least one of commonName, dnsNames, uris ipAddresses, or '
        'emailAddresses must be set]')
