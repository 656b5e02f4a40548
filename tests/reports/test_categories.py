"""Failure categories: order, Python classification, and the same regexes under JavaScript (Allure 3)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from reports.categories import CATEGORY_NAMES, categories, classify, write_categories

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
    ("broken", "install of knative failed: manifest download https://github.com/knative/serving/releases/"
               "download/knative-v1.11.0/serving-core.yaml: x509: certificate has expired", "Install failure"),
    ("failed", "deployment knative-serving/activator 0/1 ready; pod activator-8d45 CrashLoopBackOff (5 restarts)",
     "Component not ready"),
    ("failed", "CRD inferenceservices.serving.kserve.io not Established", "Component not ready"),
    ("failed", "node kstack-control-plane NotReady", "Component not ready"),
    ("failed", "timed out after 600s waiting for InferenceService kserve-test/sklearn-iris; "
               "last observed: Ready=Unknown, reason RevisionMissing", "Timeout"),
    ("broken", "context deadline exceeded while watching certificates", "Timeout"),
    ("failed", "AssertionError: Certificate kstack-test/roundtrip has SANs ['a.example'], expected ['b.example']",
     "Product defect (wrong result)"),
    ("failed", "AssertionError: CRD trainedmodels.serving.kserve.io is missing", "Product defect (wrong result)"),
    ("broken", "TypeError: 'NoneType' object is not subscriptable", "Test defect"),
]


def test_exact_category_names_in_order():
    assert list(CATEGORY_NAMES) == [
        "Infrastructure", "Image pull", "Webhook/TLS not ready", "Install failure", "Component not ready", "Timeout",
        "Product defect (wrong result)", "Test defect"]
    assert [c["name"] for c in categories()] == list(CATEGORY_NAMES)
    for c in categories():
        assert set(c) <= {"name", "matchedStatuses", "messageRegex"}
        assert set(c["matchedStatuses"]) <= {"failed", "broken"}


@pytest.mark.parametrize("status,message,expected", SAMPLES, ids=[s[2] + ":" + s[1][:30] for s in SAMPLES])
def test_classify(status, message, expected):
    assert classify(status, message) == expected


def test_every_category_has_a_sample():
    assert {s[2] for s in SAMPLES} == set(CATEGORY_NAMES)


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
    proc = subprocess.run(["node", "-e", script, json.dumps(categories()), json.dumps(SAMPLES)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(proc.stdout) == [s[2] for s in SAMPLES]


def test_regexes_compile_without_inline_flags():
    for c in categories():
        if "messageRegex" in c:
            re.compile(c["messageRegex"])
            assert "(?i" not in c["messageRegex"] and "(?s" not in c["messageRegex"]
