"""Autoscaling of an InferenceService, as the controllers put it in force, read back from the API:

- Serverless (Knative): KServe writes the predictor's minReplicas, maxReplicas, scaleTarget and scaleMetric as
  `autoscaling.knative.dev/{min-scale,max-scale,target,metric}` on the Knative Service's template, with class
  kpa.autoscaling.knative.dev (reconcilers/knative/ksvc_reconciler.go @v0.11.0; the same keys from
  pkg/controller/v1alpha1/utils SetAutoScalingAnnotations @v0.20.0); Knative copies the Revision's
  annotations onto the Revision's PodAutoscaler (pkg/reconciler/revision/resources/pa.go MakePA @v0.38.0), which its
  autoscaler obeys. The cluster-wide settings are config-autoscaler's (knative-serving).
- Standard (RawDeployment): KServe creates a HorizontalPodAutoscaler `<isvc>-predictor` (reconcilers/hpa/
  hpa_reconciler.go createHPA @v0.20.0): minReplicas (at least 1), maxReplicas (at least min), one Resource metric
  with the scaleTarget as averageUtilization (cpu by default).

    AutoscalingSpec                    what the InferenceService asks for
    serverless_problems(pa, spec)      how a PodAutoscaler differs from it
    hpa_problems(hpa, spec)            how an HPA differs from it
    knative_settings(data)             config-autoscaler's settings, each as set or as Knative's default
    ScalingWindows                     how long Knative takes to scale a revision out and back in, from its settings
"""
from __future__ import annotations

from dataclasses import dataclass

from stack.durations import go_seconds, parse_time
from stack.failures import Category, expect

KPA_CLASS = "kpa.autoscaling.knative.dev"
KNATIVE_AUTOSCALING = "autoscaling.knative.dev"
PA_API, PA_KIND = "autoscaling.internal.knative.dev/v1alpha1", "PodAutoscaler"
HPA_API, HPA_KIND = "autoscaling/v2", "HorizontalPodAutoscaler"
SERVERLESS_MODES = ("Serverless", "Knative")

# pkg/autoscaler/config/config.go defaultConfig @knative.dev/serving v0.38.0 (Knative 1.11): what applies where
# config-autoscaler sets nothing (its data holds only `_example`).
KNATIVE_DEFAULTS = {
    "pod-autoscaler-class": KPA_CLASS,
    "enable-scale-to-zero": "true",
    "scale-to-zero-grace-period": "30s",
    "scale-to-zero-pod-retention-period": "0s",
    "stable-window": "60s",
    "panic-window-percentage": "10",
    "scale-down-delay": "0s",
    "container-concurrency-target-default": "100",
    "container-concurrency-target-percentage": "70",
    "target-burst-capacity": "211",
    "max-scale-up-rate": "1000",
    "max-scale-down-rate": "2",
    "initial-scale": "1",
    "allow-zero-initial-scale": "false",
}


# knative.dev/serving pkg/autoscaler/scaling/multiscaler.go `tickInterval` and pkg/queue/sharedmain/main.go
# `drainSleepDuration` (read at v0.37.1 and v0.48.1: the same in Knative 1.10 and 1.21).
AUTOSCALER_TICK_SECONDS = 2.0
QUEUE_PROXY_DRAIN_SECONDS = 30.0
REVISION_WINDOW_KEYS = {"stable-window": f"{KNATIVE_AUTOSCALING}/window",
                        "panic-window-percentage": f"{KNATIVE_AUTOSCALING}/panic-window-percentage",
                        "scale-down-delay": f"{KNATIVE_AUTOSCALING}/scale-down-delay"}


@dataclass(frozen=True)
class ScalingWindows:
    """How long Knative's KPA takes to scale a revision out under a surge and back in after it, from
    config-autoscaler and the revision's own annotations (pkg/autoscaler/scaling/autoscaler.go Scale)."""
    stable_window: float
    panic_window: float
    scale_down_delay: float

    @classmethod
    def from_settings(cls, config: dict | None, revision_annotations: dict | None = None) -> "ScalingWindows":
        config, annotations = config or {}, revision_annotations or {}

        def value(key: str) -> str:     # the revision's annotation wins over the cluster's setting
            return annotations.get(REVISION_WINDOW_KEYS[key]) or config.get(key) or KNATIVE_DEFAULTS[key]
        stable = go_seconds(value("stable-window"))
        return cls(stable, stable * float(value("panic-window-percentage")) / 100, go_seconds(value("scale-down-delay")))

    def scale_out_seconds(self, replica_start: float) -> float:
        """From the surge's start to a second Ready replica: the panic window sees it, the next tick scales up, and
        the new replica starts as the first one did."""
        return self.panic_window + AUTOSCALER_TICK_SECONDS + replica_start

    def scale_in_seconds(self) -> float:
        """From the surge's end to the extra replicas gone: panic mode holds the count for a stable window after the
        last tick over the threshold ("Stop panicking after the surge has made its way into the stable metric"),
        then scale-down-delay and the next tick, then each removed Pod's queue-proxy drains before it goes."""
        return self.stable_window + self.scale_down_delay + AUTOSCALER_TICK_SECONDS + QUEUE_PROXY_DRAIN_SECONDS


