"""The sign-off built from synthetic allure-results folders."""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

from reports.signoff import SIMULATED_BANNER, build_signoff, write_signoff
from stack.redact import register_secret

REPO = Path(__file__).resolve().parents[2]


def _criteria(doc: dict) -> dict[str, dict]:
    return {c["id"]: c for c in doc["criteria"]}


def test_all_passed_is_pass(factory):
    factory.full_run()
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "PASS"
    assert {c["status"] for c in doc["criteria"]} == {"passed"}
    assert doc["simulated"] is False
    assert doc["inventory"] == {"expected": 13, "executed": 13, "missing": [], "skipped": [], "found": True}
    crit = _criteria(doc)["AC-CRDS"]
    assert crit["tests"] == ["STACK-CRDS-ESTABLISHED[cert-manager]", "STACK-CRDS-ESTABLISHED[kserve]"]
    assert crit["reason"] is None
    for key in ("verdict", "simulated", "profile", "versions", "running_versions", "cluster", "criteria", "inventory",
                "phases", "namespaces", "pods", "limitations", "failures", "bundle_sha256", "generated"):
        assert key in doc


def test_failed_test_fails_its_criteria_only(factory):
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT"})
    factory.result("STACK-IRIS-PREDICT", "failed",
                   "AssertionError: InferenceService iris predicted [0, 0] for two setosa samples, expected [1, 1]")
    doc = build_signoff(factory.root)
    crit = _criteria(doc)
    assert doc["verdict"] == "FAIL"
    assert crit["AC-IRIS-PREDICT"]["status"] == "failed"
    assert all(c["status"] == "passed" for cid, c in crit.items() if cid != "AC-IRIS-PREDICT")
    (failure,) = doc["failures"]
    assert failure["id"] == "STACK-IRIS-PREDICT"
    assert failure["category"] == "Product defect (wrong result)"
    assert "predicted [0, 0]" in failure["message"]


def test_broken_test_fails(factory):
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-WEBHOOKS-ADMIT[kserve]"})
    factory.result("STACK-WEBHOOKS-ADMIT[kserve]", "broken",
                   "KeyError: 'status' while reading the InferenceService")
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "FAIL"
    assert _criteria(doc)["AC-WEBHOOKS"]["status"] == "failed"
    assert doc["failures"][0]["category"] == "Test defect"


def test_deselected_tests_are_not_run_and_incomplete(factory):
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-CERT-ROUNDTRIP", "STACK-IRIS-PREDICT"})  # as with -k / -m
    doc = build_signoff(factory.root)
    crit = _criteria(doc)
    assert doc["verdict"] == "INCOMPLETE"
    assert crit["AC-IRIS-PREDICT"]["status"] == "not-run"
    assert crit["AC-IRIS-PREDICT"]["reason"] == "not executed: STACK-IRIS-PREDICT"
    assert crit["AC-CERT-MANAGER"]["status"] == "not-run"  # one of its four tests did not run
    assert "STACK-CERT-ROUNDTRIP" in crit["AC-CERT-MANAGER"]["reason"]
    assert crit["AC-CRDS"]["status"] == "passed"
    assert doc["inventory"]["missing"] == ["STACK-CERT-ROUNDTRIP", "STACK-IRIS-PREDICT"]
    assert doc["inventory"]["executed"] == 11
    assert any("AC-IRIS-PREDICT" in r for r in doc["verdict_reasons"])


def test_skipped_test_is_never_pass(factory):
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-WEBHOOKS-ADMIT[kserve]"})
    factory.result("STACK-WEBHOOKS-ADMIT[kserve]", "skipped", "Skipped: webhook check needs --with-webhooks")
    doc = build_signoff(factory.root)
    crit = _criteria(doc)["AC-WEBHOOKS"]
    assert crit["status"] == "not-run"
    assert "skipped" in crit["reason"] and "needs --with-webhooks" in crit["reason"]
    assert doc["verdict"] == "INCOMPLETE"
    assert doc["inventory"]["skipped"] == ["STACK-WEBHOOKS-ADMIT[kserve]"]
    assert "STACK-WEBHOOKS-ADMIT[kserve]" in doc["inventory"]["missing"]


