"""Knative autoscaler (KPA) stand-in: `python -m twin.standins.autoscaler`, for the autoscaler container.

Why not the real one: it scrapes each revision pod's queue-proxy for its concurrency and takes the activator's
statistics over a websocket; the twin runs neither queue-proxy nor the real activator (both need containers).

What it does with the activator stand-in's counts (twin/standins/activator.py, the activator being in every
revision's path), once a second, for each PodAutoscaler of class kpa.autoscaling.knative.dev:
- scale from zero: a request waits in the activator and the Deployment has no replica -> max(1, min-scale);
- scale to zero: min-scale 0, enable-scale-to-zero, and no request in flight or seen for stable-window plus
  scale-to-zero-grace-period (config-autoscaler, Knative's defaults where unset) -> 0 replicas;
- never below the initial scale before the revision has reached it (ScaleTargetInitialized, as the KPA);
- otherwise the stable window's average concurrency (what the activator saw) over the per-pod target (the
  revision's autoscaling.knative.dev/target, else container-concurrency-target-default, times
  container-concurrency-target-percentage), at least min-scale, at most max-scale; no panic mode.
It sets the Deployment's replicas (scale subresource, as the real one does) and the PodAutoscaler's
status.desiredScale/actualScale.

Fault scale-to-zero-stuck: it never scales below one replica.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from stack.durations import go_seconds
from twin.standins import runtime
from twin.standins.runtime import Informer, Kube, is_true, set_condition

log = logging.getLogger("twin.standin.autoscaler")

PA_API, PA_KIND = "autoscaling.internal.knative.dev/v1alpha1", "PodAutoscaler"
KPA = "kpa.autoscaling.knative.dev"
MANAGER = "knative-autoscaler"

@dataclass(frozen=True)
class AutoscalerConfig:
    """config-autoscaler as Knative reads it: pkg/autoscaler/config/config.go NewConfigFromMap over defaultConfig
    (knative.dev/serving v0.37.1): each key it reads here, its default where the ConfigMap does not set it
    (only `_example` on a fresh install). container-concurrency-target-percentage is a percentage there too."""
    enable_scale_to_zero: bool = True
    stable_window: float = 60.0
    scale_to_zero_grace_period: float = 30.0
    container_concurrency_target_default: float = 100.0
    container_concurrency_target_percentage: float = 70.0

    @classmethod
    def from_map(cls, data: dict | None) -> "AutoscalerConfig":
        data, d = data or {}, cls()
        return cls(
            enable_scale_to_zero=data.get("enable-scale-to-zero", str(d.enable_scale_to_zero)).lower() == "true",
            stable_window=go_seconds(data["stable-window"]) if "stable-window" in data else d.stable_window,
            scale_to_zero_grace_period=go_seconds(data["scale-to-zero-grace-period"])
            if "scale-to-zero-grace-period" in data else d.scale_to_zero_grace_period,
            container_concurrency_target_default=float(data.get("container-concurrency-target-default",
                                                                d.container_concurrency_target_default)),
            container_concurrency_target_percentage=float(data.get("container-concurrency-target-percentage",
                                                                   d.container_concurrency_target_percentage)))


class Autoscaler:
    def __init__(self, kube: Kube, system_namespace: str):
        self.kube, self.system_ns = kube, system_namespace
        self.pas = Informer(kube, PA_API, PA_KIND)
        self.config = Informer(kube, "v1", "ConfigMap", namespace=system_namespace,
                               field_selector="metadata.name=config-autoscaler")
        self.activators = Informer(kube, "v1", "Pod", namespace=system_namespace, label_selector="app=activator")
        self.deployments = Informer(kube, "apps/v1", "Deployment", label_selector="serving.knative.dev/revision")
        self.first_seen: dict[str, float] = {}
        self.samples: dict[str, collections.deque] = {}    # key -> (time, concurrency-seconds) reads

    def average_concurrency(self, key: str, now: float, integral: float, window: float) -> float:
        """The average number of requests in flight over the stable window (from the activator's integral)."""
        samples = self.samples.setdefault(key, collections.deque())
        samples.append((now, integral))
        while len(samples) > 2 and now - samples[1][0] >= window:
            samples.popleft()
        (t0, i0), (t1, i1) = samples[0], samples[-1]
        return (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0

    def start(self, stop: threading.Event) -> None:
        for informer in (self.pas, self.config, self.activators, self.deployments):
            informer.start()
        threading.Thread(target=self._loop, args=(stop,), daemon=True, name="kpa").start()

    def stats(self) -> dict[str, dict]:
        """Every activator's counts, merged by revision."""
        merged: dict[str, dict] = {}
        for pod in self.activators.items():
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                continue
            try:
                with urllib.request.urlopen(f"http://{ip}:9090/twin/stats", timeout=2) as r:
                    counts = json.loads(r.read())
            except (OSError, ValueError):
                continue
            for key, c in counts.items():
                m = merged.setdefault(key, {"in_flight": 0, "last_request": 0.0, "concurrency_seconds": 0.0})
                m["in_flight"] += c["in_flight"]
                m["last_request"] = max(m["last_request"], c["last_request"])
                m["concurrency_seconds"] += c["concurrency_seconds"]
        return merged

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                self.tick(time.time())
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("autoscaler tick failed")

    def tick(self, now: float) -> None:
        cm = self.config.get("config-autoscaler", self.system_ns) or {}
        settings = AutoscalerConfig.from_map(cm.get("data"))
        idle_for = settings.stable_window + settings.scale_to_zero_grace_period
        to_zero = settings.enable_scale_to_zero and not runtime.has_fault("scale-to-zero-stuck")
        per_pod = settings.container_concurrency_target_default
        utilization = settings.container_concurrency_target_percentage / 100
        counts = self.stats()
        for pa in self.pas.items():
            meta = pa["metadata"]
            annotations = meta.get("annotations") or {}
            if annotations.get("autoscaling.knative.dev/class", KPA) != KPA:
                continue
            key = f"{meta['namespace']}/{meta['name']}"
            scale_ref = (pa.get("spec") or {}).get("scaleTargetRef") or {}
            dep = self.deployments.get(scale_ref.get("name", ""), meta["namespace"])
            if dep is None:
                continue
            current = int((dep.get("spec") or {}).get("replicas", 1))
            min_scale = int(annotations.get("autoscaling.knative.dev/min-scale", "0") or 0)
            seen = counts.get(key, {"in_flight": 0, "last_request": 0.0, "concurrency_seconds": 0.0})
            last_active = max(seen["last_request"], self.first_seen.setdefault(key, now))
            average = self.average_concurrency(key, now, seen["concurrency_seconds"], settings.stable_window)
            pod_target = float(annotations.get("autoscaling.knative.dev/target") or per_pod) * utilization
            wanted = math.ceil(average / pod_target - 1e-9) if average > 0 else 0
            max_scale = int(annotations.get("autoscaling.knative.dev/max-scale", "0") or 0)
            ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
            # As the KPA, never below the initial scale before the revision has reached it once
            # (ScaleTargetInitialized): a revision that never served is not scaled to zero.
            initialized = ready > 0 or is_true(pa, "ScaleTargetInitialized")
            if seen["in_flight"] > 0 and current == 0:
                desired = max(1, min_scale, wanted)
            elif current > 0 and min_scale == 0 and seen["in_flight"] == 0 and to_zero and initialized and \
                    now - last_active >= idle_for:
                desired = 0
            else:      # the stable window's average concurrency over the per-pod target, at least one while serving
                desired = max(min_scale, wanted, 1 if current > 0 else 0)
            if max_scale:
                desired = min(desired, max_scale)
            if not initialized:
                desired = max(desired, current)
            if desired != current:
                log.info("%s: scaling %s from %d to %d", key, scale_ref["name"], current, desired)
                self.kube.patch("apps/v1", "Deployment", scale_ref["name"], meta["namespace"],
                                {"spec": {"replicas": desired}}, subresource="scale")
            status = {"desiredScale": desired, "actualScale": ready}
            if initialized:
                status["conditions"] = set_condition((pa.get("status") or {}).get("conditions"),
                                                     "ScaleTargetInitialized", "True")
            if {k: (pa.get("status") or {}).get(k) for k in status} != status:
                try:
                    self.kube.patch(PA_API, PA_KIND, meta["name"], meta["namespace"], {"status": status},
                                    subresource="status")
                except ApiException as e:     # gone meanwhile, or a newer version: the next tick writes it
                    log.debug("status of %s not written: %s", key, e.reason)


def start(stop: threading.Event) -> None:
    Autoscaler(Kube(), runtime.pod_env("POD_NAMESPACE")).start(stop)


if __name__ == "__main__":
    sys.exit(runtime.run(start, "autoscaler"))
