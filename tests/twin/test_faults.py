"""Twin faults: parsing against the profile, and the observable effect of every kind."""
from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from stack.profile import Profile
from twin import Twin, pki
from twin.seed import seed
from twin.faults import KINDS, Fault, FaultSpecError, parse_faults

URI = "gs://kfserving-examples/models/sklearn/1.0/model"
SAMPLE = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}


@pytest.fixture(scope="module")
def profile() -> Profile:
    return Profile.load("seed")


def _clients(twin):
    api = config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)
    return api, dynamic.DynamicClient(api)


def _message(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


def _isvc(name: str) -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"predictor": {"sklearn": {"storageUri": URI}}}}


# ---------------------------------------------------------------------------------------------------------------
# parsing

def test_parse_valid_faults(profile):
    faults = parse_faults(["crashloop:kserve/kserve-controller-manager", "api-flaky:0.25", "watch-drop",
                           "crd-missing:certificates.cert-manager.io", "cabundle-invalid:cert-manager-webhook",
                           "watch-drop"], profile)
    assert faults == [Fault("crashloop", "kserve/kserve-controller-manager"), Fault("api-flaky", "0.25", 0.25),
                      Fault("watch-drop"), Fault("crd-missing", "certificates.cert-manager.io"),
                      Fault("cabundle-invalid", "cert-manager-webhook")]
    assert faults[0].namespace == "kserve" and faults[0].name == "kserve-controller-manager"


@pytest.mark.parametrize("spec, fragment", [
    ("explode", "unknown twin fault kind 'explode'"),
    ("crashloop:kserve/nope", "has no Deployment kserve/nope"),
    ("imagepull:kserve-controller-manager", "needs NS/DEPLOYMENT"),
    ("crashloop", "needs a target"),
    ("crd-missing:widgets.example.com", "has no CRD widgets.example.com"),
    ("cabundle-invalid:nope.example.com", "has no webhook configuration nope.example.com"),
    ("api-flaky:0", "RATE in (0, 1]"),
    ("api-flaky:1.5", "RATE in (0, 1]"),
    ("api-flaky:lots", "RATE in (0, 1]"),
    ("cert-stuck:kserve/serving-cert", "takes no target"),
])
def test_bad_faults_are_one_clear_error(profile, spec, fragment):
    with pytest.raises(FaultSpecError) as err:
        parse_faults([spec], profile)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    if fragment.startswith("unknown"):
        for kind in KINDS:
            assert kind in str(err.value)


def test_twin_rejects_bad_faults(profile):
    with pytest.raises(FaultSpecError):
        Twin(profile, faults=["crashloop:istio-system/nope"])


# ---------------------------------------------------------------------------------------------------------------
# effects

@pytest.fixture(scope="module")
def broken(profile):
    faults = ["crashloop:kserve/kserve-controller-manager", "imagepull:istio-system/istiod",
              "crd-missing:trainedmodels.serving.kserve.io", "cabundle-invalid:cert-manager-webhook"]
    with Twin(profile, faults=faults) as twin:
        api, dyn = _clients(twin)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "faults"}})
        yield twin, api, dyn


def test_crashloop(broken):
    twin, api, dyn = broken
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    (pod,) = core.list_namespaced_pod("kserve", label_selector="control-plane=kserve-controller-manager").items
    manager = next(c for c in pod.status.container_statuses if c.name == "manager")
    assert manager.state.waiting.reason == "CrashLoopBackOff"
    assert manager.last_state.terminated.reason == "Error" and manager.last_state.terminated.exit_code == 1
    assert not manager.ready
    first = manager.restart_count
    assert first >= 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (pod,) = core.list_namespaced_pod("kserve", label_selector="control-plane=kserve-controller-manager").items
        manager = next(c for c in pod.status.container_statuses if c.name == "manager")
        if manager.restart_count > first:
            break
        time.sleep(0.1)
    assert manager.restart_count > first, "restartCount does not grow"
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False"
    dep = apps.read_namespaced_deployment("kserve-controller-manager", "kserve")
    assert not dep.status.ready_replicas
    available = next(c for c in dep.status.conditions if c.type == "Available")
    assert (available.status, available.reason) == ("False", "MinimumReplicasUnavailable")
    previous = core.read_namespaced_pod_log(pod.metadata.name, "kserve", container="manager", previous=True)
    assert "exiting with status 1" in previous
    # the KServe webhook has no endpoints: an ISVC is refused with the real apiserver text
    isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
    with pytest.raises(ApiException) as err:
        isvcs.create(body=_isvc("refused"), namespace="faults")
    assert 'no endpoints available for service "kserve-webhook-server-service"' in _message(err.value)