def test_inapplicable_criteria_not_run_but_pass(factory):
    factory.run(components={"cert-manager": "v1.13.0", "kserve": "v0.11.0"})  # no istio, no knative
    ids = [t for t in factory_tests() if not any(x in t for x in ("istio", "knative"))]
    factory.inventory(ids)
    for t in ids:
        factory.result(t)
    doc = build_signoff(factory.root)
    crit = _criteria(doc)
    assert crit["AC-ISTIO"]["status"] == "not-run"
    assert crit["AC-ISTIO"]["reason"] == "not applicable: the profile has no istio"
    assert crit["AC-KNATIVE"]["reason"] == "not applicable: the profile has no knative"
    assert doc["verdict"] == "PASS"


def factory_tests():
    from tests.reports.factory import TESTS
    return list(TESTS)


def test_latest_result_wins_for_duplicate_as_id(factory):
    factory.full_run()
    factory.result("STACK-IRIS-PREDICT", "failed", "AssertionError: wrong", stop=1_000)  # an older attempt
    assert build_signoff(factory.root)["verdict"] == "PASS"
    factory.result("STACK-IRIS-PREDICT", "failed", "AssertionError: wrong", stop=9_999_999_999_999)  # a newer one
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "FAIL"
    assert [f["id"] for f in doc["failures"]] == ["STACK-IRIS-PREDICT"]


def test_inventory_merged_over_workers(factory):
    factory.run()
    from tests.reports.factory import TESTS
    ids = list(TESTS)
    factory.inventory(ids[:7], worker="gw0")
    factory.inventory(ids[5:], worker="gw1")  # overlapping: deduplicated by id
    factory.all_passed()
    doc = build_signoff(factory.root)
    assert doc["inventory"]["expected"] == len(ids)
    assert doc["verdict"] == "PASS"


def test_missing_run_metadata_is_incomplete(factory):
    factory.inventory()
    factory.all_passed()
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "INCOMPLETE"
    assert any("kstack-run.json is missing" in r for r in doc["verdict_reasons"])


def test_missing_inventory_is_incomplete(factory):
    factory.run()
    factory.all_passed()
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "INCOMPLETE"
    assert doc["inventory"]["found"] is False
    assert all(c["status"] == "not-run" for c in doc["criteria"])


def test_phases_over_budget_flagged(factory):
    factory.full_run()
    factory.phases([{"name": "install/kserve", "seconds": 1600.0, "budget": 1500}], worker="gw0")
    doc = build_signoff(factory.root)
    over = [p for p in doc["phases"] if p["over_budget"]]
    assert [p["name"] for p in over] == ["install/kserve"]
    assert {"name", "seconds", "budget"} <= set(over[0])
    assert any(lim["id"] == "over-budget" for lim in doc["limitations"])
    assert any(lim["id"] == "servicemonitor-absent" for lim in doc["limitations"])


def test_write_all_formats(factory, tmp_path):
    factory.full_run()
    out = tmp_path / "out"
    paths = write_signoff(factory.root, out)
    assert [p.name for p in paths] == ["signoff.json", "signoff.md", "signoff.html", "results-bundle.tar.gz"]
    md = (out / "signoff.md").read_text()
    assert "# KServe stack sign-off: PASS" in md
    assert "SIMULATED" not in md
    assert re.search(r"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE", md)
    assert re.search(r"kserve-controller-manager-7d4b55b658-c42m9\s+2/2\s+Running\s+0\s+71s", md)
    assert re.search(r"knative-serving\s+Active\s+2m58s", md)
    html_text = (out / "signoff.html").read_text()
    assert "<td>kserve-controller-manager-7d4b55b658-c42m9</td>" in html_text
    assert json.loads((out / "signoff.json").read_text())["verdict"] == "PASS"


