"""The sklearn Iris InferenceService (the profile's canonical sample) becomes Ready in its own namespace and answers
v1 and v2 predict calls with the expected classes, through the ingress gateway (Host header from status.url) or, in
Standard mode, through the mode's own route to <isvc>-predictor."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import allure
import pytest
import requests

from fixtures.cluster import discover_ingress_url
from fixtures.namespaces import NamespaceFactory
from fixtures.plugin import handoff
from stack import retry
from stack.diagnostics import collect
from stack.readiness import condition_true, pods_summary
from stack.redact import register_secret
from stack.wait import Deadline, Source, Status, wait_for

ISVC = ("serving.kserve.io/v1beta1", "InferenceService")
NAME = "sklearn-iris"
V1_INPUT = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
V2_INPUT = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
EXPECTED = [1, 1]
SETTLING = {404, 502, 503}   # the gateway's answers while routes settle; nothing else is retried
S3_ENV = ("KSTACK_S3_ENDPOINT", "KSTACK_S3_REGION", "KSTACK_S3_URI", "KSTACK_S3_ACCESS_KEY_ID", "KSTACK_S3_SECRET_ACCESS_KEY")

pytestmark = [pytest.mark.area("inference", story="sklearn Iris InferenceService", feature="kserve"),
              pytest.mark.severity("blocker")]
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


def isvc_check(namespace: str):
    def check(snap) -> Status:
        isvc = next(iter(snap.items(0)), None)
        problems, terminal = pods_summary(snap.items(1))
        if isvc is None:
            return Status(False, f"inferenceservice {namespace}/{NAME} absent")
        conds = {t: condition_true(isvc, t) for t in ("PredictorReady", "IngressReady", "Ready")}
        url = (isvc.get("status") or {}).get("url")
        done = all(conds.values()) and bool(url)
        details = [c for c in (isvc.get("status") or {}).get("conditions", []) if c.get("status") != "True"]
        text = f"inferenceservice {namespace}/{NAME}: " + ", ".join(f"{k}={v}" for k, v in conds.items())
        if details:
            text += "; " + "; ".join(f"{c['type']}: {c.get('reason', '')} {c.get('message', '')}".strip() for c in details)
        if problems:
            text += f"; pods: {problems}"
        return Status(done, text, None if done else (text if terminal else None))
    return check


def deploy_and_wait(kube, namespace: str, manifest: dict, budget: Deadline) -> tuple[dict, float]:
    started = time.monotonic()
    with allure.step(f"apply InferenceService {namespace}/{NAME}"):
        retry.call(lambda: kube.apply(manifest), what="apply InferenceService", is_transient=retry.is_install_race,
                   deadline=budget)
    with allure.step("wait for Ready, PredictorReady and IngressReady"):
        sources = [Source(*ISVC, namespace, field_selector=f"metadata.name={NAME}"), Source("v1", "Pod", namespace)]
        snap = wait_for(kube, sources, isvc_check(namespace), deadline=budget,
                        describe=f"inferenceservice {namespace}/{NAME} Ready")
    return snap.items(0)[0], time.monotonic() - started


class Predictor:
    """Calls the model through the profile's route, retrying only while routes settle."""

    def __init__(self, kube, profile, cluster, isvc: dict, budget: Deadline):
        self.kube, self.profile, self.isvc, self.budget = kube, profile, isvc, budget
        self.route = profile.iris["route"]
        self.namespace = isvc["metadata"]["namespace"]
        self.host = urlparse(isvc["status"]["url"]).hostname
        self.base = cluster.ingress_url
        if self.route == "ingress-gateway" and not self.base:
            self.base = discover_ingress_url(kube, profile.gateway)
            if not self.base:
                pytest.fail("cannot reach the ingress gateway from here: set KSTACK_INGRESS_URL", pytrace=False)

    def post(self, path: str, payload: dict) -> tuple[dict, float]:
        def once():
            started = time.monotonic()
            if self.route == "service-proxy":
                status, text = self.kube.service_proxy(self.namespace, f"{NAME}-predictor", 80, "POST", path, payload)
            else:
                r = requests.post(self.base + path, json=payload, headers={"Host": self.host}, timeout=30)
                status, text = r.status_code, r.text
            if status in SETTLING:
                raise RouteSettling(status, text)
            assert status == 200, f"predict {path} via {self.route} answered HTTP {status}: {text[:300]}"
            return json.loads(text), time.monotonic() - started
        with allure.step(f"POST {path} via {self.route} (Host {self.host})"):
            return retry.call(once, what=f"predict {path}", attempts=12, deadline=self.budget,
                              is_transient=lambda e: f"gateway answered {e.status}" if isinstance(e, RouteSettling) else None)


