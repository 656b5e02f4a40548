"""The sklearn Iris InferenceService that the inference, monitoring and security checks share: its manifest from the
profile, its deployment and wait, and the predict calls through the profile's route."""
from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import allure
import pytest
import requests

from stack import retry
from stack.blocking import require_deployed
from stack.checks import ISVC_API, ISVC_KIND, inference_service, while_running, workloads
from stack.failures import Category, Unanswered, expect
from stack.deadline import Deadline
from stack.wait import wait_for

ISVC = (ISVC_API, ISVC_KIND)
NAME = "sklearn-iris"
V1_INPUT = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
V2_INPUT = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
EXPECTED = [1, 1]
SETTLING = {404, 502, 503}   # the gateway's answers while routes settle; nothing else is retried


def running_predictor_pods(kube, namespace: str, name: str = NAME) -> list[dict]:
    """The InferenceService's predictor Pods that are Running and not being deleted."""
    pods, _ = kube.list("v1", "Pod", namespace, label_selector=f"serving.kserve.io/inferenceservice={name}")
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def isvc_manifest(profile, namespace: str, storage_uri: str | None = None, service_account: str | None = None,
                  name: str = NAME) -> dict:
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
    meta = {"name": name, "namespace": namespace}
    if iris.get("deployment_mode"):
        meta["annotations"] = {"serving.kserve.io/deploymentMode": iris["deployment_mode"]}
    return {"apiVersion": ISVC[0], "kind": ISVC[1], "metadata": meta, "spec": {"predictor": predictor}}


def deploy_and_wait(kube, profile, namespace: str, manifest: dict, budget: Deadline) -> tuple[dict, float]:
    """Apply an InferenceService and wait for it to be Ready. A model needs the stack's data path: a workload of it
    absent or scaled down (an ingress gateway never installed) fails it before it is applied, and one that meets a
    terminal state while it is awaited (a controller in a crash loop) ends the wait at once; either is then filed as
    blocked by that component, not after the wait's budget."""
    started = time.monotonic()
    name = manifest["metadata"]["name"]
    require_deployed(kube, profile, f"InferenceService {namespace}/{name}")
    with allure.step(f"apply InferenceService {namespace}/{name}"):
        # The KServe webhook may still race (caBundle, endpoints): those signatures only, under the test's deadline.
        retry.call(lambda: kube.apply(manifest, deadline=budget), what="apply InferenceService", layer="apply",
                   is_transient=retry.race_signature, retries=kube.retries, deadline=budget)
    data_path = [w for comp in profile.install_order() for w in comp.workloads if w.data_path]
    ready = inference_service(namespace, name)
    with allure.step("wait for Ready, PredictorReady and IngressReady"):
        snap = wait_for(kube, while_running(ready, workloads(data_path, name="the stack's data path")) if data_path
                        else ready, budget)
    return snap.get(*ISVC, name, namespace), time.monotonic() - started


class Predictor:
    """Calls the model through the profile's route, retrying only while routes settle."""

    def __init__(self, kube, profile, ingress_url: str | None, isvc: dict, budget: Deadline):
        self.kube, self.profile, self.isvc, self.budget = kube, profile, isvc, budget
        self.route = profile.iris["route"]
        self.namespace, self.name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        self.host = urlparse(isvc["status"]["url"]).hostname
        self.base = ingress_url
        if self.route == "ingress-gateway" and not self.base:
            pytest.fail("cannot reach the ingress gateway from here: set KSTACK_INGRESS_URL", pytrace=False)

    def post(self, path: str, payload: dict, evidence=None, what: str = "", timeout: float = 30) -> tuple[dict, float]:
        """The answer and its latency; with `evidence`, the exchange is recorded as `what`. `timeout`: how long one
        call may wait for its answer (a cold start waits for a replica to come up)."""
        def once():
            started = time.monotonic()
            if self.route == "service-proxy":
                status, text = self.kube.service_proxy(self.namespace, f"{self.name}-predictor", 80, "POST", path,
                                                       payload, timeout=timeout)
            else:
                try:
                    r = requests.post(self.base + path, json=payload, headers={"Host": self.host}, timeout=timeout)
                except requests.RequestException as e:      # no answer at all: the data path's, not a test's
                    raise Unanswered(f"predict {path} via {self.route} ({self.base}): no answer within "
                                     f"{timeout:.0f} s: {e}", Category.PREDICT) from None
                status, text = r.status_code, r.text
            if status in SETTLING:
                raise RouteSettling(status, text)
            expect(status == 200, Category.PREDICT, f"predict {path} via {self.route} answered HTTP {status}: {text[:300]}")
            return json.loads(text), time.monotonic() - started
        with allure.step(f"POST {path} via {self.route} (Host {self.host})"):
            started = time.monotonic()
            try:
                body, seconds = retry.call(once, what=f"predict {path}", layer="predict", attempts=12,
                                           deadline=self.budget, retries=self.kube.retries,
                                           is_transient=lambda e: f"gateway answered {e.status}"
                                           if isinstance(e, RouteSettling) else None)
            except RouteSettling as e:
                # Routes that never settle are the data path's failure (no route, no healthy upstream), not a test's.
                raise Unanswered(f"predict {path} via {self.route}: the gateway still answered HTTP {e.status} after "
                                 f"{time.monotonic() - started:.0f} s of retries: {e.text}", Category.PREDICT) from None
        if evidence is not None:
            via = self.base if self.route == "ingress-gateway" else f"the API server's service proxy to {self.name}-predictor"
            evidence.add(what, {"POST": f"{path} via {self.route} ({via}, Host {self.host})", "request": payload,
                                "response": body, "latency": f"{seconds:.3f} s"})
        return body, seconds


class RouteSettling(Exception):
    """An answer of the gateway while routes settle (SETTLING): retried within the predict budget."""

    def __init__(self, status: int, text: str):
        self.status, self.text = status, text[:200]
        super().__init__(f"HTTP {status} while routes settle: {self.text}")
