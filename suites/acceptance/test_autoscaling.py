"""Autoscaling: an InferenceService with its own minReplicas, maxReplicas, scaleMetric and scaleTarget has them in
force where the mode's autoscaler reads them (Knative's PodAutoscaler, or the HorizontalPodAutoscaler of Standard
mode), and the sign-off records the cluster's autoscaler settings."""
from __future__ import annotations

import allure
import pytest

from stack import autoscaling
from stack.autoscaling import AutoscalingSpec
from stack.failures import Category, expect
from suites.acceptance.iris import deploy_and_wait, isvc_manifest

pytestmark = [pytest.mark.area("autoscaling", story="autoscaling", feature="kserve"),
              pytest.mark.severity("normal"), pytest.mark.needs("stack")]
SCALED = "sklearn-iris-scaling"
# Bounds a real cluster can hold without load: one replica stays, up to three may come.
SERVERLESS_SPEC = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="concurrency", target=5)
STANDARD_SPEC = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="cpu", target=60)


@pytest.mark.criteria("AC-AUTOSCALING")
@allure.title("An InferenceService's minReplicas, maxReplicas and scale target are in force in its autoscaler")
def test_autoscaling_follows_the_inference_service(profile, kube, stack, test_namespace, deadline, diagnostics,
                                                   evidence):
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    ns = test_namespace("scaling")
    diagnostics.namespace(ns)
    serverless = profile.iris.get("deployment_mode") in autoscaling.SERVERLESS_MODES
    spec = SERVERLESS_SPEC if serverless else STANDARD_SPEC
    manifest = isvc_manifest(profile, ns, name=SCALED)
    manifest["spec"]["predictor"].update(spec.predictor_fields())
    deploy_and_wait(kube, ns, manifest, deadline("inference_service"))
    if serverless:
        config = kube.get("v1", "ConfigMap", "config-autoscaler", "knative-serving")
        evidence.add("Knative autoscaler settings (config-autoscaler)",
                     autoscaling.knative_settings((config or {}).get("data")))
        found, _ = kube.list(autoscaling.PA_API, autoscaling.PA_KIND, ns,
                             label_selector=f"serving.kserve.io/inferenceservice={SCALED}")
        expect(found, Category.AUTOSCALING, f"Knative made no PodAutoscaler for {ns}/{SCALED}")
        pa = max(found, key=lambda o: o["metadata"]["creationTimestamp"])   # the latest revision's
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
