"""Failure categories: order, Python classification of tagged (check) and untagged (foreign) messages, and the same
regexes under JavaScript (Allure 3)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from reports.categories import CATEGORY_NAMES, categories, classify, title, write_categories
from stack.failures import Category, CheckFailure

SAMPLES = [
    ("broken", "Docker daemon not reachable at unix:///var/run/docker.sock: is Docker running?", "Infrastructure"),
    ("broken", "kind cluster kstack could not be created: node container exited", "Infrastructure"),
    ("failed", "API server unreachable at https://127.0.0.1:6443 after 3 retries", "Infrastructure"),
    ("broken", "dial tcp 127.0.0.1:6443: connect: connection refused (API server of context kind-kstack)",
     "Infrastructure"),
    ("failed", "timed out after 300s waiting for deployment kserve/kserve-controller-manager to be Available; "
               "last observed: pod kserve-controller-manager-7d4b ImagePullBackOff", "Image pull"),
    ("failed", "pod istiod-748d: ErrImagePull for docker.io/istio/pilot:1.19.0", "Image pull"),
    ("failed", "InferenceService sklearn-iris not ready: failed calling webhook "
               "\"inferenceservice.kserve-webhook-server.defaulter\": x509: certificate signed by unknown authority",
     "Webhook/TLS not ready"),
    ("failed", "timed out after 120s: webhook not admitting: no endpoints available for service "
               "\"kserve-webhook-server-service\"", "Webhook/TLS not ready"),
    ("failed", "ValidatingWebhookConfiguration inferenceservice.serving.kserve.io has an empty caBundle",
     "Webhook/TLS not ready"),
    ("broken", "install failed: cert-manager: helm upgrade --install exited 1: chart not found", "Install failure"),
    ("failed", "Failed: install failed: knative did not become ready: deployment knative-serving/autoscaler: 0/1 "
               "ready; container autoscaler CrashLoopBackOff (gcr.io/knative-releases/x@sha256:1)", "Install failure"),
    ("broken", "cannot download https://github.com/knative/serving/releases/"
               "download/knative-v1.11.0/serving-core.yaml: x509: certificate has expired", "Install failure"),
    ("failed", "deployment knative-serving/activator 0/1 ready; pod activator-8d45 CrashLoopBackOff (5 restarts)",
     "Crash loop"),
    ("failed", "CRD inferenceservices.serving.kserve.io not Established", "CRD missing or not Established"),
    ("failed", "deployment kserve/kserve-controller-manager 0/1 ready; no pods yet", "Component not ready"),
    ("failed", "node kstack-control-plane NotReady", "Component not ready"),
    ("failed", "timed out after 600s waiting for InferenceService kserve-test/sklearn-iris; "
               "last observed: Ready=Unknown, reason RevisionMissing", "Timeout"),
    ("broken", "context deadline exceeded while watching certificates", "Timeout"),
    ("failed", "AssertionError: Certificate kstack-test/roundtrip has SANs ['a.example'], expected ['b.example']",
     "Product defect (wrong result)"),
    ("failed", "AssertionError: CRD trainedmodels.serving.kserve.io is missing", "Product defect (wrong result)"),
    ("broken", "TypeError: 'NoneType' object is not subscriptable", "Test defect"),
]
# Messages of check failures carry their category's tag, which wins over any text in them.
TAGGED = [
    ("failed", "stack.wait.TerminalState: [image-pull] kserve ready: deployment ... ImagePullBackOff", "Image pull"),
    ("failed", "stack.wait.TerminalState: [crash-loop] kserve ready: timed out ... x509", "Crash loop"),
    ("failed", "stack.wait.WaitTimeout: [certificate] Certificate ns/leaf Ready: timed out after 6s", "Certificate issuance"),
    ("failed", "stack.kube.Forbidden: [permission] forbidden: this identity may not list pods in namespace kserve (RBAC)",
     "Permission denied (RBAC)"),
    ("failed", "stack.failures.CheckFailure: [certificate] leaf DNS SANs are ['a'], expected ['b']",
     "Certificate issuance"),
    ("failed", "stack.failures.CheckFailure: [predict] v1 predictions are [0, 0], expected [1, 1]",
     "InferenceService or prediction"),
    ("failed", "[crd] kserve CRDs: CRD trainedmodels.serving.kserve.io absent", "CRD missing or not Established"),
    ("failed", "fixtures.plugin.InstallFailed: [install] install failed at kserve (readiness): x509: no", "Install failure"),
    ("failed", "[webhook-tls] istio webhook CA bundles: caBundle is not valid PEM; API server unreachable",
     "Webhook/TLS not ready"),
    ("failed", "[infrastructure] ImagePullBackOff mentioned", "Infrastructure"),
    ("failed", "[not-ready] knative workloads: deployment 0/1 ready; timed out", "Component not ready"),
    ("failed", "stack.failures.CheckFailure: [security] system:serviceaccount:ns:default may get secrets in ns",
     "Security policy"),
    ("failed", "stack.failures.CheckFailure: [monitoring] request_predict_seconds_count rose by 0, expected 5 (timed out)",
     "Monitoring"),
    ("failed", "stack.failures.CheckFailure: [autoscaling] PodAutoscaler ns/x: max-scale is None, expected '3'",
     "Autoscaling"),
    ("failed", "stack.failures.CheckFailure: [availability] kserve/kserve-controller-manager: 1 Ready replica(s), not "
               "ready enough for HA", "High availability"),
]


def test_exact_category_names_in_order():
    assert list(CATEGORY_NAMES) == [
        "Infrastructure", "Image pull", "Webhook/TLS not ready", "Install failure", "Crash loop",
        "CRD missing or not Established", "Permission denied (RBAC)", "Certificate issuance", "InferenceService or prediction",
        "Security policy", "Monitoring", "Autoscaling", "High availability", "Component not ready", "Timeout",
        "Product defect (wrong result)", "Test defect"]
    assert {title(c.value) for c in Category} <= set(CATEGORY_NAMES)
    assert [c["name"] for c in categories()] == list(CATEGORY_NAMES)
    for c in categories():
        assert set(c) <= {"name", "matchedStatuses", "messageRegex"}
        assert set(c["matchedStatuses"]) <= {"failed", "broken"}


@pytest.mark.parametrize("status,message,expected", SAMPLES, ids=[s[2] + ":" + s[1][:30] for s in SAMPLES])
def test_classify(status, message, expected):
    assert classify(status, message) == expected


@pytest.mark.parametrize("status,message,expected", TAGGED, ids=[s[2] + ":" + s[1][-30:] for s in TAGGED])
def test_a_tag_wins_over_text(status, message, expected):
    assert classify(status, message) == expected


def test_every_structured_category_is_matched_by_its_own_tag():
    for category in Category:
        message = f"stack.failures.CheckFailure: {CheckFailure('anything', category)}"
        assert classify("failed", message) == category.title, category


def test_every_category_has_a_sample():
    assert {s[2] for s in SAMPLES + TAGGED} == set(CATEGORY_NAMES)


def test_not_a_failure():
    assert classify("passed", "") is None
    assert classify("skipped", "timed out after 5s") is None
    assert classify("failed", None) == "Product defect (wrong result)"


def test_multiline_message():
    assert classify("failed", "waiting for pods\nlast observed:\n  kserve/x ImagePullBackOff\n") == "Image pull"


def test_write_categories(tmp_path):
    path = write_categories(tmp_path)
    assert json.loads(path.read_text()) == categories()


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_javascript_agrees():
    """Allure 3 matches messageRegex with RegExp.test; Allure 2 with Java's Pattern.matches (whole string), which
    Python's fullmatch mirrors. Both must give the same first match."""
    script = """
const cats = JSON.parse(process.argv[1]); const samples = JSON.parse(process.argv[2]);
console.log(JSON.stringify(samples.map(([status, msg]) => {
  const c = cats.find(c => c.matchedStatuses.includes(status) && (!c.messageRegex || new RegExp(c.messageRegex).test(msg)));
  return c ? c.name : null; })));
"""
    proc = subprocess.run(["node", "-e", script, json.dumps(categories()), json.dumps(SAMPLES + TAGGED)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(proc.stdout) == [s[2] for s in SAMPLES + TAGGED]


def test_regexes_compile_without_inline_flags():
    for c in categories():
        if "messageRegex" in c:
            re.compile(c["messageRegex"])
            assert "(?i" not in c["messageRegex"] and "(?s" not in c["messageRegex"]
