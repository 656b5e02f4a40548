"""The security policies the first user's sign-off needs, each asked of the live cluster: a model namespace's default
ServiceAccount cannot read Secrets (the API server's own authorizer answers), no stack certificate expires within
the window, and, where the profile requires them, the predictor's containers run as non-root without privilege
escalation, under STRICT mTLS a model's Pod refuses plaintext from outside the mesh, and the profile's
AuthorizationPolicy keeps out a request without its principal."""
from __future__ import annotations

import datetime

import allure
import pytest

from stack import mesh, security
from stack.failures import Category, expect
from suites.acceptance.iris import (NAME, V1_INPUT, Predictor, deploy_and_wait, isvc_manifest,
                                    running_predictor_pods)

pytestmark = [pytest.mark.area("security", story="security policies", feature="security"),
              pytest.mark.severity("critical")]


@pytest.mark.criteria("AC-RBAC-DEFAULT-SA")
@allure.title("A model namespace's default ServiceAccount cannot read Secrets")
def test_default_service_account_cannot_read_secrets(kube, profile, test_namespace, evidence):
    """A SubjectAccessReview per verb, for the ServiceAccount and the groups its token carries: a fresh namespace's
    default ServiceAccount holds only what cluster-wide bindings give every ServiceAccount, the usual leak."""
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


PLAINTEXT_TRIES = 3     # every one must be kept out: one failed proxy connection alone could be the API server's


def _model_port(pod: dict) -> int:
    """The model server's port (kserve-container's; Knative and KServe both put it at 8080)."""
    for c in pod["spec"].get("containers") or []:
        if c.get("name") == "kserve-container" and c.get("ports"):
            return int(c["ports"][0]["containerPort"])
    return 8080


def _iris_in_the_mesh(kube, profile, test_namespace, deadline, diagnostics, prefix: str,
                      before=None) -> tuple[str, dict, dict]:
    """An Iris InferenceService of the test's own in a namespace labelled for sidecar injection, annotated to inject
    (as KServe documents for a mesh): (namespace, InferenceService, its running predictor Pod). `before(ns)` runs
    once the namespace exists, before the model is deployed (a policy its sidecar must start with)."""
    ns = test_namespace(prefix, {"istio-injection": "enabled"})
    diagnostics.namespace(ns)
    if before:
        before(ns)
    manifest = isvc_manifest(profile, ns)
    manifest["metadata"].setdefault("annotations", {})["sidecar.istio.io/inject"] = "true"
    isvc, _ = deploy_and_wait(kube, profile, ns, manifest, deadline("inference_service"))
    pods = running_predictor_pods(kube, ns)
    expect(pods, Category.SECURITY, f"no running predictor pod of {ns}/{NAME}")
    return ns, isvc, pods[0]


def _expect_sidecar(pod: dict, what: str) -> None:
    meta = pod["metadata"]
    expect(mesh.has_sidecar(pod), Category.SECURITY,
           f"{meta['namespace']}/{meta['name']} has no {mesh.SIDECAR} sidecar although its namespace is labelled "
           f"istio-injection=enabled: nothing enforces {what}, so the Pod takes any request")


def _from_outside_and_through_the_gateway(kube, profile, ingress_url, isvc: dict, pod: dict, port: int, deadline,
                                          evidence, what: str) -> list[mesh.PlaintextAnswer]:
    """PLAINTEXT_TRIES predicts from outside the mesh (through the API server's pod proxy, without TLS or principal),
    then one through the ingress gateway, which must answer; both recorded as `what`. The plaintext answers."""
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    path = f"/v1/models/{NAME}:predict"
    answers = [mesh.PlaintextAnswer.of(*kube.pod_proxy(ns, name, port, "POST", path, V1_INPUT))
               for _ in range(PLAINTEXT_TRIES)]
    body, _ = Predictor(kube, profile, ingress_url, isvc, deadline("predict")).post(path, V1_INPUT)
    evidence.add(what, {"requests": f"{PLAINTEXT_TRIES} plaintext predicts through the API server's pod proxy",
                        "answers": [str(a) for a in answers], "through the gateway": body})
    return answers


