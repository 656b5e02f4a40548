"""Namespaces exist and are Active; every Deployment and DaemonSet of the profile is Available with Ready pods, no
container restarting in a loop, and runs the images the profile pins."""
from __future__ import annotations

import allure
import pytest

from stack.readiness import image_matches, pod_problems, workload_sources, workloads_check
from stack.wait import wait_for


@pytest.mark.area("namespaces", story="Namespaces exist and are Active")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.per_component(has="namespaces")
def test_namespaces_active(component, profile, kube, stack, diagnostics):
    problems = []
    for ns in profile.components[component].inventory["namespaces"]:
        obj = kube.get("v1", "Namespace", ns)
        if obj is None:
            problems.append(f"namespace {ns} absent")
        elif (obj.get("status") or {}).get("phase") != "Active":
            problems.append(f"namespace {ns} is {obj['status'].get('phase')}")
    assert not problems, f"{component}: " + "; ".join(problems)


def _workloads(profile, component):
    inv = profile.components[component].inventory
    return [("Deployment", w["namespace"], w["name"]) for w in inv.get("deployments", [])] + \
           [("DaemonSet", w["namespace"], w["name"]) for w in inv.get("daemonsets", [])]


@pytest.mark.area("workloads", story="Workloads Available with Ready pods")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="deployments")
def test_workloads_ready(component, profile, kube, stack, deadline, diagnostics):
    """Available, all replicas Ready at the current observedGeneration; fails fast on pull errors and crash loops."""
    workloads = _workloads(profile, component)
    budget = deadline("workloads")
    for ns in sorted({ns for _, ns, _ in workloads}):
        diagnostics.namespace(ns)
        in_ns = [w for w in workloads if w[1] == ns]
        with allure.step(f"{len(in_ns)} workload(s) in {ns} Available with Ready pods"):
            snap = wait_for(kube, workload_sources(ns), workloads_check(in_ns), deadline=budget,
                            describe=f"{component} workloads in {ns}")
        looping = [f"pod {p['metadata']['name']}: {'; '.join(problems)}" for p in snap.items(2)
                   for problems in [pod_problems(p)[0]] if any("restarted" in x or "CrashLoop" in x for x in problems)]
        assert not looping, f"{component}: containers restarting in a loop: " + " | ".join(looping)


@pytest.mark.area("workloads", story="Workloads run the pinned images")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.severity("normal")
@pytest.mark.per_component(has="deployments")
def test_workload_images(component, profile, kube, stack, diagnostics):
    """The running containers use the images the profile pins (after its overrides); drift is listed."""
    drift, seen = [], []
    inv = profile.components[component].inventory
    for kind, key in (("Deployment", "deployments"), ("DaemonSet", "daemonsets")):
        for w in inv.get(key, []):
            obj = kube.get("apps/v1", kind, w["name"], w["namespace"])
            if obj is None:
                drift.append(f"{kind.lower()} {w['namespace']}/{w['name']} absent")
                continue
            running = {c["name"]: c["image"] for c in obj["spec"]["template"]["spec"]["containers"]}
            for container, expected in w["containers"].items():
                actual = running.get(container)
                seen.append(f"{w['namespace']}/{w['name']}/{container}: {actual}")
                if actual is None or not image_matches(expected, actual):
                    drift.append(f"{w['namespace']}/{w['name']} container {container}: runs {actual}, profile pins {expected}")
    print("images:\n  " + "\n  ".join(seen))
    assert not drift, f"{component}: image drift: " + "; ".join(drift)
