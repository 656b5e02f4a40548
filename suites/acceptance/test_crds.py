"""Every expected CRD exists, is Established and NamesAccepted, and serves the expected versions."""
from __future__ import annotations

import pytest

from stack.readiness import crd_status
from stack.wait import Source, Status, wait_for

CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
ESTABLISH_SECONDS = 30   # an installed stack's CRDs are established within seconds


@pytest.mark.area("crds", story="CRDs present and Established")
@pytest.mark.criteria("AC-CRDS")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="crds")
def test_crds_established(component, profile, kube, stack, deadline, diagnostics):
    expected = profile.components[component].inventory["crds"]
    missing = [c["name"] for c in expected if kube.get(*CRD, c["name"]) is None]
    assert not missing, f"{component}: CRDs absent: {', '.join(missing)}"
    for c in expected:
        diagnostics.object(*CRD, c["name"])

    def check(snap) -> Status:
        by_name = {o["metadata"]["name"]: o for o in snap.items(0)}
        statuses = [crd_status(by_name.get(c["name"]), c["name"], c["versions"]) for c in expected]
        pending = [s.observed for s in statuses if not s.done]
        return Status(not pending, " | ".join(pending) or "all Established")

    budget = deadline("workloads")
    budget.seconds = min(budget.seconds, ESTABLISH_SECONDS)
    wait_for(kube, [Source(*CRD)], check, deadline=budget, describe=f"{component} CRDs")