def test_simulated_banner_everywhere(factory, tmp_path):
    factory.full_run(simulated=True)
    out = tmp_path / "out"
    write_signoff(factory.root, out)
    doc = json.loads((out / "signoff.json").read_text())
    assert doc["simulated"] is True
    md = (out / "signoff.md").read_text()
    assert md.splitlines()[0] == f"> **{SIMULATED_BANNER}**"
    html_text = (out / "signoff.html").read_text()
    body = html_text.split("<body>", 1)[1]
    assert body.lstrip().startswith('<div class="banner" role="alert">' + SIMULATED_BANNER)


def test_html_is_self_contained(factory, tmp_path):
    factory.full_run()
    write_signoff(factory.root, tmp_path / "out")
    html_text = (tmp_path / "out" / "signoff.html").read_text()
    assert "<style>" in html_text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html_text, re.I)
    assert "<script" not in html_text.lower()
    assert "<link" not in html_text.lower()


def test_bundle_sha256_and_determinism(factory, tmp_path):
    factory.full_run()
    a, b = tmp_path / "a", tmp_path / "b"
    write_signoff(factory.root, a)
    for p in factory.root.iterdir():  # touching files must not change the bundle
        p.touch()
    write_signoff(factory.root, b)
    bundle_a, bundle_b = (a / "results-bundle.tar.gz").read_bytes(), (b / "results-bundle.tar.gz").read_bytes()
    sha = hashlib.sha256(bundle_a).hexdigest()
    assert json.loads((a / "signoff.json").read_text())["bundle_sha256"] == sha
    assert sha in (a / "signoff.md").read_text() and sha in (a / "signoff.html").read_text()
    assert bundle_a == bundle_b
    with tarfile.open(fileobj=io.BytesIO(bundle_a)) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert "allure-results/kstack-run.json" in names
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    assert bundle_a[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_out_dir_inside_results_is_not_bundled(factory):
    factory.full_run()
    out = factory.root / "signoff"
    write_signoff(factory.root, out)
    write_signoff(factory.root, out)
    with tarfile.open(out / "results-bundle.tar.gz") as tar:
        assert not [n for n in tar.getnames() if "signoff" in n]


def test_planted_secret_never_in_output(factory, tmp_path):
    secret = "s3cr3t-" + uuid.uuid4().hex
    register_secret(secret)
    factory.run(pods=[{"namespace": "kserve", "name": f"leak-{secret}-pod", "ready": "1/1", "status": "Running",
                       "restarts": 0, "age": "1m"}])
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT"})
    factory.result("STACK-IRIS-PREDICT", "failed",
                   f"AssertionError: storage secret AWS_SECRET_ACCESS_KEY={secret} rejected")
    out = tmp_path / "out"
    paths = write_signoff(factory.root, out)
    for path in paths:
        data = path.read_bytes()
        assert secret.encode() not in data, path
    with tarfile.open(out / "results-bundle.tar.gz") as tar:
        for member in tar.getmembers():
            assert secret.encode() not in tar.extractfile(member).read(), member.name
    doc = json.loads((out / "signoff.json").read_text())
    assert "<redacted>" in doc["failures"][0]["message"]
    assert any("<redacted>" in p["name"] for p in doc["pods"])


def test_cli_subprocess(factory, tmp_path):
    factory.full_run(simulated=True)
    out = tmp_path / "cli-out"
    proc = subprocess.run([sys.executable, "-m", "reports.signoff", str(factory.root), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "sign-off: PASS (SIMULATED)" in proc.stdout
    for name in ("signoff.json", "signoff.md", "signoff.html", "results-bundle.tar.gz"):
        assert (out / name).is_file()


def test_cli_missing_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reports.signoff", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not a directory" in proc.stderr


def test_versions_match_whatever_the_v_prefix():
    """The profile says "1.19.0" for Istio; the running version is read normalised, as the installers read it."""
    from reports.signoff import _version_rows
    rows = _version_rows({"versions": {"istio": "1.19.0", "kserve": "v0.11.0"},
                          "running_versions": {"istio": "v1.19.0", "kserve": "v0.10.0"}})
    assert dict((r[0], r[3]) for r in rows) == {"istio": "yes", "kserve": "NO"}