class RouteSettling(Exception):
    def __init__(self, status: int, text: str):
        self.status = status
        super().__init__(f"HTTP {status} while routes settle: {text[:200]}")


@pytest.fixture(scope="module")
def iris(request, pytestconfig, profile, kube, stack, cluster, run_options):
    """The Iris InferenceService, deployed once for this module in a namespace of its own."""
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    factory = NamespaceFactory(kube, Path(handoff(pytestconfig)["workdir"]).name)
    ns = factory.make("iris")
    budget = Deadline(run_options.budget("inference_service"), "inference_service")
    try:
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


def _predictor(iris, kube, profile, cluster, deadline):
    return Predictor(kube, profile, cluster, iris["isvc"], deadline("predict"))


@proves_iris
def test_iris_ready(iris, phase, diagnostics):
    """Ready, PredictorReady and IngressReady, with a URL, in a namespace that is not the control plane's."""
    diagnostics.namespace(iris["namespace"])
    phase("inference_service", iris["ready_seconds"])
    url = iris["isvc"]["status"]["url"]
    assert url.startswith("http"), f"status.url is {url!r}"
    assert iris["namespace"] != "kserve"


@proves_iris
def test_iris_predict_v1(iris, kube, profile, cluster, deadline, phase, diagnostics, request):
    diagnostics.namespace(iris["namespace"])
    iris["failed"] = True
    body, seconds = _predictor(iris, kube, profile, cluster, deadline).post(f"/v1/models/{NAME}:predict", V1_INPUT)
    phase("predict", seconds)
    allure.dynamic.parameter("predict_latency_seconds", round(seconds, 3))
    assert body.get("predictions") == EXPECTED, f"v1 predictions are {body.get('predictions')}, expected {EXPECTED}"
    iris["failed"] = False


@proves_iris
def test_iris_predict_v2(iris, kube, profile, cluster, deadline, diagnostics):
    if not profile.iris.get("v2"):
        pytest.skip("the profile does not check the v2 protocol")
    diagnostics.namespace(iris["namespace"])
    iris["failed"] = True
    body, _ = _predictor(iris, kube, profile, cluster, deadline).post(f"/v2/models/{NAME}/infer", V2_INPUT)
    outputs = body.get("outputs") or [{}]
    assert outputs[0].get("data") == EXPECTED, f"v2 outputs[0].data is {outputs[0].get('data')}, expected {EXPECTED}"
    iris["failed"] = False


# Optional: no criterion depends on it, so a skip (no S3 settings) never makes the sign-off incomplete.
def test_iris_from_s3(profile, kube, stack, cluster, test_namespace, deadline, diagnostics):
    """Variant loading the model from an S3-compatible store (DigitalOcean Spaces for the first user), through a
    Secret and ServiceAccount with KServe's s3 annotations. Runs only when KSTACK_S3_* are set."""
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    missing = [v for v in S3_ENV if not os.environ.get(v)]
    if missing:
        pytest.skip(f"S3 settings not given ({', '.join(missing)})")
    key_id, secret_key = os.environ["KSTACK_S3_ACCESS_KEY_ID"], os.environ["KSTACK_S3_SECRET_ACCESS_KEY"]
    register_secret(key_id)
    register_secret(secret_key)
    ns = test_namespace("iris-s3")
    diagnostics.namespace(ns)
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "kstack-s3", "namespace": ns, "annotations": {
                    "serving.kserve.io/s3-endpoint": os.environ["KSTACK_S3_ENDPOINT"],
                    "serving.kserve.io/s3-region": os.environ["KSTACK_S3_REGION"],
                    "serving.kserve.io/s3-usehttps": os.environ.get("KSTACK_S3_USEHTTPS", "1")}},
                "stringData": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret_key}})
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kstack-s3", "namespace": ns},
                "secrets": [{"name": "kstack-s3"}]})
    budget = deadline("inference_service")
    isvc, _ = deploy_and_wait(kube, ns, isvc_manifest(profile, ns, os.environ["KSTACK_S3_URI"], "kstack-s3"), budget)
    body, _ = Predictor(kube, profile, cluster, isvc, deadline("predict")).post(f"/v1/models/{NAME}:predict", V1_INPUT)
    assert body.get("predictions") == EXPECTED, f"v1 predictions are {body.get('predictions')}, expected {EXPECTED}"
