"""Autoscaling: an InferenceService with its own minReplicas, maxReplicas, scaleMetric and scaleTarget has them in
force where the mode's autoscaler reads them (Knative's PodAutoscaler, or the HorizontalPodAutoscaler of Standard
mode), and the sign-off records the cluster's autoscaler settings; in Serverless mode an idle InferenceService with
minReplicas 0 loses its last replica within Knative's configured window and grace period, and a request then
cold-starts it."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import allure
import pytest

from stack import autoscaling, checks
from stack.autoscaling import AutoscalingSpec, ScaleToZero
from stack.failures import Category, expect
from stack.deadline import Deadline
from stack.wait import wait_for
from suites.acceptance.iris import V1_INPUT, Predictor, deploy_and_wait, isvc_manifest

pytestmark = [pytest.mark.area("autoscaling", story="autoscaling", feature="kserve"),
              pytest.mark.severity("normal"), pytest.mark.needs("stack")]
SCALED = "sklearn-iris-scaling"
ZERO = "sklearn-iris-zero"
LOADED = "sklearn-iris-load"
# The bounded load: this many callers at once, at most LOAD_REQUESTS calls, for as long as the scale-out may take,
# against a per-pod concurrency target of 1 with at most 3 replicas.
LOAD_SPEC = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="concurrency", target=1)
LOAD_CALLERS, LOAD_REQUESTS = 6, 5000
# Each scaling wait is what Knative's own settings make it (stack.autoscaling: windows, grace, retention, ticks,
# queue-proxy's drain, never scaled: they are the cluster's) plus this slack for the Pods' own time, scaled by
# --timeout-scale, never below MIN_SLACK.
IDLE_SLACK, MIN_SLACK = 60.0, 30.0
# A cold start waits for a Pod to be scheduled, its model downloaded and its server up: at least this long, whatever
# --timeout-scale makes of the predict budget.
MIN_COLD_START = 60.0
# Bounds a real cluster can hold without load: one replica stays, up to three may come.
SERVERLESS_SPEC = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="concurrency", target=5)
STANDARD_SPEC = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="cpu", target=60)


def _config_autoscaler(kube) -> dict:
    """Knative's cluster-wide autoscaler settings (empty where the ConfigMap is absent: Knative's defaults apply)."""
    config = kube.get("v1", "ConfigMap", "config-autoscaler", "knative-serving")
    return (config or {}).get("data") or {}


def _pod_autoscaler(kube, ns: str, name: str) -> dict:
    """The latest revision's Knative PodAutoscaler. Knative makes it with the Revision, so an InferenceService that
    is Ready without one will not get one by waiting: nothing scales it, and that fails at once."""
    found, _ = kube.list(autoscaling.PA_API, autoscaling.PA_KIND, ns,
                         label_selector=f"serving.kserve.io/inferenceservice={name}")
    expect(found, Category.AUTOSCALING, f"Knative made no PodAutoscaler for {ns}/{name}: nothing scales it")
    return max(found, key=lambda o: o["metadata"]["creationTimestamp"])


def _scaled(profile, namespace: str, selector: str, what: str, **bounds) -> checks.Check:
    """The replicas an autoscaler's work leaves, watched with Knative's workloads: a Knative component in a crash
    loop or unable to pull ends the wait at once (it would not scale anything), instead of at its budget."""
    scaled = checks.pods_scaled(namespace, selector, name=what, **bounds)
    knative = profile.components.get("knative")
    return checks.while_running(scaled, checks.workloads(knative.workloads, name="Knative Serving")) if knative \
        else scaled


@pytest.mark.criteria("AC-AUTOSCALING")
@allure.title("An InferenceService's minReplicas, maxReplicas and scale target are in force in its autoscaler")
def test_autoscaling_follows_the_inference_service(profile, kube, stack, test_namespace, deadline, diagnostics,
                                                   evidence):
    ns = test_namespace("scaling")
    diagnostics.namespace(ns)
    serverless = profile.serverless
    spec = SERVERLESS_SPEC if serverless else STANDARD_SPEC
    manifest = isvc_manifest(profile, ns, name=SCALED)
    manifest["spec"]["predictor"].update(spec.predictor_fields())
    deploy_and_wait(kube, profile, ns, manifest, deadline("inference_service"))
    if serverless:
        evidence.add("Knative autoscaler settings (config-autoscaler)",
                     autoscaling.knative_settings(_config_autoscaler(kube)))
        pa = _pod_autoscaler(kube, ns, SCALED)
        problems = autoscaling.serverless_problems(pa, spec)
        where = f"PodAutoscaler {ns}/{pa['metadata']['name']}"
        seen = {k: v for k, v in (pa["metadata"].get("annotations") or {}).items()
                if k.startswith(autoscaling.KNATIVE_AUTOSCALING)}
    else:
        name = f"{SCALED}-predictor"
        hpa = kube.get(autoscaling.HPA_API, autoscaling.HPA_KIND, name, ns)
        expect(hpa is not None, Category.AUTOSCALING, f"KServe made no HorizontalPodAutoscaler {ns}/{name}")
        problems = autoscaling.hpa_problems(hpa, spec, name)
        where = f"HorizontalPodAutoscaler {ns}/{name}"
        seen = {k: hpa["spec"].get(k) for k in ("minReplicas", "maxReplicas", "metrics", "scaleTargetRef")}
    evidence.add("autoscaling in force", {"InferenceService": f"{ns}/{SCALED}", "asked": spec.predictor_fields(),
                                          "autoscaler": where, "found": seen})
    expect(not problems, Category.AUTOSCALING, f"{where}: " + "; ".join(problems))


@pytest.mark.criteria("AC-SCALE-TO-ZERO")
@allure.title("An idle InferenceService with minReplicas 0 scales to zero, and a request cold-starts it")
def test_scale_to_zero_and_cold_start(profile, kube, stack, test_namespace, ingress_url, deadline, run_options,
                                      diagnostics, evidence):
    settings = ScaleToZero.from_config(_config_autoscaler(kube))
    expect(settings.enabled, Category.AUTOSCALING, "config-autoscaler has enable-scale-to-zero false: no revision "
                                                   "scales to zero on this cluster")
    ns = test_namespace("zero")
    diagnostics.namespace(ns)
    manifest = isvc_manifest(profile, ns, name=ZERO)
    manifest["spec"]["predictor"]["minReplicas"] = 0
    isvc, _ = deploy_and_wait(kube, profile, ns, manifest, deadline("inference_service"))
    _pod_autoscaler(kube, ns, ZERO)
    path = f"/v1/models/{ZERO}:predict"     # KServe names the model after its InferenceService
    Predictor(kube, profile, ingress_url, isvc, deadline("predict")).post(path, V1_INPUT)   # it served once
    selector = f"serving.kserve.io/inferenceservice={ZERO}"
    replicas = autoscaling.replicas_before_idling(kube.list("v1", "Pod", ns, label_selector=selector)[0],
                                                  f"{ns}/{ZERO}", selector)
    idle_budget = settings.idle_seconds + max(IDLE_SLACK * run_options.timeout_scale, MIN_SLACK)
    started = time.monotonic()
    wait_for(kube, _scaled(profile, ns, selector, f"{ns}/{ZERO} scaled to zero", at_most=0),
             Deadline(idle_budget, "scale to zero"))
    to_zero = time.monotonic() - started
    started = time.monotonic()
    budget = Deadline(max(run_options.budget("predict"), MIN_COLD_START), "cold start")
    body, _ = Predictor(kube, profile, ingress_url, isvc, budget).post(path, V1_INPUT, timeout=budget.remaining())
    cold_start = time.monotonic() - started
    allure.dynamic.parameter("cold_start_seconds", round(cold_start, 2))
    evidence.add("scale to zero and cold start", {
        "InferenceService": f"{ns}/{ZERO} (minReplicas 0)", "replicas before idling": replicas,
        "config-autoscaler": f"enable-scale-to-zero {settings.enabled}, stable-window {settings.stable_window:g} s, "
                             f"scale-to-zero-grace-period {settings.grace_period:g} s, "
                             f"scale-to-zero-pod-retention-period {settings.pod_retention:g} s",
        "last replica gone after": f"{to_zero:.1f} s (allowed {idle_budget:.0f} s: stable window, grace, retention, "
                                   f"a tick, queue-proxy's {autoscaling.QUEUE_PROXY_DRAIN_SECONDS:g} s drain, "
                                   f"and slack)",
        "cold start (first predict at zero)": f"{cold_start:.2f} s", "answer": body})


class BoundedLoad:
    """LOAD_CALLERS parallel predict loops, stopped when the with-block ends, at the request cap or after `seconds`."""

    def __init__(self, predictor: Predictor, path: str, seconds: float):
        self.predictor, self.path = predictor, path
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds      # the time cap, whatever the caller waits for
        self.pool = ThreadPoolExecutor(LOAD_CALLERS, thread_name_prefix="load")

    def _caller(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.sent >= LOAD_REQUESTS:
                    return
                self.sent += 1
            try:
                self.predictor.post(self.path, V1_INPUT)
            except Exception as e:  # noqa: BLE001 - every failed call is counted and reported, none is retried here
                with self.lock:
                    self.failed += 1
                    self.errors.append(str(e)[:200])

    def __enter__(self) -> "BoundedLoad":
        for _ in range(LOAD_CALLERS):
            self.pool.submit(self._caller)
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.pool.shutdown(wait=True)


@pytest.mark.criteria("AC-SCALE-OUT")
@allure.title("Under a bounded parallel load, an InferenceService's replicas rise above one and fall back")
def test_replicas_rise_under_load_and_fall_back(profile, kube, stack, test_namespace, ingress_url, deadline,
                                                run_options, diagnostics, evidence):
    ns = test_namespace("load")
    diagnostics.namespace(ns)
    manifest = isvc_manifest(profile, ns, name=LOADED)
    manifest["spec"]["predictor"].update(LOAD_SPEC.predictor_fields())
    isvc, _ = deploy_and_wait(kube, profile, ns, manifest, deadline("inference_service"))
    pa = _pod_autoscaler(kube, ns, LOADED)
    selector = f"serving.kserve.io/inferenceservice={LOADED}"
    windows = autoscaling.ScalingWindows.from_settings(_config_autoscaler(kube), pa["metadata"].get("annotations"))
    first = kube.list("v1", "Pod", ns, label_selector=selector)[0]
    replica_start = autoscaling.replica_start_seconds(first)
    expect(replica_start is not None, Category.AUTOSCALING,
           f"no Ready Pod of {ns}/{LOADED} carries the label {selector}, though it is Ready: its scaling cannot be seen")
    slack = max(IDLE_SLACK * run_options.timeout_scale, MIN_SLACK)
    out_budget = windows.scale_out_seconds(replica_start) + slack
    predictor = Predictor(kube, profile, ingress_url, isvc, deadline("predict"))
    started = time.monotonic()
    with BoundedLoad(predictor, f"/v1/models/{LOADED}:predict", out_budget) as load:
        wait_for(kube, _scaled(profile, ns, selector, f"{ns}/{LOADED} scaled out", at_least=2),
                 Deadline(out_budget, "scale out under load"))
        scaled_out = time.monotonic() - started
    peak = len(kube.list("v1", "Pod", ns, label_selector=selector)[0])
    started = time.monotonic()
    in_budget = windows.scale_in_seconds() + slack
    wait_for(kube, _scaled(profile, ns, selector, f"{ns}/{LOADED} scaled in", at_most=LOAD_SPEC.min_replicas),
             Deadline(in_budget, "scale in after the load"))
    scaled_in = time.monotonic() - started
    evidence.add("scale out and back", {
        "InferenceService": f"{ns}/{LOADED}", "asked": LOAD_SPEC.predictor_fields(),
        "load": f"{LOAD_CALLERS} parallel callers, {load.sent} calls (cap {LOAD_REQUESTS}, {out_budget:.0f} s)",
        "failed calls": load.failed, "more than one replica after": f"{scaled_out:.1f} s",
        "pods at the end of the load": peak,
        "back to minReplicas after": f"{scaled_in:.1f} s",
        "budgets (Knative's windows + slack)": {
            "scale out": f"{out_budget:.0f} s = panic window {windows.panic_window:g} s + tick "
                         f"{autoscaling.AUTOSCALER_TICK_SECONDS:g} s + the first replica's start {replica_start:.0f} s "
                         f"+ slack {slack:.0f} s",
            "scale in": f"{in_budget:.0f} s = stable window {windows.stable_window:g} s (panic mode holds) + "
                        f"scale-down-delay {windows.scale_down_delay:g} s + tick "
                        f"{autoscaling.AUTOSCALER_TICK_SECONDS:g} s + queue-proxy drain "
                        f"{autoscaling.QUEUE_PROXY_DRAIN_SECONDS:g} s + slack {slack:.0f} s"}})
    expect(load.failed == 0, Category.AUTOSCALING,
           f"{load.failed} of {load.sent} calls failed while {LOADED} scaled out: {load.errors[:3]}")
