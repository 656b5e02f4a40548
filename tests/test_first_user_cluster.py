"""The first user's cluster as it really is (twin scenario first-user, twin/scenarios.py): the seed stack installed by
hand in July 2025 and run since, verified as the first user verifies it: `--cluster existing --install never`, as the
least-privilege verifier of deploy/rbac/verifier.yaml, on a Kubernetes outside the seed's tested range.

One run of the whole suite, read by every test here: the verdict is FAIL and names exactly what the cluster really
has wrong (no ingress gateway, and every check that serves a model blocked by it), the image from a retired registry
as a risk, the support-matrix finding; and no false alarm (old restarts are evidence, not a crash loop)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.failures import Category
from tests.helpers import ROOT
from tests.twinruns import Run, run_suite

pytestmark = [pytest.mark.twin, pytest.mark.xdist_group("first-user")]

# What the cluster really has wrong, and so what must fail: the Istio criterion and AC-ALL-READY (the gateway's
# Deployment is absent), and every criterion whose checks serve a model through the stack (blocked by it). Nothing
# else: the webhooks, certificates, CRDs, security and the other components pass as they run.
GATEWAY_BLOCKS = {"AC-IRIS-PREDICT", "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}
# And AC-HA, which the run requires (--require AC-HA): one replica of everything, all on one worker.
EXPECTED_FAILED = {"AC-ALL-READY", "AC-ISTIO", "AC-HA"} | GATEWAY_BLOCKS
RUN_SECONDS = 600          # the bound for a run on this scenario: beyond it the run is stopped and fails


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    from twin import Twin
    workdir = tmp_path_factory.mktemp("first-user")
    twin = Twin("seed", scenario="first-user", workdir=workdir / "twin").start()
    try:
        # the documented commands, as the cluster's admin: the verifier's role and guard, its kubeconfig
        for argv in (["apply", "--guard"], ["kubeconfig", "--out", str(workdir / "verifier.kubeconfig")]):
            done = subprocess.run([sys.executable, "-m", "stack.rbac", *argv, "--kubeconfig",
                                   str(twin.kubeconfig_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        started = time.monotonic()
        # No KSTACK_INGRESS_URL: the cluster has no gateway to give one for.
        result = run_suite(workdir / "run", "--cluster", "existing", "--kubeconfig", str(workdir / "verifier.kubeconfig"),
                           "--context", "kstack-verifier", "--profile", "seed", "--require", "AC-HA",
                           env={"KSTACK_INGRESS_URL": ""},
                           timeout=RUN_SECONDS)
        result.seconds = time.monotonic() - started
        print(f"first-user run: {result.seconds:.0f} s, verdict {result.doc['verdict']}")
        yield result
    finally:
        twin.stop()


def test_the_verdict_is_fail_naming_exactly_the_criteria_the_cluster_really_breaks(run):
    failed = {cid for cid, status in run.statuses().items() if status == "failed"}
    assert run.doc["verdict"] == "FAIL", run.doc["verdict_reasons"]
    assert failed == EXPECTED_FAILED, run.output[-3000:]
    # the twin's own account of itself, read from its node by a run that met it through a kubeconfig
    assert run.doc["simulated"] is True and run.doc["simulation"]["scenario"] == "first-user"
    assert {"twin-scenario-restarts", "twin-scenario-nodes", "twin-scenario-images"} <= {
        lim["id"] for lim in run.doc["limitations"]}


def test_the_missing_gateway_is_named_at_once_and_blocks_every_check_that_serves_a_model(run):
    (istio,) = [f for f in run.failures_of("AC-ISTIO") if "test_workloads_ready" in f["id"]]
    assert "deployment istio-system/istio-ingressgateway absent" in istio["message"]
    for criterion in GATEWAY_BLOCKS:
        for failure in run.failures_of(criterion):
            assert failure["blocked_by"] == "AC-ISTIO", failure
            assert "istio-ingressgateway absent" in failure["root_cause"], failure
    # blocked before they wait: each such test took seconds, not its budget
    blocked = {f["id"] for c in GATEWAY_BLOCKS for f in run.failures_of(c)}
    seconds = _seconds_by_test(run)
    assert blocked <= set(seconds), sorted(blocked - set(seconds))
    slow = {t: seconds[t] for t in blocked if seconds[t] > 30}
    assert not slow, slow


def test_ac_ha_names_each_single_point_of_failure_and_nothing_the_twin_made_up(run):
    """Required with --require AC-HA: every workload of the seed profile's ha: sections is named (one Ready replica,
    one node; the gateway absent), the budgets that block a drain (istiod's chart PDB and Knative's 80% ones over one
    replica), every Fail webhook behind one endpoint; and no Lease finding: each leader holds and renews its Lease
    from a Ready Pod, on this cluster too."""
    from stack.profile import Profile
    (failure,) = run.failures_of("AC-HA")
    assert failure["category"] == Category.AVAILABILITY.title and failure["category_source"] == "recorded"
    findings = run.doc["ha"]["findings"]
    named = {f.split(": ", 1)[0] for f in findings}
    assert {w.ref for w in Profile.load("seed").ha_workloads()} <= named, findings
    assert "istio-system/istio-ingressgateway: the Deployment is absent" in findings
    for budget in ("istiod (minAvailable 1, 1 of 1 Pods healthy)", "activator-pdb (minAvailable 80%, 1 of 1 Pods healthy)"):
        assert any(budget in f for f in findings), budget
    assert any("ValidatingWebhookConfiguration/inferenceservice.serving.kserve.io" in f and "1 ready endpoint" in f
               for f in findings), findings
    assert not [f for f in findings if "Lease" in f], [f for f in findings if "Lease" in f]
    leases = {w["workload"]: w["leases"] for w in run.doc["ha"]["workloads"]}
    assert "kserve/kserve-controller-manager-leader-lock: kserve-controller-manager-" in \
        leases["kserve/kserve-controller-manager"]          # the real controller's <hostname>_<uuid>: its Pod's name
    assert "-external-cert-manager-controller (renewed" in leases["cert-manager/cert-manager"]
    assert "## High availability\n\nnot highly available\n" in run.signoff_md()


def test_old_restarts_are_evidence_not_a_crash_loop(run):
    categories = {f["category"] for f in run.doc["failures"]}
    assert Category.CRASH_LOOP.title not in categories, run.doc["failures"]
    restarts = [e for e in run.doc["evidence"] if e["what"].startswith("past restarts")]
    text = json.dumps(restarts)
    assert "restarted 41 times, last Error (exit 1) 12d ago" in text           # Knative's controller
    assert "restarted 3 times, last OOMKilled (exit 137) 61d ago" in text      # istiod


def test_the_support_matrix_finding_and_the_retired_registry_risk_are_in_the_sign_off(run):
    support = run.doc["support"]
    assert support["tested_range"] == "1.25-1.27" and support["profile"] == "seed"
    assert support["server_version"] == run.doc["cluster"]["server_version"]
    assert "**Outside the tested range:**" in run.signoff_md()
    risks = [lim["text"] for lim in run.doc["limitations"] if lim["id"] == "image-from-retired-registry"]
    assert risks == ["kserve/kserve-controller-manager container kube-rbac-proxy runs "
                     "gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1: gcr.io/kubebuilder was deleted (announced for "
                     "2025: kubebuilder designs/discontinue_usage_of_kube_rbac_proxy.md, kubernetes/k8s.io#2647); a "
                     "new or rescheduled Pod cannot pull it"]
    # the release's own image is what a hand install runs: not drift
    assert run.statuses()["AC-KSERVE-CONTROLLER"] == "passed"


def test_the_run_is_bounded(run):
    assert run.seconds < RUN_SECONDS
    assert run.doc["duration_seconds"] < 300, "a run against a broken stack reaches its verdict within 5 minutes"


def _seconds_by_test(run: Run) -> dict[str, float]:
    """Each test's duration (its setup included) from its Allure result, by the test's stable id (as_id)."""
    out = {}
    for path in Path(run.results).glob("*-result.json"):
        data = json.loads(path.read_text())
        as_id = next((label["value"] for label in data.get("labels", []) if label["name"] == "as_id"), None)
        if as_id:
            out[as_id] = (data.get("stop", 0) - data.get("start", 0)) / 1000
    return out
