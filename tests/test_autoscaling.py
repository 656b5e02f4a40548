"""What AC-AUTOSCALING asks of the autoscaler objects, on the shapes upstream's controllers write: a PodAutoscaler
as Knative's MakePA copies the Revision's annotations, an HPA as KServe's createHPA builds it."""
from __future__ import annotations

from stack.autoscaling import AutoscalingSpec, hpa_problems, knative_settings, serverless_problems

SERVERLESS = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="concurrency", target=5)
STANDARD = AutoscalingSpec(min_replicas=1, max_replicas=3, metric="cpu", target=60)


def pod_autoscaler(**annotations: str) -> dict:
    base = {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev", "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/max-scale": "3", "autoscaling.knative.dev/metric": "concurrency",
            "autoscaling.knative.dev/target": "5"}
    return {"metadata": {"name": "iris-predictor-00001", "annotations": {**base, **annotations}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "iris-predictor-00001-deployment"}}}


def hpa(min_replicas=1, max_replicas=3, utilization=60, resource="cpu") -> dict:
    return {"spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-predictor"},
                     "metrics": [{"type": "Resource", "resource": {"name": resource, "target": {
                         "type": "Utilization", "averageUtilization": utilization}}}]}}


def test_a_pod_autoscaler_holding_the_spec_passes_and_each_difference_is_named():
    assert serverless_problems(pod_autoscaler(), SERVERLESS) == []
    problems = serverless_problems(pod_autoscaler(**{"autoscaling.knative.dev/max-scale": "10"}), SERVERLESS)
    assert problems == ["autoscaling.knative.dev/max-scale is '10', expected '3'"]
    bare = {"metadata": {"annotations": {}}, "spec": {}}
    assert len(serverless_problems(bare, SERVERLESS)) == 6       # five annotations and the scale target


def test_an_hpa_holding_the_spec_passes_and_each_difference_is_named():
    assert hpa_problems(hpa(), STANDARD, "iris-predictor") == []
    assert hpa_problems(hpa(max_replicas=1), STANDARD, "iris-predictor") == ["maxReplicas is 1, expected 3"]
    [problem] = hpa_problems(hpa(utilization=80), STANDARD, "iris-predictor")   # KServe's default, not the spec's
    assert problem.startswith("no cpu metric with averageUtilization 60")
    assert hpa_problems(hpa(), STANDARD, "other") == ["scaleTargetRef is Deployment/iris-predictor, expected "
                                                      "Deployment/other"]


def test_config_autoscaler_settings_are_recorded_as_set_or_as_knatives_default():
    settings = knative_settings({"_example": "...", "stable-window": "30s", "scale-to-zero-grace-period": "10s",
                                 "activator-capacity": "50"})
    assert settings["stable-window"] == "30s (set)" and settings["scale-to-zero-grace-period"] == "10s (set)"
    assert settings["enable-scale-to-zero"] == "true (default)"
    assert settings["activator-capacity"] == "50 (set)" and "_example" not in settings


def test_the_wait_for_zero_first_sees_the_replicas_it_waits_on():
    import pytest
    from stack.autoscaling import replicas_before_idling
    from stack.failures import Category, CheckFailure
    pod = {"metadata": {"name": "iris-zero-00001-deployment-abc"}}
    gone = {"metadata": {"name": "iris-zero-00001-deployment-old", "deletionTimestamp": "2026-12-07T00:00:00Z"}}
    assert replicas_before_idling([pod, gone], "ns/iris-zero", "l=v") == ["iris-zero-00001-deployment-abc"]
    for pods in ([], [gone]):
        with pytest.raises(CheckFailure) as e:
            replicas_before_idling(pods, "ns/iris-zero", "serving.kserve.io/inferenceservice=iris-zero")
        assert e.value.category is Category.AUTOSCALING
        assert "serving.kserve.io/inferenceservice=iris-zero" in str(e.value)


def test_scaling_waits_follow_knatives_windows_with_the_revisions_own_first():
    """Knative 1.11's defaults: a scale-in after a surge takes the stable window (panic mode holds the count), a tick
    and queue-proxy's 30 s drain: 92 s before any slack, which the old fixed 60 s + stable window barely covered."""
    from stack.autoscaling import ScaleToZero, ScalingWindows
    defaults = ScalingWindows.from_settings({"_example": "..."})
    assert (defaults.stable_window, defaults.panic_window, defaults.scale_down_delay) == (60.0, 6.0, 0.0)
    assert defaults.scale_in_seconds() == 92.0
    assert defaults.scale_out_seconds(50.0) == 58.0           # panic window, a tick, a replica's start
    cluster = {"stable-window": "6s", "scale-down-delay": "1m"}
    assert ScalingWindows.from_settings(cluster).scale_in_seconds() == 6 + 60 + 2 + 30
    revision = {"autoscaling.knative.dev/window": "20s", "autoscaling.knative.dev/panic-window-percentage": "50"}
    own = ScalingWindows.from_settings(cluster, revision)
    assert (own.stable_window, own.panic_window, own.scale_down_delay) == (20.0, 10.0, 60.0)
    assert ScaleToZero.from_config({}).idle_seconds == 60 + 30 + 0 + 2 + 30


def test_a_replicas_start_is_read_from_its_pods_creation_to_ready():
    from stack.autoscaling import replica_start_seconds

    def pod(created: str, ready_at: str | None, status: str = "True") -> dict:
        conds = [{"type": "Ready", "status": status, "lastTransitionTime": ready_at}] if ready_at else []
        return {"metadata": {"creationTimestamp": created}, "status": {"conditions": conds}}
    assert replica_start_seconds([pod("2026-12-07T10:00:00Z", "2026-12-07T10:00:48Z"),
                                  pod("2026-12-07T10:01:00Z", "2026-12-07T10:01:20Z")]) == 48.0
    assert replica_start_seconds([pod("2026-12-07T10:00:00Z", None)]) is None
    assert replica_start_seconds([pod("2026-12-07T10:00:00Z", "2026-12-07T10:00:05Z", "False")]) is None
