"""Sign-off acceptance criteria: ids, titles, and when each one applies.

Suites tag tests with the criteria they prove (`@pytest.mark.criteria("AC-CRDS")`); the sign-off report computes each
criterion's status from those tests' outcomes. Whether a criterion applies to a run is decided here and only here
(`Criterion.applies`, from the run's `RunFacts`): collection marks the tests of a criterion that does not apply NOT
RUN with its reason (fixtures/plugin.py), and the run record carries the same answer into the sign-off.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunFacts:
    """What decides which criteria apply, known before any check: the profile, and what the run was given."""
    components: frozenset[str]
    required: frozenset[str] = frozenset()     # the profile's `require:`
    serverless: bool = False                   # the profile's InferenceServices are Knative (Serverless) ones
    given: frozenset[str] = frozenset()        # of GIVEN: what the run was given for the optional areas


# What an optional area can be given (Criterion.given), each named as RunFacts.given holds it.
GIVEN = ("s3", "prometheus", "monitors", "authorization_policy")


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    # The criterion applies only when the profile holds this component (None: always).
    requires: str | None = None
    # An optional area: it applies only where the run is given what it needs (`given`, one of GIVEN; `needs` says it
    # in words), or where the profile requires the criterion (profile `require:`); then a missing setting fails it
    # instead of leaving it NOT RUN.
    needs: str | None = None
    given: str | None = None
    # Only for Knative-served (Serverless) InferenceServices: Standard mode's Deployments scale by an HPA, from one.
    serverless: bool = False

    def applies(self, facts: RunFacts) -> tuple[bool, str | None]:
        """Whether the criterion applies to a run with these facts, and if not, why."""
        if self.requires and self.requires not in facts.components:
            return False, f"the profile has no {self.requires}"
        if self.serverless and not facts.serverless:
            return False, "the profile's InferenceServices are not Serverless (Knative): Standard mode does not " \
                          "scale to zero, and an HPA scales it on CPU"
        if self.needs and self.id not in facts.required and (self.given is None or self.given not in facts.given):
            return False, f"optional, and it needs {self.needs}"
        return True, None


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
    Criterion("AC-IRIS-S3", "The Iris model loads from an S3-compatible store (DigitalOcean Spaces) and answers",
              requires="kserve", needs="an S3 store (KSTACK_S3_*)", given="s3"),
    # Security: what the first user's security policies must hold, each proven against the live API.
    Criterion("AC-RBAC-DEFAULT-SA", "A model namespace's default ServiceAccount cannot read Secrets", requires="kserve"),
    Criterion("AC-CERT-EXPIRY", "The stack's certificates do not expire within the window"),
    Criterion("AC-MESH-MTLS", "Under STRICT mTLS a model's Pod refuses plaintext from outside the mesh, and the gateway "
              "path answers", requires="istio", needs="a profile that requires it (require: [AC-MESH-MTLS])"),
    Criterion("AC-MESH-AUTHZ", "The profile's AuthorizationPolicy keeps out a request without its principal, and the "
              "gateway path answers", requires="istio",
              needs="an authorization_policy in the profile", given="authorization_policy"),
    Criterion("AC-POD-SECURITY", "Predictor containers run as non-root without privilege escalation",
              requires="kserve", needs="a profile that requires it (require: [AC-POD-SECURITY])"),
    # The stack's own availability: optional (most installs run one replica of each), required by a profile's
    # require: or a run's --require; the posture is in every sign-off all the same.
    Criterion("AC-HA", "The stack is highly available: replicas on several nodes, disruption budgets that let a node "
              "drain, live leader Leases, webhooks behind more than one endpoint",
              needs="a profile or a run that requires it (require: [AC-HA], or --require AC-HA)"),
    # Autoscaling: what the mode's autoscaler holds for an InferenceService, and the cluster's settings.
    Criterion("AC-AUTOSCALING", "An InferenceService's autoscaling bounds and target are in force", requires="kserve"),
    Criterion("AC-SCALE-TO-ZERO", "An idle InferenceService scales to zero and a request cold-starts it",
              requires="knative", serverless=True),
    Criterion("AC-SCALE-OUT", "Under a bounded load an InferenceService scales out above one replica and back",
              requires="knative", serverless=True),
    # Monitoring: the model server's own metrics, and a Prometheus where one is given.
    Criterion("AC-METRICS", "The model server's metrics count exactly the predict calls made", requires="kserve"),
    Criterion("AC-PROMQL", "Prometheus holds the model's series", requires="kserve",
              needs="a Prometheus (--prometheus-url)", given="prometheus"),
    Criterion("AC-MONITORS", "The profile's Prometheus Operator monitors exist and select live targets",
              needs="monitors declared in the profile (monitors:)", given="monitors"),
)

BY_ID = {c.id: c for c in CRITERIA}

# The criterion that stands for "this component works", used to tag per-component tests.
COMPONENT_CRITERION = {
    "istio": "AC-ISTIO",
    "knative": "AC-KNATIVE",
    "cert-manager": "AC-CERT-MANAGER",
    "kserve": "AC-KSERVE-CONTROLLER",
}


def applicability(facts: RunFacts) -> dict[str, tuple[bool, str | None]]:
    """Every criterion's answer for a run: id -> (applies, why not)."""
    return {c.id: c.applies(facts) for c in CRITERIA}