def _expect_kept_out(pod: dict, port: int, answers: list[mesh.PlaintextAnswer], why: str,
                     refused_only: bool = False) -> None:
    """`refused_only`: only a refused connection counts (STRICT refuses plaintext before any authorization)."""
    meta = pod["metadata"]
    let_in = [a for a in answers if not (a.refused if refused_only else a.kept_out)]
    expect(not let_in, Category.SECURITY,
           f"{meta['namespace']}/{meta['name']}:{port} answered {len(let_in)} of {len(answers)} plaintext requests "
           f"from outside the mesh {why}: {let_in[0] if let_in else ''}")


@pytest.mark.criteria("AC-MESH-MTLS")
@pytest.mark.needs("stack")
@allure.title("Under STRICT mTLS a model's Pod refuses plaintext from outside the mesh; the gateway path answers")
def test_strict_mtls_refuses_plaintext_from_outside_the_mesh(kube, profile, test_namespace, ingress_url, deadline,
                                                             diagnostics, evidence):
    """The mesh's Iris must get STRICT from the cluster's PeerAuthentications and an Envoy sidecar that enforces it;
    a plaintext predict through the API server's pod proxy (a client outside the mesh) must get no answer from the
    Pod, and a predict through the ingress gateway, inside the mesh, must."""
    ns, isvc, pod = _iris_in_the_mesh(kube, profile, test_namespace, deadline, diagnostics, "mtls")
    policies, _ = kube.list(mesh.SECURITY_API, mesh.PA_KIND)
    name, port = pod["metadata"]["name"], _model_port(pod)
    mode = mesh.effective_mode(policies, ns, pod["metadata"].get("labels") or {}, port)
    evidence.add("mTLS policy", {
        "pod": f"{ns}/{name}", "port": port, "mTLS mode": str(mode), "sidecar": mesh.has_sidecar(pod),
        "PeerAuthentications": sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies)})
    expect(mode.mode == "STRICT", Category.SECURITY,
           f"mTLS for {ns}/{name}:{port} is {mode}: a fresh model namespace gets only the mesh-wide policy "
           f"({mesh.ROOT_NAMESPACE}), so STRICT must be set there")
    _expect_sidecar(pod, "STRICT")
    answers = _from_outside_and_through_the_gateway(kube, profile, ingress_url, isvc, pod, port, deadline, evidence,
                                                    "plaintext from outside the mesh")
    _expect_kept_out(pod, port, answers, f"under {mode}", refused_only=True)


@pytest.mark.criteria("AC-MESH-AUTHZ")
@pytest.mark.needs("stack")
@allure.title("The profile's AuthorizationPolicy keeps out a request without its principal; the gateway path answers")
def test_the_authorization_policy_keeps_out_a_request_without_its_principal(kube, profile, test_namespace,
                                                                           ingress_url, deadline, diagnostics,
                                                                           evidence):
    """The profile's ALLOW rules (each requires a principal or a source namespace: checked when the profile loads) go
    on the mesh's Iris as an AuthorizationPolicy before the model starts, so its sidecar starts with them; a plaintext
    predict through the API server's pod proxy, which carries no principal, must be kept out (denied 403 by the
    sidecar, or refused under STRICT), and a predict through the ingress gateway must still answer."""

    def put_policy(ns: str) -> None:
        kube.apply(mesh.model_policy(ns, NAME, profile.authorization_rules))
    ns, isvc, pod = _iris_in_the_mesh(kube, profile, test_namespace, deadline, diagnostics, "authz", put_policy)
    port = _model_port(pod)
    evidence.add("authorization policy", {"policy": f"{ns}/{mesh.AUTHZ_NAME}", "rules": profile.authorization_rules,
                                          "pod": f"{ns}/{pod['metadata']['name']}", "sidecar": mesh.has_sidecar(pod)})
    _expect_sidecar(pod, f"AuthorizationPolicy {ns}/{mesh.AUTHZ_NAME}")
    answers = _from_outside_and_through_the_gateway(kube, profile, ingress_url, isvc, pod, port, deadline, evidence,
                                                    "a request without a principal")
    _expect_kept_out(pod, port, answers, f"without a principal, under AuthorizationPolicy {ns}/{mesh.AUTHZ_NAME}")
