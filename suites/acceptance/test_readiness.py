"""Namespaces exist and are Active; every Deployment and DaemonSet of the profile is Available with Ready pods, no
container restarting in a loop, and runs the images the profile pins."""
from __future__ import annotations

import allure
import pytest

from stack.checks import namespaces, workloads
from stack.failures import Category, expect
from stack.readiness import image_matches, pods_summary, workload_images
from stack.wait import require, wait_for


@pytest.mark.area("namespaces", story="Namespaces exist and are Active")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.per_component(has="namespaces")
@allure.title("{component}: namespaces exist and are Active")
def test_namespaces_active(component, profile, kube, stack, diagnostics, evidence):
    evidence.seen(require(kube, namespaces(profile.components[component].inventory["namespaces"],
                                           name=f"{component} namespaces")), "namespaces")


@pytest.mark.area("workloads", story="Workloads Available with Ready pods")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="deployments")
@allure.title("{component}: workloads Available with Ready pods, none in a crash loop")
def test_workloads_ready(component, profile, kube, stack, deadline, diagnostics, evidence):
    """Available, all replicas Ready at the current observedGeneration; fails fast on crash loops, and on image pulls
    that keep failing through the kubelet's back-off."""
    refs = profile.components[component].workloads
    in_namespaces = sorted({r.namespace for r in refs})
    diagnostics.namespace(*in_namespaces)
    with allure.step(f"{len(refs)} workload(s) in {', '.join(in_namespaces)} Available with Ready pods"):
        snap = wait_for(kube, workloads(refs, name=f"{component} workloads"), deadline("workloads"))
    evidence.seen(snap, "workloads")
    looping = [f"pod {p['metadata']['name']}: {'; '.join(health.looping)}" for ns in in_namespaces
               for p in snap.items("v1", "Pod", ns) for health in [pods_summary([p])] if health.looping]
    expect(not looping, Category.CRASH_LOOP, f"{component}: containers restarting in a loop: " + " | ".join(looping))


@pytest.mark.area("workloads", story="Workloads run the pinned images")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.severity("normal")
@pytest.mark.per_component(has="deployments")
@allure.title("{component}: workloads run the images the profile pins")
def test_workload_images(component, profile, kube, stack, diagnostics, evidence):
    """The running containers use the images the profile pins (after its overrides); drift is listed. Read from the
    Pods (a template may say `image: auto`, filled in by a sidecar injector); from the template only without a pod."""
    drift, seen, running_images = [], [], {}
    inv = profile.components[component].inventory
    for kind, key in (("Deployment", "deployments"), ("DaemonSet", "daemonsets")):
        for w in inv.get(key, []):
            obj = kube.get("apps/v1", kind, w["name"], w["namespace"])
            if obj is None:
                drift.append(f"{kind.lower()} {w['namespace']}/{w['name']} absent")
                continue
            pods, _ = kube.list("v1", "Pod", w["namespace"])
            running = {ci.container: ci for ci in workload_images(obj, pods)}
            for container, expected in w["containers"].items():
                ci = running.get(container)
                actual = ", ".join(ci.images) if ci else None
                where = f" (from the {ci.source})" if ci and ci.source != "pods" else ""
                seen.append(f"{w['namespace']}/{w['name']}/{container}: {actual}{where}")
                digests = f" (digest {', '.join(ci.digests)})" if ci and ci.digests else ""
                running_images[f"{w['namespace']}/{w['name']}/{container}"] = f"{actual}{where}{digests}"
                if ci is None or not all(image_matches(expected, image) for image in ci.images):
                    drift.append(f"{w['namespace']}/{w['name']} container {container}: runs {actual}{where}, "
                                 f"profile pins {expected}")
    print("images:\n  " + "\n  ".join(seen))
    evidence.add("running images (with digests where the pods report them)", running_images)
    assert not drift, f"{component}: image drift: " + "; ".join(drift)
