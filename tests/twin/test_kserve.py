"""KServe in the twin: InferenceServices served by a real model server, Serverless and Standard."""
from __future__ import annotations

import copy
import time

import pytest
import requests
from kubernetes import client, config, dynamic

from stack.profile import Profile, available_profiles
from twin import Twin

SAMPLE = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
SAMPLE_V2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                         "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
URI = "gs://kfserving-examples/models/sklearn/1.0/model"
NS = "kserve-test"


def _clients(twin):
    api = config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)
    dyn = dynamic.DynamicClient(api)
    return api, dyn, dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")


def _isvc(name: str, predictor: dict, annotations: dict | None = None) -> dict:
    meta = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": predictor}}


def _conditions(obj: dict) -> dict:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _wait_ready(isvcs, name: str, timeout: float = 40.0) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        obj = isvcs.get(name=name, namespace=NS).to_dict()
        if _conditions(obj).get("Ready", {}).get("status") == "True":
            return obj, time.monotonic() - started
        assert time.monotonic() - started < timeout, f"ISVC {name} not Ready: {obj.get('status')}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def seed_twin():
    with Twin(Profile.load("seed")) as twin:
        api, dyn, isvcs = _clients(twin)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield twin, api, isvcs


@pytest.mark.slow
def test_serverless_isvc_old_schema_predicts_through_the_gateway(seed_twin):
    twin, api, isvcs = seed_twin
    isvcs.create(body=_isvc("sklearn-iris", {"sklearn": {"storageUri": URI}}), namespace=NS)
    # before the model server is up (~2.5 s): conditions with reasons, no URL yet
    twin.settle(timeout=0.5)
    early = _conditions(isvcs.get(name="sklearn-iris", namespace=NS).to_dict())
    if early.get("Ready", {}).get("status") != "True":
        assert early["PredictorReady"]["status"] in ("Unknown", "False")
        assert early["PredictorReady"]["reason"] == "RevisionMissing"
        assert early["IngressReady"]["status"] == "False"
    obj, seconds = _wait_ready(isvcs, "sklearn-iris")
    print(f"\nISVC sklearn-iris Ready in {seconds:.2f}s")
    status = obj["status"]
    assert status["url"] == f"http://sklearn-iris.{NS}.example.com"
    assert status["address"]["url"] == f"http://sklearn-iris.{NS}.svc.cluster.local"
    assert status["components"]["predictor"]["latestReadyRevision"] == "sklearn-iris-predictor-00001"
    for ctype in ("PredictorReady", "IngressReady", "Ready"):
        assert status["conditions"] and _conditions(obj)[ctype]["status"] == "True"
        assert _conditions(obj)[ctype]["lastTransitionTime"]
    host = status["url"].split("://", 1)[1]
    resp = requests.post(f"{twin.gateway_url}/v1/models/sklearn-iris:predict", json=SAMPLE, headers={"Host": host},
                         timeout=10)
    assert resp.status_code == 200 and resp.json() == {"predictions": [1, 1]}
    resp = requests.post(f"{twin.gateway_url}/v2/models/sklearn-iris/infer", json=SAMPLE_V2,
                         headers={"Host": host}, timeout=10)
    assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == [1, 1]
    # the predictor's objects and pod look like KServe 0.11 + Knative
    core = client.CoreV1Api(api)
    (pod,) = core.list_namespaced_pod(NS, label_selector="serving.kserve.io/inferenceservice=sklearn-iris").items
    assert pod.metadata.name.startswith("sklearn-iris-predictor-00001-deployment-")
    (init,) = pod.status.init_container_statuses
    assert init.name == "storage-initializer" and init.state.terminated.reason == "Completed"
    main = next(c for c in pod.status.container_statuses if c.name == "kserve-container")
    assert main.ready and main.image == "kserve/sklearnserver:v0.11.0"
    assert core.read_namespaced_service("sklearn-iris-predictor", NS).spec.type == "ExternalName"
    logs = core.read_namespaced_pod_log(pod.metadata.name, NS, container="storage-initializer")
    assert URI in logs
    # deletion stops the model server and removes the route
    (proc,) = twin.model_servers()
    isvcs.delete(name="sklearn-iris", namespace=NS)
    twin.settle()
    deadline = time.monotonic() + 10
    while proc.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode is not None
    assert requests.post(f"{twin.gateway_url}/v1/models/sklearn-iris:predict", json=SAMPLE,
                         headers={"Host": host}, timeout=10).status_code == 404
    assert not core.list_namespaced_pod(NS, label_selector="serving.kserve.io/inferenceservice=sklearn-iris").items


