"""End to end: `pytest suites/acceptance --cluster twin` for every shipped profile, and each twin fault failing exactly
the matching criteria while the unrelated ones pass. Each case runs the suite as a user would, in a subprocess, and
reads the sign-off it wrote."""
from __future__ import annotations

import contextlib
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from stack.failures import Category
from stack.profile import Profile, available_profiles
from tests.helpers import run_pytest

pytestmark = [pytest.mark.slow, pytest.mark.twin]

ALL = {"AC-ISTIO", "AC-KNATIVE", "AC-CERT-MANAGER", "AC-KSERVE-CONTROLLER", "AC-ALL-READY", "AC-CRDS", "AC-WEBHOOKS",
       "AC-CERT-ROUNDTRIP", "AC-IRIS-PREDICT", "AC-IRIS-S3", "AC-RBAC-DEFAULT-SA", "AC-CERT-EXPIRY", "AC-METRICS",
       "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}


def run_twin(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[dict, str, Path]:
    results, out = tmp_path / "allure-results", tmp_path / "out"
    cluster = "existing" if "--kubeconfig" in args else "twin"
    proc = run_pytest("suites/acceptance", "--cluster", cluster, "--alluredir", str(results), "--signoff-dir", str(out),
                      "-p", "no:randomly", *args, env=env, timeout=600)
    signoff = out / "signoff.json"
    assert signoff.exists(), f"no sign-off written\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return json.loads(signoff.read_text()), proc.stdout + proc.stderr, results


def statuses(doc: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["criteria"]}


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_passes_on_the_twin(tmp_path, profile):
    doc, output, _ = run_twin(tmp_path, "--profile", profile)
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
    for fmt in ("signoff.md", "signoff.html"):
        assert "SIMULATED" in (tmp_path / "out" / fmt).read_text()[:3000]
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
    # Knative's autoscaler in a crash loop: its workloads fail, and so does scale to zero (nothing scales).
    "crashloop:knative-serving/autoscaler": ({"AC-ALL-READY", "AC-KNATIVE", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"},
                                             Category.CRASH_LOOP),
    "imagepull:cert-manager/cert-manager-cainjector": ({"AC-ALL-READY", "AC-CERT-MANAGER"}, Category.IMAGE_PULL),
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
S3_CAUSE = {"s3-wrong-credentials": "S3 error [403]: Forbidden",
            "s3-no-bucket": "S3 resource 'kstack-no-such-bucket' not found",
            "s3-wrong-key": "Failed to fetch model. No model found in no-such-model"}


def recorded_categories(doc: dict) -> set[str]:
    """The categories of the run's failures; every failure must carry the one its check recorded."""
    unrecorded = [f for f in doc["failures"] if f["category_source"] != "recorded"]
    assert not unrecorded, f"failures without a recorded category: {unrecorded}"
    return {f["category"] for f in doc["failures"]}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_exactly_its_criteria_with_its_category(tmp_path, fault):
    doc, output, _ = run_twin(tmp_path, "--twin-fault", fault, "--timeout-scale", "0.05")
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


def test_checks_that_need_a_broken_controller_are_blocked_by_it_with_its_root_cause(tmp_path):
    """KServe's controller cannot pull its image: the Iris checks and KServe's admission check fail FAILED (not
    broken), blocked by AC-KSERVE-CONTROLLER, filed under Image pull, naming the image, in every output."""
    doc, output, results = run_twin(tmp_path, "--twin-fault", "imagepull:kserve/kserve-controller-manager",
                                    "--timeout-scale", "0.05")
    got = statuses(doc)
    failed = {c for c, s in got.items() if s == "failed"}
    assert failed == {"AC-ALL-READY", "AC-KSERVE-CONTROLLER", "AC-WEBHOOKS", "AC-IRIS-PREDICT", "AC-IRIS-S3",
                      "AC-METRICS", "AC-AUTOSCALING", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}, \
        f"{sorted(failed)}: {[(f['id'], f['message'][:300]) for f in doc['failures']]}"
    assert all(got[c] == "passed" for c in ALL - failed), got
    iris = [f for f in doc["failures"] if "AC-IRIS-PREDICT" in f["criteria"]]
    assert iris and all(f["status"] == "failed" and f["blocked_by"] == "AC-KSERVE-CONTROLLER" for f in iris), iris
    assert all(f["category"] == Category.IMAGE_PULL.title for f in iris), iris
    image = "kserve/kserve-controller:v0.11.0"
    assert all("ImagePull" in f["root_cause"] and image in f["root_cause"] for f in iris), iris   # ErrImagePull or -BackOff
    # the workloads check is the root: never blocked by itself
    assert not [f for f in doc["failures"] if f["id"].startswith("workloads.") and f["blocked_by"]]
    criterion = next(c for c in doc["criteria"] if c["id"] == "AC-IRIS-PREDICT")
    assert criterion["blocked_by"] == ["AC-KSERVE-CONTROLLER"], criterion
    assert "blocked by AC-KSERVE-CONTROLLER" in (tmp_path / "out" / "signoff.md").read_text()
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


def test_an_api_that_keeps_failing_is_an_infrastructure_failure(tmp_path):
    doc, output, _ = run_twin(tmp_path, "--twin-fault", "api-flaky:1.0", "--install", "never",
                              "--timeout-scale", "0.05")
    assert doc["verdict"] == "FAIL"
    assert recorded_categories(doc) == {Category.INFRASTRUCTURE.title}, output[-3000:]
    assert doc["retries"]["by_layer"].get("api", 0) >= 1       # retried by the API layer, then failed fast


def test_an_install_failure_keeps_its_evidence(tmp_path):
    """--install always on a twin whose trainedmodels CRD is deleted as soon as it is created: the install fails in
    kserve, at its manifest's CRD gate or at its readiness (whichever sees the CRD gone first: the deletion races the
    gate as it would on a cluster); the record, the sign-off, the bundle and the Allure results keep its evidence."""
    doc, output, results = run_twin(tmp_path, "--twin-fault", "crd-missing:trainedmodels.serving.kserve.io",
                                    "--install", "always", "--timeout-scale", "0.01")
    assert recorded_categories(doc) == {Category.INSTALL.title}
    failure = doc["install"]["failure"]
    assert failure["component"] == "kserve" and failure["step"] in ("manifest kserve.yaml", "readiness"), failure
    assert failure["error_type"] == "WaitTimeout" and failure["category"] == Category.CRD.value
    assert "trainedmodels.serving.kserve.io" in failure["message"]
    assert failure["diagnostics"], failure
    for name in failure["diagnostics"]:
        assert (results / "kstack-install" / name).is_file(), name
    with tarfile.open(tmp_path / "out" / "results-bundle.tar.gz") as tar:
        bundled = set(tar.getnames())
    assert {f"allure-results/kstack-install/{n}" for n in failure["diagnostics"]} <= bundled
    attached = [a["name"] for f in results.glob("*-container.json") for b in json.loads(f.read_text()).get("befores", [])
                for a in b.get("attachments", [])]
    assert any(a.startswith("install diagnostics: kserve/") for a in attached), attached
    md = (tmp_path / "out" / "signoff.md").read_text()
    assert "## Install failure" in md and failure["step"] in md and "WaitTimeout" in md


@pytest.mark.parametrize("fault,layer", [("api-flaky:0.1", "api"), ("watch-drop", "watch")])
def test_transient_faults_are_absorbed_by_bounded_retries_counted_in_the_signoff(tmp_path, fault, layer):
    doc, output, results = run_twin(tmp_path, "--twin-fault", fault)
    assert doc["verdict"] == "PASS", output[-5000:]
    assert doc["retries"]["by_layer"].get(layer, 0) > 0, doc["retries"]
    recorded = sum(len(f.read_text().splitlines()) for f in results.glob("kstack-retries-*.jsonl"))
    assert doc["retries"]["total"] == recorded
    assert f"{doc['retries']['total']} retries" in (tmp_path / "out" / "signoff.md").read_text()


def test_deselected_criteria_are_not_run_and_the_verdict_incomplete(tmp_path):
    doc, output, _ = run_twin(tmp_path, "-k", "not certificate and not iris")
    got = statuses(doc)
    assert got["AC-CERT-ROUNDTRIP"] == "not-run" and got["AC-IRIS-PREDICT"] == "not-run", got
    assert got["AC-CRDS"] == "passed"
    assert doc["verdict"] == "INCOMPLETE"


def test_fault_failures_land_in_the_right_allure_category(tmp_path):
    from reports.categories import classify
    doc, output, results = run_twin(tmp_path, "--twin-fault", "imagepull:cert-manager/cert-manager-cainjector",
                                    "--twin-fault", "predict-wrong", "--timeout-scale", "0.05")
    categories = {}
    for f in results.glob("*-result.json"):
        r = json.loads(f.read_text())
        if r["status"] in ("failed", "broken"):    # keyed by the stable id: the name is the check's allure.title
            as_id = next(label["value"] for label in r["labels"] if label["name"] == "as_id")
            categories[as_id] = classify(r["status"], (r.get("statusDetails") or {}).get("message", ""))
    assert categories.get("workloads.test_workloads_ready[cert-manager]") == "Image pull", categories
    assert categories.get("inference.test_iris_predict_v1") == "InferenceService or prediction", categories
    assert (results / "categories.json").exists()


def test_no_secret_value_reaches_any_output(tmp_path):
    """Plant known secret values (S3 keys for the S3 variant), make tests fail so diagnostics are captured, then
    search every file the run wrote and its console output."""
    planted = {"KSTACK_S3_ACCESS_KEY_ID": "AKIAKSTACKPLANTED0001", "KSTACK_S3_SECRET_ACCESS_KEY": "kstack-planted-secret-9f3a7c"}
    env = {**planted, "KSTACK_S3_ENDPOINT": "nyc3.digitaloceanspaces.com", "KSTACK_S3_REGION": "nyc3",
           "KSTACK_S3_URI": "s3://kstack-bucket/models/sklearn/1.0/model"}
    doc, output, results = run_twin(tmp_path, "--twin-fault", "predict-wrong", "--timeout-scale", "0.05", env=env)
    assert doc["verdict"] == "FAIL"
    for value in planted.values():
        assert value not in output
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.suffix != ".gz":
                assert value not in path.read_text(errors="replace"), f"{value} leaked into {path}"


def test_under_xdist_one_cluster_and_one_install(tmp_path):
    doc, output, results = run_twin(tmp_path, "-n", "2", "--install", "always")
    assert doc["verdict"] == "PASS", output[-5000:]
    installs = [json.loads(line) for f in results.glob("kstack-phases-*.jsonl") for line in f.read_text().splitlines()
                if json.loads(line)["name"] == "install"]
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


def test_a_standalone_twin_verified_as_an_existing_cluster_is_still_simulated(tmp_path):
    """`python -m twin` + `--cluster existing`: the report must not read as evidence about a real cluster. The run
    changes nothing but its own namespaces, and removes them after a pass."""
    with standalone_twin(tmp_path) as (kubeconfig, gateway):
        doc, output, _ = run_twin(tmp_path, "--kubeconfig", str(kubeconfig), env={"KSTACK_INGRESS_URL": gateway})
        assert doc["verdict"] == "PASS", output[-4000:]
        assert kstack_namespaces(kubeconfig) == []
    assert doc["simulated"] is True and doc["cluster"]["provider"] == "existing", doc["cluster"]


def test_keep_on_failure_keeps_the_failed_tests_namespaces_and_names_them(tmp_path):
    with standalone_twin(tmp_path, "predict-wrong") as (kubeconfig, gateway):
        doc, output, _ = run_twin(tmp_path, "--kubeconfig", str(kubeconfig), "--keep-on-failure",
                                  env={"KSTACK_INGRESS_URL": gateway})
        kept = kstack_namespaces(kubeconfig)
    assert doc["verdict"] == "FAIL"
    assert len(kept) == 1 and kept[0].startswith("kstack-iris-"), kept
    assert kept[0] in output


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


def policies_profile(tmp_path: Path) -> Path:
    """seed, declaring a monitor and an authorization policy and requiring AC-MESH-MTLS: the checks only such a
    profile runs. The same bytes every time, so its twin snapshot is made once."""
    data = yaml.safe_load(Profile.load("seed").path.read_text())
    data["name"] = "seed-policies"
    data["monitors"] = [{"kind": "ServiceMonitor", "namespace": "cert-manager", "name": "cert-manager"}]
    data["require"] = ["AC-MESH-MTLS"]
    data["authorization_policy"] = {"rules": [{"from": [{"source": {"namespaces": ["istio-system", "knative-serving"]}}]}]}
    path = tmp_path / "seed-policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def the_failure(doc: dict, criterion: str) -> dict:
    failures = [f for f in doc["failures"] if criterion in f["criteria"]]
    assert len(failures) == 1, doc["failures"]
    return failures[0]


def test_declared_monitors_on_a_cluster_without_the_prometheus_operator_fail_naming_the_missing_crds(tmp_path):
    """A profile that lists monitors makes AC-MONITORS apply: on the twin, which has no Prometheus Operator, it FAILs
    saying the CRDs are not served, never NOT RUN (only this check runs: the rest of the stack is covered above)."""
    doc, output, _ = run_twin(tmp_path, "--profile", str(policies_profile(tmp_path)),
                              "-k", "test_the_declared_monitors_select_live_targets")
    assert statuses(doc)["AC-MONITORS"] == "failed", output[-5000:]
    assert "the API serves no ServiceMonitor (monitoring.coreos.com/v1)" in the_failure(doc, "AC-MONITORS")["message"]
    assert "Monitoring" in recorded_categories(doc)


MESH_CHECKS = "test_strict_mtls_refuses_plaintext_from_outside_the_mesh or " \
              "test_the_authorization_policy_keeps_out_a_request_without_its_principal"


def test_strict_mtls_and_the_declared_authorization_policy_pass_where_the_sidecars_enforce_them(tmp_path):
    """The twin secures its mesh for a profile that requires it (STRICT for the mesh, the activator injected) and
    its sidecar stand-in enforces it: both mesh criteria PASS, on refused plaintext and a gateway answer."""
    doc, output, _ = run_twin(tmp_path, "--profile", str(policies_profile(tmp_path)), "-k", MESH_CHECKS)
    assert statuses(doc)["AC-MESH-MTLS"] == "passed", output[-5000:]
    assert statuses(doc)["AC-MESH-AUTHZ"] == "passed", output[-5000:]
    assert any(lim["id"] == "twin-simulated-sidecars" for lim in doc["limitations"])


def test_a_permissive_mesh_fails_strict_mtls_while_the_authorization_policy_still_denies(tmp_path):
    """mtls-permissive: the sidecars take plaintext, so AC-MESH-MTLS FAILs naming the policy that relaxed it; the
    authorization policy still keeps the principal-less request out (its sidecar answers 403), so AC-MESH-AUTHZ
    passes: the fault breaks exactly its own criterion."""
    doc, output, _ = run_twin(tmp_path, "--profile", str(policies_profile(tmp_path)), "--twin-fault",
                              "mtls-permissive", "-k", MESH_CHECKS)
    assert statuses(doc)["AC-MESH-MTLS"] == "failed", output[-5000:]
    assert statuses(doc)["AC-MESH-AUTHZ"] == "passed", output[-5000:]
    failure = the_failure(doc, "AC-MESH-MTLS")
    assert "is PERMISSIVE (mesh PeerAuthentication istio-system/default)" in failure["message"], failure
    assert "Security policy" in recorded_categories(doc)


