"""The security policies the first user's sign-off needs, each asked of the live cluster: a model namespace's default
ServiceAccount cannot read Secrets (the API server's own authorizer answers), no stack certificate expires within
the window, and, where the profile requires it, the predictor's containers run as non-root without privilege
escalation."""
from __future__ import annotations

import datetime

import allure
import pytest

from stack import security
from stack.failures import Category, expect
from suites.acceptance.iris import NAME

pytestmark = [pytest.mark.area("security", story="security policies", feature="security"),
              pytest.mark.severity("critical")]


@pytest.mark.criteria("AC-RBAC-DEFAULT-SA")
@allure.title("A model namespace's default ServiceAccount cannot read Secrets")
def test_default_service_account_cannot_read_secrets(kube, profile, test_namespace, evidence):
    """A SubjectAccessReview per verb, for the ServiceAccount and the groups its token carries: a fresh namespace's
    default ServiceAccount holds only what cluster-wide bindings give every ServiceAccount, the usual leak."""
    if not profile.has("kserve"):
        pytest.skip("the profile has no kserve")
    ns = test_namespace("rbac")
    answers = security.secret_access(kube, ns)
    evidence.add("default ServiceAccount and Secrets", {
        "subject": security.service_account_user(ns, "default")[0],
        **{f"{a.verb} secrets": "allowed: " + (a.reason or "(no reason given)") if a.allowed else "denied"
           for a in answers}})
    allowed = [a for a in answers if a.allowed]
    expect(not allowed, Category.SECURITY,
           f"system:serviceaccount:{ns}:default may {', '.join(a.verb for a in allowed)} secrets in {ns}: "
           + "; ".join(a.reason or "the authorizer gave no reason" for a in allowed))


@pytest.mark.criteria("AC-CERT-EXPIRY")
@pytest.mark.needs("stack")
@allure.title("No stack certificate expires within the window")
def test_no_stack_certificate_expires_within_the_window(kube, profile, stack, run_options, evidence):
    """cert-manager Certificates in the stack's namespaces, and the CAs the API server trusts for each webhook. A
    webhook CA its component rotates itself (Knative's lives a week) must last what the profile says that rotation
    leaves."""
    window = datetime.timedelta(days=run_options.cert_window_days)
    certificates = security.stack_certificates(kube, profile, window)
    now = datetime.datetime.now(datetime.timezone.utc)
    evidence.add("stack certificates", {
        c.source: f"{c.subject}: notAfter {security.format_time(c.not_after)}, must last {security.format_days(c.must_last)}"
                  + (f", {security.format_days(c.remaining(now))} left" if c.not_after else "")
        for c in certificates})
    expect(certificates, Category.SECURITY, "no stack certificate found: neither a cert-manager Certificate in the "
                                            "stack's namespaces nor a CA in a webhook caBundle")
    problems = [p for p in (c.problem(now) for c in certificates) if p]
    expect(not problems, Category.SECURITY, "; ".join(problems))


@pytest.mark.criteria("AC-POD-SECURITY")
@pytest.mark.needs("stack")
@allure.title("The Iris predictor's containers run as non-root without privilege escalation")
def test_predictor_containers_run_restricted(request, kube, profile, diagnostics, evidence):
    if "AC-POD-SECURITY" not in profile.required_criteria:
        pytest.skip("the profile does not require AC-POD-SECURITY")
    iris = request.getfixturevalue("iris")      # only where the check applies: a broken Iris is not its failure
    ns = iris["namespace"]
    diagnostics.namespace(ns)
    pods, _ = kube.list("v1", "Pod", ns, label_selector=f"serving.kserve.io/inferenceservice={NAME}")
    expect(pods, Category.SECURITY, f"no predictor pod of {ns}/{NAME} found")
    findings = {p["metadata"]["name"]: security.container_security(p) for p in pods}
    evidence.add("predictor security context", {
        f"{pod}/{c.container}": ("non-root" if c.run_as_non_root else "root allowed")
        + (", escalation allowed" if c.allow_privilege_escalation else ", no escalation")
        + (", privileged" if c.privileged else "")
        for pod, containers in findings.items() for c in containers})
    problems = [f"{pod}/{c.container} {p}" for pod, containers in findings.items() for c in containers
                for p in c.problems()]
    expect(not problems, Category.SECURITY, "; ".join(problems))
