"""Every expected CRD exists, is Established and NamesAccepted, and serves the expected versions."""
from __future__ import annotations

import allure
import pytest

from stack.checks import CRD_API, CRD_KIND, crds
from stack.wait import wait_for

ESTABLISH_SECONDS = 30   # an installed stack's CRDs are established within seconds


@pytest.mark.area("crds", story="CRDs present and Established")
@pytest.mark.criteria("AC-CRDS")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="crds")
@allure.title("{component}: CRDs present, Established and serving their versions")
def test_crds_established(component, profile, kube, stack, deadline, diagnostics, evidence):
    expected = profile.components[component].inventory["crds"]
    for c in expected:
        diagnostics.object(CRD_API, CRD_KIND, c["name"])
    budget = deadline("workloads")
    budget.seconds = min(budget.seconds, ESTABLISH_SECONDS)
    # On an installed stack an absent CRD does not appear by waiting: it fails at once.
    evidence.seen(wait_for(kube, crds(expected, absent_is_terminal=True, name=f"{component} CRDs"), budget),
                  "CRDs and their served versions")
