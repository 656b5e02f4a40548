"""Namespaces exist and are Active; every Deployment and DaemonSet of the profile is Available with Ready pods, no
container restarting in a loop, and runs the images the profile pins."""
from __future__ import annotations

import allure
import pytest

from stack.checks import namespaces, workloads
from stack.failures import Category, CheckFailure, expect
from stack.readiness import PodHealth, image_drift, judge_image, pods_summary, workload_images
from stack.deadline import Deadline
from stack.wait import look, require, wait_for

LOOK_SECONDS = 20       # the one look that takes a failed wait's evidence


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
    """Available, at least the replicas the profile expects, all Ready at the current observedGeneration; fails fast on
    crash loops, and on image pulls that keep failing through the kubelet's back-off. Restarts are judged by what
    happens now (stack/readiness.py): old ones, on a cluster up for months, are evidence, not a loop."""
    refs = profile.components[component].workloads
    in_namespaces = sorted({r.namespace for r in refs})
    diagnostics.namespace(*in_namespaces)
    # The stack fixture has installed (or, --install never, found) the stack: a workload absent now stays absent.
    check = workloads(refs, absent_is_terminal=True, name=f"{component} workloads")
    with allure.step(f"{len(refs)} workload(s) in {', '.join(in_namespaces)} Available with Ready pods"):
        try:
            snap = wait_for(kube, check, deadline("workloads"))
        except CheckFailure:
            _past_restarts(look(kube, check, Deadline(LOOK_SECONDS, "evidence"))[1], in_namespaces, evidence)
            raise
    evidence.seen(snap, "workloads")
    pods = _past_restarts(snap, in_namespaces, evidence)
    looping = [f"pod {p['metadata']['name']}: {'; '.join(h.looping)}" for p, h in pods if h.looping]
    expect(not looping, Category.CRASH_LOOP, f"{component}: containers restarting in a loop: " + " | ".join(looping))


def _past_restarts(snap, in_namespaces: list[str], evidence) -> list[tuple[dict, PodHealth]]:
    """The pods' health; their restarts out of any loop now are evidence, whatever the check's verdict."""
    pods = [(p, pods_summary([p])) for ns in in_namespaces for p in snap.items("v1", "Pod", ns)]
    past = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": "; ".join(h.past_restarts)
            for p, h in pods if h.past_restarts}
    if past:
        evidence.add("past restarts (out of any loop now: evidence, not a failure)", past)
    return pods


@pytest.mark.area("workloads", story="Workloads run the pinned images")
@pytest.mark.criteria("AC-ALL-READY")
@pytest.mark.severity("normal")
@pytest.mark.per_component(has="deployments")
@allure.title("{component}: workloads run the images the profile pins")
def test_workload_images(component, profile, kube, stack, diagnostics, evidence):
    """The running containers use the images the profile pins (after its overrides), or the release's own image the
    pin overrides (a hand install applies the release as it is); drift is listed. An image from a registry that no
    longer serves it is a risk, said in the evidence and the sign-off. Read from the Pods (a template may say
    `image: auto`, filled in by a sidecar injector); from the template only without a pod."""
    drift, seen, running_images, risks = [], [], {}, {}
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
                judged = [judge_image(profile, expected, image) for image in (ci.images if ci else [])]
                if ci is None or not all(j.matches for j in judged):
                    drift.append(image_drift(f"{w['namespace']}/{w['name']}", container, f"{actual}{where}", expected,
                                             judged))
                for j in judged:
                    if j.risk:
                        risks[f"{w['namespace']}/{w['name']}/{container}"] = j.risk
    print("images:\n  " + "\n  ".join(seen))
    evidence.add("running images (with digests where the pods report them)", running_images)
    if risks:
        evidence.add("images from retired registries (a risk: the sign-off lists them)", risks)
    assert not drift, f"{component}: image drift: " + "; ".join(drift)