def _standard_profile() -> Profile:
    if "latest-standard" in available_profiles():
        return Profile.load("latest-standard")
    data = copy.deepcopy(Profile.load("seed").data)
    data["name"] = "seed-standard"
    data["iris"].update(deployment_mode="Standard", route="service-proxy")
    return Profile(data)


@pytest.mark.slow
def test_standard_mode_new_schema_through_the_service_proxy():
    profile = _standard_profile()
    with Twin(profile) as twin:
        api, _, isvcs = _clients(twin)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        isvcs.create(body=_isvc("sklearn-iris", {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": URI,
                                                           "protocolVersion": "v2",
                                                           "runtime": "kserve-sklearnserver"}}), namespace=NS)
        obj, seconds = _wait_ready(isvcs, "sklearn-iris")
        print(f"\nStandard ISVC Ready in {seconds:.2f}s")
        assert obj["status"]["url"] == f"http://sklearn-iris-{NS}.example.com"
        core = client.CoreV1Api(api)
        svc = core.read_namespaced_service("sklearn-iris-predictor", NS)
        assert svc.spec.type == "ClusterIP" and svc.spec.ports[0].port == 80
        assert client.AppsV1Api(api).read_namespaced_deployment("sklearn-iris-predictor", NS).status.ready_replicas == 1
        base = f"{twin.api.url}/api/v1/namespaces/{NS}/services/sklearn-iris-predictor:80/proxy"
        resp = requests.post(f"{base}/v1/models/sklearn-iris:predict", json=SAMPLE, timeout=10)
        assert resp.status_code == 200 and resp.json() == {"predictions": [1, 1]}
        resp = requests.post(f"{base}/v2/models/sklearn-iris/infer", json=SAMPLE_V2, timeout=10)
        assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == [1, 1]


def test_s3_without_credentials_fails_in_the_storage_initializer(seed_twin):
    twin, api, isvcs = seed_twin
    isvcs.create(body=_isvc("s3-model", {"sklearn": {"storageUri": "s3://bucket/model"}}), namespace=NS)
    twin.settle()
    obj = isvcs.get(name="s3-model", namespace=NS).to_dict()
    predictor = _conditions(obj)["PredictorReady"]
    assert predictor["status"] == "False" and predictor["reason"] == "RevisionFailed"
    assert "NoCredentialsError" in predictor["message"]
    assert obj["status"]["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    core = client.CoreV1Api(api)
    (pod,) = core.list_namespaced_pod(NS, label_selector="serving.kserve.io/inferenceservice=s3-model").items
    assert pod.status.phase == "Pending"
    terminated = pod.status.init_container_statuses[0].state.terminated
    assert terminated.reason == "Error" and terminated.exit_code == 1
    assert "NoCredentialsError" in core.read_namespaced_pod_log(pod.metadata.name, NS,
                                                                container="storage-initializer")
    assert not twin.model_servers() or all(p.model_name != "s3-model" for p in twin.model_servers())
    isvcs.delete(name="s3-model", namespace=NS)


def test_unsupported_model_format(seed_twin):
    twin, _, isvcs = seed_twin
    isvcs.create(body=_isvc("xgb", {"model": {"modelFormat": {"name": "xgboost"}, "storageUri": URI}}),
                 namespace=NS)
    twin.settle()
    predictor = _conditions(isvcs.get(name="xgb", namespace=NS).to_dict())["PredictorReady"]
    assert predictor["status"] == "False" and predictor["reason"] == "NoSupportingRuntime"
    isvcs.delete(name="xgb", namespace=NS)


def test_cluster_local_url_without_the_config_domain_patch():
    """Knative without the example.com domain makes routes cluster-local; the twin does not route them."""
    with Twin(Profile.load("seed"), faults=["isvc-stuck"]) as twin:
        kserve = twin.kserve
        twin.store.patch("v1", "ConfigMap", "config-domain", "knative-serving", {"data": {"example.com": None}})
        twin.settle()
        isvc = {"metadata": {"name": "m", "namespace": "default"}}
        names = kserve.names(isvc, "Serverless")
        assert names["domain"] == "svc.cluster.local" and not names["routed"]
