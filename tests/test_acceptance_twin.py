"""End to end: `pytest suites/acceptance --cluster twin` for every shipped profile, and each twin fault failing exactly
the matching criteria while the unrelated ones pass. Each case runs the suite as a user would, in a subprocess, and
reads the sign-off it wrote.

A profile's whole run is made once per session and read by every test that needs it (tests/twinruns.py); the fault
runs attach to a shared twin of their worker, which strikes the fault before the run and undoes it after, and the
health gate after each run must find nothing left of it."""
from __future__ import annotations

import contextlib
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from stack.failures import Category
from stack.profile import Profile, available_profiles
from tests.twinruns import Run, run_suite

pytestmark = [pytest.mark.slow, pytest.mark.twin]

ALL = {"AC-ISTIO", "AC-KNATIVE", "AC-CERT-MANAGER", "AC-KSERVE-CONTROLLER", "AC-ALL-READY", "AC-CRDS", "AC-WEBHOOKS",
       "AC-CERT-ROUNDTRIP", "AC-IRIS-PREDICT", "AC-IRIS-S3", "AC-RBAC-DEFAULT-SA", "AC-CERT-EXPIRY", "AC-METRICS",
       "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}


def fresh_twin_run(folder: Path, *args: str, env: dict | None = None) -> Run:
    """A run that starts a twin of its own (`--cluster twin`), as a user's first run does."""
    return run_suite(folder, "--cluster", "twin", *args, env=env)


# The whole runs tests read, made once per session (tests/twinruns.py SharedRuns): each profile as shipped, and
# latest with KServe's controller unable to pull its image (the matrix page's faulty column, and the blocked checks).
# They attach to the worker's shared twin of the profile, but one: latest-standard starts a twin of its own, as
# `pytest suites/acceptance --cluster twin` does for a user (the start path of a run that passes).
CONTROLLER_PULL = "imagepull:kserve/kserve-controller-manager"
FRESH_PROFILE = "latest-standard"


def profile_run(shared_runs, shared_twins, profile: str) -> Run:
    if profile == FRESH_PROFILE:
        return shared_runs.get(f"profile-{profile}", lambda folder: fresh_twin_run(folder, "--profile", profile))
    return shared_runs.get(f"profile-{profile}", lambda folder: shared_twins(profile).run(folder, []))


def controller_pull_run(shared_runs, shared_twins) -> Run:
    return shared_runs.get("latest-controller-pull", lambda folder: shared_twins("latest").run(
        folder, [CONTROLLER_PULL], "--timeout-scale", "0.05"))


# Faults under which many checks wait out their budgets (every InferenceService stays unready, or nothing scales
# to zero): their runs spread the checks over two workers, a module each, so the waits overlap (the CPU is idle
# meanwhile); a whole run all the same.
WAITING = {"isvc-stuck", "cabundle-invalid:istiod-default-validator", "scale-to-zero-stuck"}


def fault_run(shared_runs, shared_twins, fault: str) -> Run:
    """seed with one fault, on this worker's shared seed twin (made once per session, read by the fault table and
    the category test)."""
    parallel = ("-n", "2", "--dist", "loadscope") if fault in WAITING else ()
    return shared_runs.get(f"fault-{fault}", lambda folder: shared_twins("seed").run(
        folder, [fault], "--timeout-scale", "0.05", *parallel))


def statuses(doc: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["criteria"]}


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_passes_on_the_twin(shared_runs, shared_twins, profile):
    run = profile_run(shared_runs, shared_twins, profile)
    doc, output = run.doc, run.output
    assert doc["verdict"] == "PASS", output[-5000:]
    assert doc["simulated"] is True
    # every check ran, the S3 variant too: the twin hands over its own S3 store
    # only a criterion that does not apply to the profile leaves a test skipped (with its reason)
    inapplicable = {t for c in doc["criteria"] if not c["applicable"] for t in c["tests"]}
    assert set(doc["inventory"]["missing"]) <= inapplicable and set(doc["inventory"]["skipped"]) <= inapplicable, \
        doc["inventory"]
    assert statuses(doc)["AC-IRIS-S3"] == "passed"
    # the security and monitoring criteria ran; a restricted predictor is required where KServe's runtimes declare it
    assert all(statuses(doc)[c] == "passed" for c in ("AC-RBAC-DEFAULT-SA", "AC-CERT-EXPIRY", "AC-METRICS",
                                                      "AC-AUTOSCALING"))
    assert statuses(doc)["AC-POD-SECURITY"] == ("not-run" if profile == "seed" else "passed")
    for serverless_only in ("AC-SCALE-TO-ZERO", "AC-SCALE-OUT"):
        assert statuses(doc)[serverless_only] == ("not-run" if profile == "latest-standard" else "passed")
    assert statuses(doc)["AC-PROMQL"] == "not-run"      # optional, and no Prometheus was given
    assert statuses(doc)["AC-MONITORS"] == "not-run"    # optional, and the profile declares no monitors
    assert statuses(doc)["AC-MESH-MTLS"] == "not-run"   # optional, and the profile does not require it
    assert statuses(doc)["AC-MESH-AUTHZ"] == "not-run"  # optional, and the profile declares no authorization policy
    # latest installs the stack HA and requires AC-HA; every profile's sign-off shows the posture all the same
    assert statuses(doc)["AC-HA"] == ("passed" if profile == "latest" else "not-run")
    assert doc["ha"]["workloads"] and ("## High availability" in run.signoff_md())
    for fmt in ("signoff.md", "signoff.html"):
        assert "SIMULATED" in (run.out / fmt).read_text()[:3000]
    if profile == "latest-standard":
        assert statuses(doc)["AC-ISTIO"] == "not-run" and statuses(doc)["AC-KNATIVE"] == "not-run"
    # every passing criterion carries evidence: a test that proves it recorded what it saw, with facts
    proven = {c for e in doc["evidence"] if e["status"] == "passed" and e["facts"] for c in e["criteria"]}
    passed = {c for c, s in statuses(doc).items() if s == "passed"}
    assert passed <= proven, f"passing criteria without evidence: {sorted(passed - proven)}"
    whats = {e["what"] for e in doc["evidence"]}
    assert {"issued certificate", "predict v1", "running images (with digests where the pods report them)",
            "CRDs and their served versions"} <= whats or profile == "latest-standard", whats
    assert {"S3 store", "predict v1 (model from S3)"} <= whats, whats


# fault -> the criteria it must fail (everything else applicable must still pass), and the category its checks record
FAULTS = {
    # Knative's autoscaler in a crash loop: its workloads fail, and every check that deploys a model ends its wait at
    # once, blocked by AC-KNATIVE (a Revision is Ready only once its PodAutoscaler is, which the autoscaler makes so).
    "crashloop:knative-serving/autoscaler": ({"AC-ALL-READY", "AC-KNATIVE", "AC-IRIS-PREDICT", "AC-IRIS-S3",
                                              "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"},
                                             Category.CRASH_LOOP),
    "imagepull:cert-manager/cert-manager-cainjector": ({"AC-ALL-READY", "AC-CERT-MANAGER"}, Category.IMAGE_PULL),
    # Knative's activator scaled to 0 for maintenance and left so: its workloads fail at once (nothing scales it
    # back), and every check that serves a model fails at once, blocked by AC-KNATIVE, without deploying one.
    "scaled-down:knative-serving/activator": ({"AC-ALL-READY", "AC-KNATIVE", "AC-IRIS-PREDICT", "AC-IRIS-S3",
                                               "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"},
                                              Category.NOT_READY),
    # A CRD no controller of the stack needs to serve a model: the CRD checks see it, Iris still answers.
    "crd-missing:clusterdomainclaims.networking.internal.knative.dev": ({"AC-CRDS", "AC-KNATIVE"}, Category.CRD),
    # Istio's validator (failurePolicy Fail once istiod is up) rejects the VirtualService KServe's real controller
    # writes for Iris, so the model is never routed: predict fails too, as it would on a real cluster.
    "cabundle-invalid:istiod-default-validator": ({"AC-WEBHOOKS", "AC-ISTIO", "AC-IRIS-PREDICT", "AC-IRIS-S3",
                                                   "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO",
                                                   "AC-SCALE-OUT"}, Category.WEBHOOK_TLS),
    "cert-stuck": ({"AC-CERT-ROUNDTRIP", "AC-CERT-MANAGER"}, Category.CERTIFICATE),
    "cert-wrong-san": ({"AC-CERT-ROUNDTRIP", "AC-CERT-MANAGER"}, Category.CERTIFICATE),
    # Every check that needs a model served fails with it (the autoscaling check deploys one of its own).
    "isvc-stuck": ({"AC-IRIS-PREDICT", "AC-IRIS-S3", "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO",
                    "AC-SCALE-OUT"}, Category.PREDICT),
    "predict-wrong": ({"AC-IRIS-PREDICT", "AC-IRIS-S3"}, Category.PREDICT),
    # The S3 settings a user got wrong: only the S3 variant fails, its storage initializer naming the cause
    # (KServe's storage code against the twin's S3 store).
    "s3-wrong-credentials": ({"AC-IRIS-S3"}, Category.CRASH_LOOP),
    "s3-no-bucket": ({"AC-IRIS-S3"}, Category.CRASH_LOOP),
    "s3-wrong-key": ({"AC-IRIS-S3"}, Category.CRASH_LOOP),
    # One fault per security and monitoring area, each failing its own criterion only.
    "default-sa-reads-secrets": ({"AC-RBAC-DEFAULT-SA"}, Category.SECURITY),
    "cert-expiring": ({"AC-CERT-EXPIRY"}, Category.SECURITY),
    "metrics-not-counting": ({"AC-METRICS"}, Category.MONITORING),
    # No PodAutoscaler: the spec is not in force, and nothing scales the revision, to zero or out.
    "autoscaler-missing": ({"AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}, Category.AUTOSCALING),
    "scale-to-zero-stuck": ({"AC-SCALE-TO-ZERO"}, Category.AUTOSCALING),
}
assert set(FAULTS) >= WAITING, "a waiting fault is a fault of the table"
S3_CAUSE = {"s3-wrong-credentials": "S3 error [403]: Forbidden",
            "s3-no-bucket": "S3 resource 'kstack-no-such-bucket' not found",
            "s3-wrong-key": "Failed to fetch model. No model found in no-such-model"}


def recorded_categories(doc: dict) -> set[str]:
    """The categories of the run's failures; every failure must carry the one its check recorded."""
    unrecorded = [f for f in doc["failures"] if f["category_source"] != "recorded"]
    assert not unrecorded, f"failures without a recorded category: {unrecorded}"
    return {f["category"] for f in doc["failures"]}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_exactly_its_criteria_with_its_category(shared_runs, shared_twins, fault):
    run = fault_run(shared_runs, shared_twins, fault)
    doc, output = run.doc, run.output
    criteria, category = FAULTS[fault]
    got = statuses(doc)
    failed = {c for c, s in got.items() if s == "failed"}
    assert failed == criteria, f"{fault}: failed {sorted(failed)}\n{output[-5000:]}"
    assert all(got[c] == "passed" for c in ALL - criteria), got
    assert doc["verdict"] == "FAIL"
    assert category.title in recorded_categories(doc), doc["failures"]
    if fault in S3_CAUSE:       # one failure, in KServe's storage initializer's own words
        s3 = [f for f in doc["failures"] if "AC-IRIS-S3" in f["criteria"]]
        assert len(s3) == 1 and S3_CAUSE[fault] in s3[0]["message"], s3
    assert doc["simulation"]["faults"] == [fault], doc["simulation"]["faults"]     # the sign-off names it
    # undone without a trace: the shared twin's health gate found nothing of it after the run
    assert run.health == [], f"{fault} left: {run.health}"


# Availability faults (AC-HA) on latest, the profile installed HA: each fails AC-HA alone, naming what it broke.
HA_FAULTS = {
    "single-replica:knative-serving/controller": ("knative-serving/controller", {"replicas", "spread"}),
    "single-replica:cert-manager/cert-manager-webhook": (
        "cert-manager/cert-manager-webhook", {"replicas", "spread", "webhook"}),
    "one-node:kserve/kserve-controller-manager": ("kserve/kserve-controller-manager", {"spread"}),
    "pdb-blocks:knative-serving/activator-pdb": ("knative-serving/activator", {"budget"}),
    "lease-stale:kube-system/cert-manager-controller": ("cert-manager/cert-manager", {"lease"}),
}
ASPECT_WORDS = {"replicas": "Ready replica(s), fewer than", "spread": "its Ready Pods run on 1 node",
                "budget": "allows no disruption now", "lease": "which is no Pod of",
                "webhook": "a single point of failure for admission"}


def availability_fault_run(shared_runs, shared_twins, fault: str) -> Run:
    return shared_runs.get(f"ha-fault-{fault}", lambda folder: shared_twins("latest").run(
        folder, [fault], "--timeout-scale", "0.05"))


@pytest.mark.parametrize("fault", sorted(HA_FAULTS))
def test_each_availability_fault_fails_exactly_ac_ha_naming_what_it_broke(shared_runs, shared_twins, fault):
    run = availability_fault_run(shared_runs, shared_twins, fault)
    doc = run.doc
    failed = {c for c, s in statuses(doc).items() if s == "failed"}
    assert failed == {"AC-HA"}, f"{fault}: failed {sorted(failed)}\n{run.output[-4000:]}"
    assert all(c["status"] == "passed" for c in doc["criteria"] if c["applicable"] and c["id"] != "AC-HA"), \
        [(c["id"], c["status"]) for c in doc["criteria"] if c["applicable"]]
    assert Category.AVAILABILITY.title in recorded_categories(doc)
    subject, aspects = HA_FAULTS[fault]
    # its own workload, and (a webhook's server scaled down) the webhook configurations it serves; nothing else
    named = (subject,) + (("ValidatingWebhookConfiguration/cert-manager-webhook",
                           "MutatingWebhookConfiguration/cert-manager-webhook") if "webhook" in aspects else ())
    findings = doc["ha"]["findings"]
    assert findings and all(f.startswith(named) for f in findings), findings
    for aspect in aspects:
        assert any(ASPECT_WORDS[aspect] in f for f in findings), (aspect, findings)
    assert run.health == [], f"{fault} left: {run.health}"


def test_checks_that_need_a_broken_controller_are_blocked_by_it_with_its_root_cause(shared_runs, shared_twins):
    """KServe's controller cannot pull its image (latest): the Iris checks and KServe's admission check fail FAILED
    (not broken), blocked by AC-KSERVE-CONTROLLER, filed under Image pull, naming the image, in every output."""
    run = controller_pull_run(shared_runs, shared_twins)
    doc, output, results = run.doc, run.output, run.results
    got = statuses(doc)
    failed = {c for c, s in got.items() if s == "failed"}
    assert failed == {"AC-ALL-READY", "AC-KSERVE-CONTROLLER", "AC-WEBHOOKS", "AC-IRIS-PREDICT", "AC-IRIS-S3",
                      "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT", "AC-POD-SECURITY",
                      "AC-HA"}, \
        f"{sorted(failed)}: {[(f['id'], f['message'][:300]) for f in doc['failures']]}"
    assert all(got[c] == "passed" for c in ALL - failed), got
    iris = [f for f in doc["failures"] if "AC-IRIS-PREDICT" in f["criteria"]]
    assert iris and all(f["status"] == "failed" and f["blocked_by"] == "AC-KSERVE-CONTROLLER" for f in iris), iris
    assert all(f["category"] == Category.IMAGE_PULL.title for f in iris), iris
    image = "kserve/kserve-controller:v0.20.0"
    assert all("ImagePull" in f["root_cause"] and image in f["root_cause"] for f in iris), iris   # ErrImagePull or -BackOff
    # the workloads check is the root: never blocked by itself
    assert not [f for f in doc["failures"] if f["id"].startswith("workloads.") and f["blocked_by"]]
    criterion = next(c for c in doc["criteria"] if c["id"] == "AC-IRIS-PREDICT")
    assert criterion["blocked_by"] == ["AC-KSERVE-CONTROLLER"], criterion
    assert "blocked by AC-KSERVE-CONTROLLER" in run.signoff_md()
    messages = [json.loads(f.read_text()) for f in results.glob("*-result.json")]
    allure_iris = [r for r in messages if r.get("fullName", "").rpartition("#")[2] in
                   ("test_iris_ready", "test_iris_predict_v1", "test_iris_predict_v2")]
    assert allure_iris and all(r["status"] == "failed" and "blocked by AC-KSERVE-CONTROLLER" in
                               r["statusDetails"]["message"] for r in allure_iris), allure_iris
    assert "blocked by AC-KSERVE-CONTROLLER (kserve)" in output and image in output
    # the blocker's namespace is in the failed tests' diagnostics, events included (a fixture's failure attaches them
    # to the fixture, in the container files)
    attached = {a["name"] for r in allure_iris for a in r.get("attachments", [])}
    attached |= {a["name"] for f in results.glob("*-container.json") for part in ("befores", "afters")
                 for b in json.loads(f.read_text()).get(part, []) for a in b.get("attachments", [])}
    assert "events-kserve.txt" in attached, attached
    assert run.health == [], run.health         # the controller pulls again once the fault is undone


def test_an_api_that_keeps_failing_is_an_infrastructure_failure(shared_twins, tmp_path):
    run = shared_twins("seed").run(tmp_path, ["api-flaky:1.0"], "--install", "never", "--timeout-scale", "0.05")
    doc, output = run.doc, run.output
    assert doc["verdict"] == "FAIL"
    assert recorded_categories(doc) == {Category.INFRASTRUCTURE.title}, output[-3000:]
    assert doc["retries"]["by_layer"].get("api", 0) >= 1       # retried by the API layer, then failed fast
    assert run.health == [], run.health


def test_an_install_failure_keeps_its_evidence(tmp_path):
    """--install always on a twin whose trainedmodels CRD is deleted as soon as it is created: the install fails in
    kserve, at its manifest's CRD gate or at its readiness (whichever sees the CRD gone first: the deletion races the
    gate as it would on a cluster); the record, the sign-off, the bundle and the Allure results keep its evidence.
    A twin of its own: the fault is struck as the twin starts (`--twin-fault`), before the suite's install."""
    run = fresh_twin_run(tmp_path, "--twin-fault", "crd-missing:trainedmodels.serving.kserve.io",
                         "--install", "always", "--timeout-scale", "0.01")
    doc, results = run.doc, run.results
    assert recorded_categories(doc) == {Category.INSTALL.title}
    failure = doc["install"]["failure"]
    assert failure["component"] == "kserve" and failure["step"] in ("manifest kserve.yaml", "readiness"), failure
    assert failure["error_type"] == "WaitTimeout" and failure["category"] == Category.CRD.value
    assert "trainedmodels.serving.kserve.io" in failure["message"]
    assert failure["diagnostics"], failure
    for name in failure["diagnostics"]:
        assert (results / "kstack-install" / name).is_file(), name
    with tarfile.open(run.out / "results-bundle.tar.gz") as tar:
        bundled = set(tar.getnames())
    assert {f"allure-results/kstack-install/{n}" for n in failure["diagnostics"]} <= bundled
    attached = [a["name"] for f in results.glob("*-container.json") for b in json.loads(f.read_text()).get("befores", [])
                for a in b.get("attachments", [])]
    assert any(a.startswith("install diagnostics: kserve/") for a in attached), attached
    md = run.signoff_md()
    assert "## Install failure" in md and failure["step"] in md and "WaitTimeout" in md


def test_transient_faults_are_absorbed_by_bounded_retries_counted_in_the_signoff(shared_twins, tmp_path):
    """A whole run under both transient faults at once (10 % of the API requests failing, every watch dropped):
    every check meets them, each retry layer absorbs its own, and the verdict is still PASS."""
    run = shared_twins("seed").run(tmp_path, ["api-flaky:0.1", "watch-drop"])
    doc = run.doc
    assert doc["verdict"] == "PASS", run.output[-5000:]
    assert doc["retries"]["by_layer"].get("api", 0) > 0 and doc["retries"]["by_layer"].get("watch", 0) > 0, \
        doc["retries"]
    recorded = sum(len(f.read_text().splitlines()) for f in run.results.glob("kstack-retries-*.jsonl"))
    assert doc["retries"]["total"] == recorded
    assert f"{doc['retries']['total']} retries" in run.signoff_md()
    assert run.health == [], run.health


def test_deselected_criteria_are_not_run_and_the_verdict_incomplete(shared_twins, tmp_path):
    """-k keeps the CRD checks only: every other criterion is NOT RUN (its tests deselected), and so the verdict
    is INCOMPLETE, never PASS."""
    run = shared_twins("seed").run(tmp_path, [], "-k", "test_crds")
    got = statuses(run.doc)
    assert got["AC-CERT-ROUNDTRIP"] == "not-run" and got["AC-IRIS-PREDICT"] == "not-run", got
    assert got["AC-CRDS"] == "passed", run.output[-5000:]
    assert run.doc["verdict"] == "INCOMPLETE"
    assert "inference.test_iris_predict_v1" in run.doc["inventory"]["deselected"], run.doc["inventory"]


@pytest.mark.parametrize("fault,test_id,category", [
    ("imagepull:cert-manager/cert-manager-cainjector", "workloads.test_workloads_ready[cert-manager]", "Image pull"),
    ("predict-wrong", "inference.test_iris_predict_v1", "InferenceService or prediction")])
def test_fault_failures_land_in_the_right_allure_category(shared_runs, shared_twins, fault, test_id, category):
    """Allure's Categories tab files each failure of a fault's run (the fault table's own run) under its cause."""
    from reports.categories import classify
    run = fault_run(shared_runs, shared_twins, fault)
    categories = {}
    for f in run.results.glob("*-result.json"):
        r = json.loads(f.read_text())
        if r["status"] in ("failed", "broken"):    # keyed by the stable id: the name is the check's allure.title
            as_id = next(label["value"] for label in r["labels"] if label["name"] == "as_id")
            categories[as_id] = classify(r["status"], (r.get("statusDetails") or {}).get("message", ""))
    assert categories.get(test_id) == category, categories
    assert (run.results / "categories.json").exists()


def test_no_secret_value_reaches_any_output(shared_twins, tmp_path):
    """Plant known secret values (S3 keys for the S3 variant), make tests fail so diagnostics are captured, then
    search every file the run wrote and its console output. The inference checks only: they are the ones that read
    the keys (the S3 variant) and fail here (predict-wrong), so capture diagnostics."""
    planted = {"KSTACK_S3_ACCESS_KEY_ID": "AKIAKSTACKPLANTED0001", "KSTACK_S3_SECRET_ACCESS_KEY": "kstack-planted-secret-9f3a7c"}
    env = {**planted, "KSTACK_S3_ENDPOINT": "nyc3.digitaloceanspaces.com", "KSTACK_S3_REGION": "nyc3",
           "KSTACK_S3_URI": "s3://kstack-bucket/models/sklearn/1.0/model"}
    run = shared_twins("seed").run(tmp_path, ["predict-wrong"], "-k", "inference", "--timeout-scale", "0.05",
                                   env=env)
    assert run.doc["verdict"] == "FAIL"
    assert {f["id"] for f in run.doc["failures"]} >= {"inference.test_iris_predict_v1", "inference.test_iris_from_s3"}, \
        run.doc["failures"]
    for value in planted.values():
        assert value not in run.output
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.suffix != ".gz":
                assert value not in path.read_text(errors="replace"), f"{value} leaked into {path}"


def test_under_xdist_one_cluster_and_one_install(shared_twins, tmp_path):
    """Two xdist workers share the one cluster and the one install the controller made (the install phase is
    recorded once, not once per worker); a few checks are enough to give both workers work."""
    run = shared_twins("seed").run(tmp_path, [], "-n", "2", "-k", "test_crds or test_namespaces or test_workloads")
    assert not run.doc["failures"], run.output[-5000:]
    workers = {f.name for f in run.results.glob("kstack-inventory-*.json")}
    assert len(workers) >= 2, workers
    installs = [json.loads(line) for f in run.results.glob("kstack-phases-*.jsonl")
                for line in f.read_text().splitlines() if json.loads(line)["name"] == "install"]
    assert len(installs) == 1, installs


@contextlib.contextmanager
def standalone_twin(tmp_path: Path, *faults: str):
    """`python -m twin` in its own process: (kubeconfig, gateway URL); stopped with SIGINT, which must exit 0.

    Its output is drained by a thread for the whole run (an undrained pipe would block the twin once its logs fill
    it), and the gateway is read from its own `gateway: URL` banner line, never guessed from other lines."""
    import signal
    import subprocess
    import sys
    import threading

    from tests.helpers import ROOT
    kubeconfig = tmp_path / "twin.kubeconfig"
    args = [a for f in faults for a in ("--twin-fault", f)]
    proc = subprocess.Popen([sys.executable, "-m", "twin", "--profile", "seed", "--kubeconfig-out", str(kubeconfig),
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    gateway: list[str] = []
    banner = threading.Event()

    def drain() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("gateway: ") and not gateway:
                gateway.append(line.split(maxsplit=1)[1].strip())
                banner.set()
        banner.set()                                       # it exited: no banner will come

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        # The start-up takes about 10 s on an idle machine and near 40 s on a loaded CI runner.
        assert banner.wait(240) and gateway, f"python -m twin printed no gateway banner:\n{''.join(lines[-40:])}"
        assert kubeconfig.exists(), "python -m twin wrote no kubeconfig"
        yield kubeconfig, gateway[0]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise AssertionError(f"python -m twin did not stop within 60 s of SIGINT:\n{''.join(lines[-40:])}") from exc
        reader.join(timeout=10)
        assert code == 0, f"python -m twin exited {code} after SIGINT:\n{''.join(lines[-40:])}"


def kstack_namespaces(kubeconfig: Path) -> list[str]:
    from stack.kube import Kube
    items, _ = Kube(kubeconfig, "twin").list("v1", "Namespace", label_selector="app.kubernetes.io/managed-by=kstack")
    return [n["metadata"]["name"] for n in items if (n.get("status") or {}).get("phase") != "Terminating"]


# The Iris checks: enough to make a test namespace (the Iris InferenceService's) that a pass must remove and a
# failure with --keep-on-failure must keep; the whole suite in existing mode is test_rbac_twin's proof.
IRIS_CHECKS = "test_iris_ready or test_iris_predict"


def existing_run(folder: Path, kubeconfig: Path, gateway: str, *args: str) -> Run:
    return run_suite(folder, "--cluster", "existing", "--kubeconfig", str(kubeconfig), "-k", IRIS_CHECKS, *args,
                     env={"KSTACK_INGRESS_URL": gateway})


def test_a_standalone_twin_verified_as_an_existing_cluster_is_still_simulated(tmp_path):
    """`python -m twin` + `--cluster existing`: the report must not read as evidence about a real cluster. The run
    changes nothing but its own namespaces, and removes them after a pass."""
    with standalone_twin(tmp_path) as (kubeconfig, gateway):
        run = existing_run(tmp_path / "run", kubeconfig, gateway)
        assert statuses(run.doc)["AC-IRIS-PREDICT"] == "passed" and not run.doc["failures"], run.output[-4000:]
        assert kstack_namespaces(kubeconfig) == []
    assert run.doc["simulated"] is True and run.doc["cluster"]["provider"] == "existing", run.doc["cluster"]


def test_keep_on_failure_keeps_the_failed_tests_namespaces_and_names_them(tmp_path):
    with standalone_twin(tmp_path, "predict-wrong") as (kubeconfig, gateway):
        run = existing_run(tmp_path / "run", kubeconfig, gateway, "--keep-on-failure")
        kept = kstack_namespaces(kubeconfig)
    assert run.doc["verdict"] == "FAIL"
    assert len(kept) == 1 and kept[0].startswith("kstack-iris-"), kept
    assert kept[0] in run.output


def _processes_with(token: str) -> list[int]:
    """Pids whose environment carries the token (so this test sees only the run it started)."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if token.encode() in env.read_bytes():
                pids.append(int(env.parent.name))
        except OSError:
            pass
    return pids


def test_an_interrupted_run_leaves_no_process_behind(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    from tests.helpers import ROOT
    token = f"KSTACK_INTERRUPT_TEST={uuid.uuid4().hex}"
    env = {**os.environ, token.split("=")[0]: token.split("=")[1]}
    env.pop("KSTACK_HANDOFF", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/acceptance", "--cluster", "twin", "-k", "iris",
                             "--alluredir", str(tmp_path / "r"), "--signoff-dir", str(tmp_path / "o")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_processes_with(token)) < 2:   # pytest + its first model server
        time.sleep(0.2)
    assert len(_processes_with(token)) >= 2, "the run never started a model server"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_with(token):
        time.sleep(0.2)
    assert _processes_with(token) == [], "processes left behind after the interrupt"


@pytest.fixture(scope="session")
def policies(shared_runs, shared_twins):
    """This worker's shared twin of the policies profile (one file per session: the same bytes every time, so its
    twin snapshot is made once)."""
    return shared_twins(policies_profile(shared_runs.root))


def policies_profile(directory: Path) -> Path:
    """seed, declaring a monitor and an authorization policy and requiring AC-MESH-MTLS: the checks only such a
    profile runs."""
    data = yaml.safe_load(Profile.load("seed").path.read_text())
    data["name"] = "seed-policies"
    data["monitors"] = [{"kind": "ServiceMonitor", "namespace": "cert-manager", "name": "cert-manager"}]
    data["require"] = ["AC-MESH-MTLS"]
    data["authorization_policy"] = {"rules": [{"from": [{"source": {"namespaces": ["istio-system", "knative-serving"]}}]}]}
    path = directory / "seed-policies.yaml"
    text = yaml.safe_dump(data, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def the_failure(doc: dict, criterion: str) -> dict:
    failures = [f for f in doc["failures"] if criterion in f["criteria"]]
    assert len(failures) == 1, doc["failures"]
    return failures[0]


def test_declared_monitors_on_a_cluster_without_the_prometheus_operator_fail_naming_the_missing_crds(policies,
                                                                                                      tmp_path):
    """A profile that lists monitors makes AC-MONITORS apply: on the twin, which has no Prometheus Operator, it FAILs
    saying the CRDs are not served, never NOT RUN (only this check runs: the rest of the stack is covered above)."""
    run = policies.run(tmp_path, [], "-k", "test_the_declared_monitors_select_live_targets")
    doc, output = run.doc, run.output
    assert statuses(doc)["AC-MONITORS"] == "failed", output[-5000:]
    assert "the API serves no ServiceMonitor (monitoring.coreos.com/v1)" in the_failure(doc, "AC-MONITORS")["message"]
    assert "Monitoring" in recorded_categories(doc)


MESH_CHECKS = "test_strict_mtls_refuses_plaintext_from_outside_the_mesh or " \
              "test_the_authorization_policy_keeps_out_a_request_without_its_principal"


def test_strict_mtls_and_the_declared_authorization_policy_pass_where_the_sidecars_enforce_them(policies, tmp_path):
    """The twin secures its mesh for a profile that requires it (STRICT for the mesh, the activator injected) and
    its sidecar stand-in enforces it: both mesh criteria PASS, on refused plaintext and a gateway answer."""
    run = policies.run(tmp_path, [], "-k", MESH_CHECKS)
    doc, output = run.doc, run.output
    assert statuses(doc)["AC-MESH-MTLS"] == "passed", output[-5000:]
    assert statuses(doc)["AC-MESH-AUTHZ"] == "passed", output[-5000:]
    assert any(lim["id"] == "twin-simulated-sidecars" for lim in doc["limitations"])


def test_a_permissive_mesh_fails_strict_mtls_while_the_authorization_policy_still_denies(policies, tmp_path):
    """mtls-permissive: the sidecars take plaintext, so AC-MESH-MTLS FAILs naming the policy that relaxed it; the
    authorization policy still keeps the principal-less request out (its sidecar answers 403), so AC-MESH-AUTHZ
    passes: the fault breaks exactly its own criterion; undone, the mesh is STRICT again."""
    run = policies.run(tmp_path, ["mtls-permissive"], "-k", MESH_CHECKS)
    doc, output = run.doc, run.output
    assert statuses(doc)["AC-MESH-MTLS"] == "failed", output[-5000:]
    assert statuses(doc)["AC-MESH-AUTHZ"] == "passed", output[-5000:]
    failure = the_failure(doc, "AC-MESH-MTLS")
    assert "is PERMISSIVE (mesh PeerAuthentication istio-system/default)" in failure["message"], failure
    assert "Security policy" in recorded_categories(doc)
    assert run.health == [], run.health


