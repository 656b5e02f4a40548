"""The sklearn Iris InferenceService (the profile's canonical sample) becomes Ready in its own namespace and answers
v1 and v2 predict calls with the expected classes, through the ingress gateway (Host header from status.url) or, in
Standard mode, through the mode's own route to <isvc>-predictor."""
from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import allure
import pytest
import requests

from stack import retry, s3
from stack.checks import ISVC_API, ISVC_KIND, inference_service
from stack.diagnostics import collect
from stack.failures import Category, expect
from stack.redact import register_secret
from stack.wait import Deadline, wait_for

ISVC = (ISVC_API, ISVC_KIND)
NAME = "sklearn-iris"
V1_INPUT = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
V2_INPUT = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
EXPECTED = [1, 1]
SETTLING = {404, 502, 503}   # the gateway's answers while routes settle; nothing else is retried

pytestmark = [pytest.mark.area("inference", story="sklearn Iris InferenceService", feature="kserve"),
              pytest.mark.severity("blocker"), pytest.mark.needs("stack")]
proves_iris = pytest.mark.criteria("AC-IRIS-PREDICT")


def isvc_manifest(profile, namespace: str, storage_uri: str | None = None, service_account: str | None = None) -> dict:
    iris = profile.iris
    predictor: dict = {}
    body: dict = {"storageUri": storage_uri or iris["storage_uri"]}
    if iris.get("resources"):
        body["resources"] = iris["resources"]
    if iris.get("protocol_version"):
        body["protocolVersion"] = iris["protocol_version"]
    if iris["schema"] == "predictor.sklearn":
        predictor["sklearn"] = body
    else:
        body["modelFormat"] = {"name": "sklearn"}
        if iris.get("runtime"):
            body["runtime"] = iris["runtime"]
        predictor["model"] = body
    if service_account:
        predictor["serviceAccountName"] = service_account
    meta = {"name": NAME, "namespace": namespace}
    if iris.get("deployment_mode"):
        meta["annotations"] = {"serving.kserve.io/deploymentMode": iris["deployment_mode"]}
    return {"apiVersion": ISVC[0], "kind": ISVC[1], "metadata": meta, "spec": {"predictor": predictor}}


def deploy_and_wait(kube, namespace: str, manifest: dict, budget: Deadline) -> tuple[dict, float]:
    started = time.monotonic()
    with allure.step(f"apply InferenceService {namespace}/{NAME}"):
        # The KServe webhook may still race (caBundle, endpoints): those signatures only, under the test's deadline.
        retry.call(lambda: kube.apply(manifest, deadline=budget), what="apply InferenceService", layer="apply",
                   is_transient=retry.race_signature, retries=kube.retries, deadline=budget)
    with allure.step("wait for Ready, PredictorReady and IngressReady"):
        snap = wait_for(kube, inference_service(namespace, NAME), budget)
    return snap.get(*ISVC, NAME, namespace), time.monotonic() - started


class Predictor:
    """Calls the model through the profile's route, retrying only while routes settle."""

    def __init__(self, kube, profile, ingress_url: str | None, isvc: dict, budget: Deadline):
        self.kube, self.profile, self.isvc, self.budget = kube, profile, isvc, budget
        self.route = profile.iris["route"]
        self.namespace = isvc["metadata"]["namespace"]
        self.host = urlparse(isvc["status"]["url"]).hostname
        self.base = ingress_url
        if self.route == "ingress-gateway" and not self.base:
            pytest.fail("cannot reach the ingress gateway from here: set KSTACK_INGRESS_URL", pytrace=False)

    def post(self, path: str, payload: dict, evidence=None, what: str = "") -> tuple[dict, float]:
        """The answer and its latency; with `evidence`, the exchange is recorded as `what`."""
        def once():
            started = time.monotonic()
            if self.route == "service-proxy":
                status, text = self.kube.service_proxy(self.namespace, f"{NAME}-predictor", 80, "POST", path, payload)
            else:
                r = requests.post(self.base + path, json=payload, headers={"Host": self.host}, timeout=30)
                status, text = r.status_code, r.text
            if status in SETTLING:
                raise RouteSettling(status, text)
            expect(status == 200, Category.PREDICT, f"predict {path} via {self.route} answered HTTP {status}: {text[:300]}")
            return json.loads(text), time.monotonic() - started
        with allure.step(f"POST {path} via {self.route} (Host {self.host})"):
            body, seconds = retry.call(once, what=f"predict {path}", layer="predict", attempts=12,
                                       deadline=self.budget, retries=self.kube.retries,
                                       is_transient=lambda e: f"gateway answered {e.status}"
                                       if isinstance(e, RouteSettling) else None)
        if evidence is not None:
            via = self.base if self.route == "ingress-gateway" else f"the API server's service proxy to {NAME}-predictor"
            evidence.add(what, {"POST": f"{path} via {self.route} ({via}, Host {self.host})", "request": payload,
                                "response": body, "latency": f"{seconds:.3f} s"})
        return body, seconds


class RouteSettling(Exception):
    def __init__(self, status: int, text: str):
        self.status = status
        super().__init__(f"HTTP {status} while routes settle: {text[:200]}")