def test_imagepull(broken):
    twin, api, _ = broken
    core = client.CoreV1Api(api)
    (pod,) = core.list_namespaced_pod("istio-system", label_selector="app=istiod").items
    assert pod.status.phase == "Pending"
    (discovery,) = pod.status.container_statuses
    assert discovery.state.waiting.reason == "ImagePullBackOff"
    assert discovery.state.waiting.message == 'Back-off pulling image "docker.io/istio/pilot:1.19.0"'
    assert not discovery.ready
    eps = core.read_namespaced_endpoints("istiod", "istio-system")
    assert not any(s.addresses for s in eps.subsets or [])


def test_crd_missing(broken):
    twin, api, _ = broken
    ext = client.ApiextensionsV1Api(api)
    names = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert "trainedmodels.serving.kserve.io" not in names
    assert "inferenceservices.serving.kserve.io" in names
    # an install that applies it sees it vanish again
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "trainedmodels.serving.kserve.io"},
           "spec": {"group": "serving.kserve.io", "scope": "Namespaced",
                    "names": {"plural": "trainedmodels", "kind": "TrainedModel"},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ext.create_custom_resource_definition(crd)
    twin.settle()
    assert "trainedmodels.serving.kserve.io" not in {c.metadata.name for c in
                                                     ext.list_custom_resource_definition().items}


def test_cabundle_invalid(broken):
    twin, api, dyn = broken
    adm = client.AdmissionregistrationV1Api(api)
    cfg = adm.read_validating_webhook_configuration("cert-manager-webhook")
    (ca,) = pki.load_certs(base64.b64decode(cfg.webhooks[0].client_config.ca_bundle))
    secret = client.CoreV1Api(api).read_namespaced_secret("cert-manager-webhook-ca", "cert-manager")
    right = base64.b64decode(secret.data["ca.crt"])
    assert pki.is_ca(ca) and pki.cert_pem(ca) != right  # valid PEM, a different CA
    certs = dyn.resources.get(api_version="cert-manager.io/v1", kind="Certificate")
    body = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
            "spec": {"dnsNames": ["c.example"], "secretName": "c", "issuerRef": {"name": "i"}}}
    with pytest.raises(ApiException) as err:
        certs.create(body=body, namespace="faults", dry_run="All")
    assert err.value.status == 500
    assert _message(err.value).endswith("tls: failed to verify certificate: x509: certificate signed by unknown "
                                        "authority")
    # repairing it by hand does not stick: whatever removed it is still at work
    adm.patch_validating_webhook_configuration("cert-manager-webhook", [
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": secret.data["ca.crt"]}])
    twin.settle()
    cfg = adm.read_validating_webhook_configuration("cert-manager-webhook")
    assert base64.b64decode(cfg.webhooks[0].client_config.ca_bundle) != right


def installed_under(profile, faults):
    """A twin whose stack is installed while the faults are already there (a preinstalled twin is seeded healthy
    and the runtime faults strike afterwards)."""
    twin = Twin(profile, faults=faults, preinstalled=False)
    twin.start()
    seed(twin.store, twin.profile, twin.ctx.faults, preinstalled=True)
    twin.settle()
    return twin


def test_runtime_faults_strike_a_healthy_preinstalled_stack(profile):
    """cert-stuck on a preinstalled twin: KServe's serving-cert was issued before; a new Certificate never is."""
    with Twin(profile, faults=["cert-stuck"]) as twin:
        assert twin.store.get("v1", "Secret", "kserve-webhook-server-cert", "kserve") is not None
        twin.store.create({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                           "metadata": {"name": "late", "namespace": "kserve"},
                           "spec": {"dnsNames": ["late.example"], "secretName": "late-tls",
                                    "issuerRef": {"name": "selfsigned-issuer", "kind": "Issuer"}}})
        twin.settle()
        cert = twin.store.get("cert-manager.io/v1", "Certificate", "late", "kserve")
        ready = next(c for c in cert["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert twin.store.get("v1", "Secret", "late-tls", "kserve") is None


def test_cert_stuck(profile):
    with installed_under(profile, ["cert-stuck"]) as twin:
        cert = twin.store.get("cert-manager.io/v1", "Certificate", "serving-cert", "kserve")
        ready = next(c for c in cert["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DoesNotExist")
        assert twin.store.get("v1", "Secret", "kserve-webhook-server-cert", "kserve") is None
        cr = twin.store.get("cert-manager.io/v1", "CertificateRequest", "serving-cert-1", "kserve")
        assert next(c for c in cr["status"]["conditions"] if c["type"] == "Ready")["reason"] == "Pending"
        # nothing to inject: the KServe webhooks keep the Cg== placeholder and the apiserver cannot call them
        api, dyn = _clients(twin)
        isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
        with pytest.raises(ApiException) as err:
            isvcs.create(body=_isvc("x"), namespace="default", dry_run="All")
        assert _message(err.value).endswith("could not get REST client: unable to load root certificates: unable to "
                                            "parse bytes as PEM block")


def test_cert_wrong_san(profile):
    with installed_under(profile, ["cert-wrong-san"]) as twin:
        secret = twin.store.get("v1", "Secret", "kserve-webhook-server-cert", "kserve")
        (leaf, *_) = pki.load_certs(base64.b64decode(secret["data"]["tls.crt"]))
        assert pki.dns_names(leaf) == ["wrong-kserve-webhook-server-service.kserve.svc"]
        api, dyn = _clients(twin)
        isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
        with pytest.raises(ApiException) as err:
            isvcs.create(body=_isvc("x"), namespace="default", dry_run="All")
        assert _message(err.value).endswith(
            "x509: certificate is valid for wrong-kserve-webhook-server-service.kserve.svc, not "
            "kserve-webhook-server-service.kserve.svc")


def test_isvc_stuck(profile):
    with Twin(profile, faults=["isvc-stuck"]) as twin:
        api, dyn = _clients(twin)
        isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
        isvcs.create(body=_isvc("stuck"), namespace="default")
        twin.settle()
        time.sleep(0.5)
        obj = isvcs.get(name="stuck", namespace="default").to_dict()
        conds = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conds["Ready"]["status"] != "True"
        assert (conds["PredictorReady"]["status"], conds["PredictorReady"]["reason"]) == ("Unknown", "RevisionMissing")
        (pod,) = client.CoreV1Api(api).list_namespaced_pod(
            "default", label_selector="serving.kserve.io/inferenceservice=stuck").items
        assert pod.status.phase == "Pending"
        assert twin.model_servers() == []


@pytest.mark.slow
def test_predict_wrong(profile):
    with Twin(profile, faults=["predict-wrong"]) as twin:
        api, dyn = _clients(twin)
        isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
        isvcs.create(body=_isvc("wrong"), namespace="default")
        deadline = time.monotonic() + 40
        while True:
            obj = isvcs.get(name="wrong", namespace="default").to_dict()
            if any(c["type"] == "Ready" and c["status"] == "True" for c in
                   (obj.get("status") or {}).get("conditions") or []):
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        host = obj["status"]["url"].split("://", 1)[1]
        resp = requests.post(f"{twin.gateway_url}/v1/models/wrong:predict", json=SAMPLE, headers={"Host": host},
                             timeout=10)
        assert resp.status_code == 200
        assert resp.json()["predictions"] != [1, 1]


def test_api_flaky_and_watch_drop(profile):
    with Twin(profile, faults=["api-flaky:1.0", "watch-drop"]) as twin:
        assert twin.api.faults.flaky_rate == 1.0
        assert twin.api.faults.watch_drop is True
        resp = requests.get(f"{twin.api.url}/api/v1/namespaces", timeout=5)
        assert resp.status_code in (429, 500)
    with Twin(profile, faults=["api-flaky:0.3"]) as twin:
        codes = [requests.get(f"{twin.api.url}/api/v1/namespaces", timeout=5).status_code for _ in range(60)]
        assert 200 in codes and any(c in (429, 500) for c in codes)