def replica_start_seconds(pods: list[dict]) -> float | None:
    """The longest a Ready Pod took from its creation to Ready (its Ready condition's lastTransitionTime): what a
    new replica of the same revision will take, on the same cluster."""
    out = []
    for pod in pods:
        ready = next((c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready" and c.get("status") == "True"), None)
        created, became = parse_time(pod["metadata"].get("creationTimestamp")), parse_time((ready or {}).get(
            "lastTransitionTime"))
        if created and became:
            out.append(max((became - created).total_seconds(), 0.0))
    return max(out) if out else None


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    metric: str          # concurrency | rps (Knative), cpu | memory (HPA)
    target: int

    def predictor_fields(self) -> dict:
        """The InferenceService predictor's fields (ComponentExtensionSpec) for this spec."""
        return {"minReplicas": self.min_replicas, "maxReplicas": self.max_replicas, "scaleMetric": self.metric,
                "scaleTarget": self.target}


def serverless_problems(pa: dict, spec: AutoscalingSpec) -> list[str]:
    annotations = pa["metadata"].get("annotations") or {}
    want = {f"{KNATIVE_AUTOSCALING}/class": KPA_CLASS, f"{KNATIVE_AUTOSCALING}/min-scale": str(spec.min_replicas),
            f"{KNATIVE_AUTOSCALING}/max-scale": str(spec.max_replicas),
            f"{KNATIVE_AUTOSCALING}/metric": spec.metric, f"{KNATIVE_AUTOSCALING}/target": str(spec.target)}
    problems = [f"{key} is {annotations.get(key)!r}, expected {value!r}" for key, value in want.items()
                if annotations.get(key) != value]
    target = (pa.get("spec") or {}).get("scaleTargetRef") or {}
    if target.get("kind") != "Deployment" or not target.get("name"):
        problems.append(f"spec.scaleTargetRef is {target}, not a Deployment")
    return problems


def hpa_problems(hpa: dict, spec: AutoscalingSpec, deployment: str) -> list[str]:
    s = hpa.get("spec") or {}
    problems = []
    if s.get("minReplicas") != spec.min_replicas:
        problems.append(f"minReplicas is {s.get('minReplicas')}, expected {spec.min_replicas}")
    if s.get("maxReplicas") != spec.max_replicas:
        problems.append(f"maxReplicas is {s.get('maxReplicas')}, expected {spec.max_replicas}")
    ref = s.get("scaleTargetRef") or {}
    if (ref.get("kind"), ref.get("name")) != ("Deployment", deployment):
        problems.append(f"scaleTargetRef is {ref.get('kind')}/{ref.get('name')}, expected Deployment/{deployment}")
    resources = [m.get("resource") or {} for m in s.get("metrics") or [] if m.get("type") == "Resource"]
    if not any(r.get("name") == spec.metric and (r.get("target") or {}).get("averageUtilization") == spec.target
               for r in resources):
        problems.append(f"no {spec.metric} metric with averageUtilization {spec.target}: {s.get('metrics')}")
    return problems


@dataclass(frozen=True)
class ScaleToZero:
    """config-autoscaler's scale-to-zero settings, with Knative's defaults where unset."""
    enabled: bool
    stable_window: float              # seconds without a request before the revision is deemed idle
    grace_period: float               # then the time the activator is given to be in the path
    pod_retention: float              # then how long the last pod may stay

    @property
    def idle_seconds(self) -> float:
        """How long after its last request an idle revision's last replica is gone, at the latest: idle for a stable
        window, the grace period for the activator to be in the path, the retention period, the next tick, then the
        Pod's queue-proxy drains (knative.dev/pkg network/handlers Drainer: a quiet period from the drain's start)."""
        return (self.stable_window + self.grace_period + self.pod_retention + AUTOSCALER_TICK_SECONDS
                + QUEUE_PROXY_DRAIN_SECONDS)

    @classmethod
    def from_config(cls, data: dict | None) -> "ScaleToZero":
        data = data or {}

        def value(key: str) -> str:
            return data.get(key, KNATIVE_DEFAULTS[key])
        return cls(value("enable-scale-to-zero").lower() == "true", go_seconds(value("stable-window")),
                   go_seconds(value("scale-to-zero-grace-period")), go_seconds(value("scale-to-zero-pod-retention-period")))


def knative_settings(data: dict | None) -> dict[str, str]:
    """Each setting that shapes scaling, as config-autoscaler sets it or as Knative's default."""
    data = {k: v for k, v in (data or {}).items() if k != "_example"}
    out = {key: f"{data[key]} (set)" if key in data else f"{default} (default)"
           for key, default in KNATIVE_DEFAULTS.items()}
    out.update({key: f"{value} (set)" for key, value in data.items() if key not in KNATIVE_DEFAULTS})
    return out


def replicas_before_idling(pods: list[dict], what: str, selector: str) -> list[str]:
    """The names of the running replicas the wait for zero will watch go. A wait for "no Pod left" proves nothing
    unless it first saw the Pods it waits on: none here (a label the Pods do not carry, say) fails at once."""
    names = sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))
    expect(names, Category.AUTOSCALING,
           f"no running Pod of {what} carries the label {selector}, though it has just answered a predict: "
           f"a wait for it to scale to zero would pass without having seen a replica")
    return names