@pytest.fixture(scope="module")
def iris(profile, kube, stack, namespace_factory, run_options, phase):
    """The Iris InferenceService, deployed once for this module in a namespace of its own."""
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    factory = namespace_factory()
    ns = factory.make("iris")
    try:
        with phase.over(Deadline(run_options.budget("inference_service"), "inference_service")) as budget:
            isvc, seconds = deploy_and_wait(kube, ns, isvc_manifest(profile, ns), budget)
    except BaseException:
        control_plane = profile.components["kserve"].inventory.get("namespaces", [])
        for att in collect(kube, [ns, *control_plane], [], None):
            allure.attach(att.body, name=att.name, attachment_type=allure.attachment_type.TEXT)
        factory.cleanup(keep=run_options.keep_on_failure)
        raise
    allure.dynamic.parameter("time_to_ready_seconds", round(seconds, 1))
    state = {"isvc": isvc, "ready_seconds": seconds, "namespace": ns, "failed": False}
    yield state
    factory.cleanup(keep=run_options.keep_on_failure and state["failed"])


def _predictor(iris, kube, profile, ingress_url, budget: Deadline):
    return Predictor(kube, profile, ingress_url, iris["isvc"], budget)


@proves_iris
@allure.title("The Iris InferenceService becomes Ready outside the control plane's namespace")
def test_iris_ready(iris, diagnostics, evidence):
    """Ready, PredictorReady and IngressReady, with a URL, in a namespace that is not the control plane's."""
    diagnostics.namespace(iris["namespace"])
    url = iris["isvc"]["status"]["url"]
    expect(url.startswith("http"), Category.PREDICT, f"status.url is {url!r}")
    expect(iris["namespace"] != "kserve", Category.PREDICT, "the InferenceService runs in the control plane's namespace")
    conditions = {c["type"]: c.get("status") for c in iris["isvc"]["status"].get("conditions", [])}
    evidence.add("InferenceService Ready", {"url": url, "namespace": iris["namespace"], "conditions": conditions,
                                            "time to Ready": f"{iris['ready_seconds']:.1f} s"})


@proves_iris
@allure.title("Iris answers a v1 predict with the expected classes")
def test_iris_predict_v1(iris, kube, profile, ingress_url, deadline, phase, diagnostics, evidence):
    diagnostics.namespace(iris["namespace"])
    iris["failed"] = True
    with phase.over(deadline("predict")) as budget:   # the whole call, its retries while routes settle included
        predictor = _predictor(iris, kube, profile, ingress_url, budget)
        body, seconds = predictor.post(f"/v1/models/{NAME}:predict", V1_INPUT, evidence, "predict v1")
    allure.dynamic.parameter("predict_latency_seconds", round(seconds, 3))
    expect(body.get("predictions") == EXPECTED, Category.PREDICT,
           f"v1 predictions are {body.get('predictions')}, expected {EXPECTED}")
    iris["failed"] = False


@proves_iris
@allure.title("Iris answers a v2 infer with the expected classes")
def test_iris_predict_v2(iris, kube, profile, ingress_url, deadline, diagnostics, evidence):
    if not profile.iris.get("v2"):
        pytest.skip("the profile does not check the v2 protocol")
    diagnostics.namespace(iris["namespace"])
    iris["failed"] = True
    predictor = _predictor(iris, kube, profile, ingress_url, deadline("predict"))
    body, seconds = predictor.post(f"/v2/models/{NAME}/infer", V2_INPUT, evidence, "predict v2")
    outputs = body.get("outputs") or [{}]
    expect(outputs[0].get("data") == EXPECTED, Category.PREDICT,
           f"v2 outputs[0].data is {outputs[0].get('data')}, expected {EXPECTED}")
    iris["failed"] = False


@pytest.mark.criteria("AC-IRIS-S3")
@allure.title("Iris loads its model from an S3-compatible store and answers a v1 predict")
def test_iris_from_s3(profile, kube, stack, cluster, ingress_url, test_namespace, deadline, diagnostics, evidence):
    """The first user's next step: the model from a DigitalOcean Space (any S3-compatible store), read with the
    Secret and ServiceAccount KServe documents for S3. Optional: NOT RUN without KSTACK_S3_* unless the profile
    requires AC-IRIS-S3; the twin hands over its own S3 server."""
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    store = s3.settings_for(cluster.s3)
    if store is None:
        if "AC-IRIS-S3" in profile.required_criteria:
            pytest.fail(f"the profile requires AC-IRIS-S3 and no S3 store was given: set {', '.join(s3.missing_env())}",
                        pytrace=False)
        pytest.skip(f"S3 settings not given ({', '.join(s3.missing_env())})")
    for value in store.secrets():
        register_secret(value)
    ns = test_namespace("iris-s3")
    diagnostics.namespace(ns)
    for obj in store.objects(ns):
        kube.apply(obj)
    evidence.add("S3 store", {"endpoint": store.endpoint, "region": store.region, "uri": store.uri,
                              "https": store.use_https, "credentials": f"Secret {ns}/{s3.SECRET_NAME}"})
    budget = deadline("inference_service")
    isvc, _ = deploy_and_wait(kube, ns, isvc_manifest(profile, ns, store.uri, s3.SECRET_NAME), budget)
    predictor = Predictor(kube, profile, ingress_url, isvc, deadline("predict"))
    body, _ = predictor.post(f"/v1/models/{NAME}:predict", V1_INPUT, evidence, "predict v1 (model from S3)")
    expect(body.get("predictions") == EXPECTED, Category.PREDICT,
           f"v1 predictions are {body.get('predictions')}, expected {EXPECTED}")
