"""Sign-off acceptance criteria: ids, titles, and the components each one needs.

Suites tag tests with the criteria they prove (`@pytest.mark.criteria("AC-CRDS")`); the sign-off report computes each
criterion's status from those tests' outcomes. Nothing here is written by hand per run.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    # The criterion applies only when the profile holds this component (None: always).
    requires: str | None = None


CRITERIA: tuple[Criterion, ...] = (
    Criterion("AC-ISTIO", "Istio installed and working", requires="istio"),
    Criterion("AC-KNATIVE", "Knative Serving deployed", requires="knative"),
    Criterion("AC-CERT-MANAGER", "cert-manager functional", requires="cert-manager"),
    Criterion("AC-KSERVE-CONTROLLER", "KServe controller running", requires="kserve"),
    Criterion("AC-ALL-READY", "All components Ready"),
    Criterion("AC-CRDS", "CRDs present"),
    Criterion("AC-WEBHOOKS", "Webhooks admitting"),
    Criterion("AC-CERT-ROUNDTRIP", "Certificate issuance round-trip", requires="cert-manager"),
    Criterion("AC-IRIS-PREDICT", "The Iris model answers", requires="kserve"),
)

BY_ID = {c.id: c for c in CRITERIA}

# The criterion that stands for "this component works", used to tag per-component tests.
COMPONENT_CRITERION = {
    "istio": "AC-ISTIO",
    "knative": "AC-KNATIVE",
    "cert-manager": "AC-CERT-MANAGER",
    "kserve": "AC-KSERVE-CONTROLLER",
}


def applicable(criterion: Criterion, components: set[str]) -> tuple[bool, str | None]:
    """Whether a criterion applies to a profile with these components, and if not, why."""
    if criterion.requires and criterion.requires not in components:
        return False, f"the profile has no {criterion.requires}"
    return True, None
