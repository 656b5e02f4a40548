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

from reports.evaluation import build_signoff
from reports.signoff import write_signoff
from reports.signoff_render import SIMULATED_BANNER
from stack.redact import register_secret

REPO = Path(__file__).resolve().parents[2]


def _criteria(doc: dict) -> dict[str, dict]:
    return {c["id"]: c for c in doc["criteria"]}


def test_all_passed_is_pass(factory):
    factory.full_run()
    doc = build_signoff(factory.root)
    assert doc["verdict"] == "PASS"
    assert {c["status"] for c in doc["criteria"] if c["applicable"]} == {"passed"}
    # an optional area the run was given nothing for is NOT RUN, and does not keep the verdict from PASS
    s3 = _criteria(doc)["AC-IRIS-S3"]
    assert s3["status"] == "not-run" and "optional" in s3["reason"], s3
    assert doc["simulated"] is False
    assert doc["inventory"] == {"expected": 19, "executed": 19, "missing": [], "skipped": [], "deselected": [],
                                "not_executed": [], "outside": [], "found": True}
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
    assert all(c["status"] == "passed" for cid, c in crit.items() if cid != "AC-IRIS-PREDICT" and c["applicable"])
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
    from tests.reports.factory import TESTS
    assert doc["inventory"]["executed"] == len(TESTS) - 2
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
                       "restarts": 0, "age": "1m"}],
                runner={"hostname": f"host-{secret}", "ci": "CI", "ci_url": f"https://ci.example.org/{secret}"},
                cluster={"provider": "kind", "nodes": [{"name": f"node-{secret}", "kubelet_version": "v1.27.3",
                                                        "container_runtime": None, "os_image": None}]})
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
    from reports.signoff_render import version_rows
    rows = version_rows({"istio": "1.19.0", "kserve": "v0.11.0"}, {"istio": "v1.19.0", "kserve": "v0.10.0"})
    assert dict((r[0], r[3]) for r in rows) == {"istio": "yes", "kserve": "NO"}


# -- what ran where, the nodes, the counts, the phases, the titles --------------------------------------------------------
def _written(factory, tmp_path) -> tuple[dict, str, str]:
    out = tmp_path / "out"
    write_signoff(factory.root, out)
    return (json.loads((out / "signoff.json").read_text()), (out / "signoff.md").read_text(),
            (out / "signoff.html").read_text())


def test_the_suite_and_the_runner_are_in_every_format(factory, tmp_path):
    factory.full_run()
    doc, md, html_text = _written(factory, tmp_path)
    assert doc["suite"] == {"version": "0.1.0", "commit": "0cd41107c1f4b2a3e5d6f7a8b9c0d1e2f3a4b5c6", "dirty": False,
                            "python": "3.11.7", "pytest": "9.2.0"}
    assert doc["runner"]["hostname"] == "runner-7" and doc["runner"]["ci_attempt"] == "2"
    suite = "kstack 0.1.0, commit 0cd41107c1f4b2a3e5d6f7a8b9c0d1e2f3a4b5c6 (clean), Python 3.11.7, pytest 9.2.0"
    runner = ("host runner-7, GitHub Actions run https://github.com/acme/kstack/actions/runs/987654321/attempts/2 "
              "(attempt 2)")
    assert f"- **Suite:** {suite}" in md and f"- **Runner:** {runner}" in md
    assert f"<tr><td>Suite</td><td>{suite}</td></tr>" in html_text
    assert f"<tr><td>Runner</td><td>{runner}</td></tr>" in html_text


def test_a_tarball_run_outside_ci_says_so(factory, tmp_path):
    factory.full_run()
    factory.run(suite={"version": "0.1.0", "commit": "unknown", "dirty": None, "python": "3.11.7", "pytest": "9.2.0"},
                runner={"hostname": "laptop"})
    _, md, html_text = _written(factory, tmp_path)
    assert "- **Suite:** kstack 0.1.0, commit unknown, Python 3.11.7, pytest 9.2.0" in md
    assert "- **Runner:** host laptop, not in CI" in md and "<td>host laptop, not in CI</td>" in html_text


def test_a_record_without_suite_runner_or_nodes_still_reads(factory, tmp_path):
    """Fields added with defaults keep older records (schema version 1) readable: they read as unknown."""
    factory.full_run()
    path = factory.root / "kstack-run.json"
    data = json.loads(path.read_text())
    for key in ("suite", "runner"):
        del data[key]
    del data["cluster"]["nodes"]
    path.write_text(json.dumps(data))
    doc, md, _ = _written(factory, tmp_path)
    assert doc["verdict"] == "PASS"
    assert doc["suite"]["commit"] == "unknown" and doc["runner"]["hostname"] == "unknown"
    assert "## Nodes\n\nnot recorded" in md


def test_the_nodes_are_a_table(factory, tmp_path):
    factory.full_run()
    doc, md, html_text = _written(factory, tmp_path)
    assert doc["cluster"]["nodes"] == [{"name": "kstack-control-plane", "kubelet_version": "v1.27.3",
                                        "container_runtime": "containerd://1.7.1",
                                        "os_image": "Debian GNU/Linux 11 (bullseye)"}]
    assert ("| NAME | KUBELET | CONTAINER RUNTIME | OS IMAGE |\n|---|---|---|---|\n"
            "| kstack-control-plane | v1.27.3 | containerd://1.7.1 | Debian GNU/Linux 11 (bullseye) |") in md
    assert ("<th>NAME</th><th>KUBELET</th><th>CONTAINER RUNTIME</th><th>OS IMAGE</th></tr></thead><tbody><tr>"
            "<td>kstack-control-plane</td><td>v1.27.3</td><td>containerd://1.7.1</td>"
            "<td>Debian GNU/Linux 11 (bullseye)</td>") in html_text


S3 = "inference.test_iris_from_s3"


def test_every_outcome_is_counted_and_the_counts_add_up_to_the_inventory(factory, tmp_path):
    """The factory's tests and the optional S3 check collected; -k left two out; pytest skipped the S3 check; one
    failed, one broke, one never ran (the run was cut short); every other one passed."""
    from tests.reports.factory import TESTS
    factory.run()
    factory.inventory([*TESTS, S3], deselected={"STACK-CERT-ROUNDTRIP", "STACK-NS-ACTIVE[istio-system]"})
    factory.all_passed(skip={"STACK-CERT-ROUNDTRIP", "STACK-NS-ACTIVE[istio-system]", "STACK-IRIS-PREDICT",
                             "STACK-WEBHOOKS-ADMIT[kserve]", "STACK-CRDS-ESTABLISHED[kserve]"})
    factory.result("STACK-IRIS-PREDICT", "failed", "[predict] v1 predictions are [0, 0], expected [1, 1]")
    factory.result("STACK-WEBHOOKS-ADMIT[kserve]", "broken", "KeyError: 'status'")
    factory.result(S3, "skipped", "Skipped: S3 settings not given (KSTACK_S3_ENDPOINT)", criteria=[])
    doc, md, html_text = _written(factory, tmp_path)
    counts = {"passed": len(TESTS) - 5, "failed": 1, "broken": 1, "skipped": 1, "deselected": 2, "not_executed": 1}
    assert doc["results"] == {"total": len(TESTS) + 1, **counts}
    assert sum(counts.values()) == doc["inventory"]["expected"] == len(TESTS) + 1
    assert doc["inventory"]["skipped"] == [S3]
    assert doc["inventory"]["deselected"] == ["STACK-CERT-ROUNDTRIP", "STACK-NS-ACTIVE[istio-system]"]
    assert doc["inventory"]["not_executed"] == ["STACK-CRDS-ESTABLISHED[kserve]"]
    assert _criteria(doc)["AC-CERT-ROUNDTRIP"]["reason"] == "deselected: STACK-CERT-ROUNDTRIP"
    assert ("| passed | failed | broken | skipped | deselected | not executed | total |\n"
            "|---|---|---|---|---|---|---|\n| 14 | 1 | 1 | 1 | 2 | 1 | 20 |") in md
    assert ("<tr><th>passed</th><th>failed</th><th>broken</th><th>skipped</th><th>deselected</th><th>not executed</th>"
            "<th>total</th></tr></thead><tbody><tr><td>14</td><td>1</td><td>1</td><td>1</td><td>2</td><td>1</td>"
            "<td>20</td></tr>") in html_text
    assert "skipped: S3 settings not given (KSTACK_S3_ENDPOINT)" in md        # the skip's reason beside it
    assert "`STACK-CERT-ROUNDTRIP`: deselected" in md


def test_an_optional_skipped_check_is_counted_but_does_not_block_pass(factory, tmp_path):
    from tests.reports.factory import TESTS
    factory.run()
    factory.inventory([*TESTS, S3])
    factory.all_passed()
    factory.result(S3, "skipped", "Skipped: S3 settings not given", criteria=[])
    doc, _, _ = _written(factory, tmp_path)
    assert doc["verdict"] == "PASS"
    assert doc["results"]["skipped"] == 1 and doc["results"]["total"] == len(TESTS) + 1


def test_a_phase_that_ran_out_of_time_is_in_the_table(factory, tmp_path):
    factory.full_run()
    factory.phases([{"name": "inference_service", "seconds": 600.4, "budget": 600, "finished": False,
                     "error_type": "WaitTimeout"},
                    {"name": "certificate", "seconds": 3.2, "budget": 120, "finished": False, "error_type": "CheckFailure"},
                    {"name": "predict", "seconds": 0.4, "budget": 60}], worker="gw1")
    doc, md, html_text = _written(factory, tmp_path)
    phases = {p["name"]: p for p in doc["phases"]}
    assert phases["inference_service"]["finished"] is False and phases["inference_service"]["status"] == "TIMED OUT"
    assert phases["inference_service"]["over_budget"] is True
    assert phases["certificate"]["status"] == "DID NOT FINISH" and phases["certificate"]["error_type"] == "CheckFailure"
    assert phases["predict"]["status"] == "ok" and phases["predict"]["finished"] is True
    assert "| inference_service | 600.4 | 600.0 | TIMED OUT |" in md
    assert "| certificate | 3.2 | 120.0 | DID NOT FINISH (CheckFailure) |" in md
    assert "<td>inference_service</td><td>600.4</td><td>600.0</td><td><span class=\"over\">TIMED OUT</span></td>" in html_text
    assert '<span class="over">DID NOT FINISH (CheckFailure)</span>' in html_text
    limitations = {lim["text"] for lim in doc["limitations"]}
    assert "phase inference_service timed out after 600.4 s (its budget: 600.0 s)" in limitations
    assert "phase certificate did not finish: it raised CheckFailure after 3.2 s" in limitations


def test_failures_and_tests_are_listed_by_their_allure_title(factory, tmp_path):
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT", "STACK-CRDS-ESTABLISHED[kserve]"})
    factory.result("STACK-IRIS-PREDICT", "failed", "[predict] v1 predictions are [0, 0]",
                   name="Iris answers a v1 predict with the expected classes")
    factory.result("STACK-CRDS-ESTABLISHED[kserve]", name="kserve: CRDs present, Established and serving their versions")
    doc, md, html_text = _written(factory, tmp_path)
    (failure,) = doc["failures"]
    assert failure["title"] == "Iris answers a v1 predict with the expected classes"
    assert "| Iris answers a v1 predict with the expected classes (`STACK-IRIS-PREDICT`) | failed |" in md
    assert ('<span class="check">Iris answers a v1 predict with the expected classes<br>'
            '<code>STACK-IRIS-PREDICT</code></span>') in html_text
    tests = {t["id"]: t for t in doc["tests"]}
    assert tests["STACK-CRDS-ESTABLISHED[kserve]"]["title"] == "kserve: CRDs present, Established and serving their versions"
    assert "| kserve: CRDs present, Established and serving their versions | `STACK-CRDS-ESTABLISHED[kserve]` | passed |" in md
    assert "tests: test STACK-CRDS-ESTABLISHED[cert-manager]; kserve: CRDs present, Established and serving" in md
    assert ('<span title="STACK-CRDS-ESTABLISHED[kserve]">kserve: CRDs present, Established and serving their '
            'versions</span>') in html_text


SEED_STATEMENTS = {"istio": '1.19.0 "is officially supported on Kubernetes versions 1.25 to 1.28" (istio.io)',
                   "kserve": "0.11: tested matrix 1.25 to 1.27 (kserve/website)"}


def test_a_cluster_outside_the_tested_range_says_so_prominently_in_every_format(factory, tmp_path):
    """The first user's cluster runs a Kubernetes newer than the seed stack was tested on: verified all the same, and
    the finding is in the JSON, at the top of the Markdown and HTML, among the limitations and on the matrix page."""
    from reports.matrix import write_matrix
    from stack.record import SupportFinding
    support = SupportFinding("v1.31.4", "1.25-1.27", "seed", SEED_STATEMENTS)
    factory.run(support={"server_version": "v1.31.4", "tested_range": "1.25-1.27", "profile": "seed",
                         "statements": SEED_STATEMENTS},
                limitations=[{"id": "outside-tested-range", "text": support.sentence()}],
                cluster={"provider": "existing", "server_version": "v1.31.4", "context": "ha", "nodes": []})
    factory.phases()
    factory.inventory(split=2)
    factory.all_passed()
    out = tmp_path / "out"
    write_signoff(factory.root, out)
    doc = json.loads((out / "signoff.json").read_text())
    assert doc["verdict"] == "PASS"             # the range is a finding, not a failure: the checks decide the verdict
    assert doc["support"]["tested_range"] == "1.25-1.27" and doc["support"]["statements"] == SEED_STATEMENTS
    assert any(lim["id"] == "outside-tested-range" for lim in doc["limitations"])
    md = (out / "signoff.md").read_text()
    head = md[:md.index("## Versions")]
    assert "**Outside the tested range:** Kubernetes v1.31.4 is outside profile 'seed''s tested range 1.25-1.27" in head
    assert "> - istio: 1.19.0 \"is officially supported on Kubernetes versions 1.25 to 1.28\"" in head
    html = (out / "signoff.html").read_text()
    assert html.index("Outside the tested range") < html.index("<h2>Versions")
    _, paths = write_matrix([factory.root], tmp_path / "matrix")
    page = paths[0].read_text()
    assert "OUTSIDE the tested range 1.25-1.27" in page
    assert "seed: Kubernetes v1.31.4 is outside the profile's tested range 1.25-1.27" in page   # the note
    assert json.loads(paths[2].read_text())["profiles"][0]["run"]["outside_range"] == "1.25-1.27"


def test_inside_the_tested_range_there_is_no_banner(factory, tmp_path):
    factory.full_run()
    out = tmp_path / "out"
    write_signoff(factory.root, out)
    assert json.loads((out / "signoff.json").read_text())["support"] is None
    assert "Outside the tested range" not in (out / "signoff.md").read_text()


# -- one typed document, one list of sections -------------------------------------------------------------------------
def test_signoff_json_reads_back_as_the_document_it_was_written_from(factory, tmp_path):
    from reports.evaluation import evaluate
    from reports.signoff import read_signoff
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT"})
    factory.result("STACK-IRIS-PREDICT", "failed", "[predict] v1 predictions are [0, 0]")
    (path, *_) = write_signoff(factory.root, tmp_path / "out")
    written = read_signoff(path)
    again = evaluate(factory.root, bundle_sha256=written.bundle_sha256)
    again.generated = written.generated
    assert written == again          # every field survives the file: signoff.json is the typed document
    assert written.criterion("AC-IRIS-PREDICT").status == "failed" and written.failures[0].id == "STACK-IRIS-PREDICT"


def test_every_section_shows_in_both_pages(factory, tmp_path):
    """Markdown and HTML draw the same list of sections: a section is in both or in neither."""
    from reports.evaluation import evaluate
    from reports.signoff_render import render_html, render_markdown, sections
    factory.run()
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT"})
    factory.result("STACK-IRIS-PREDICT", "failed", "[predict] v1 predictions are [0, 0]")
    doc = evaluate(factory.root)
    md, page = render_markdown(doc), render_html(doc)
    titled = [s for s in sections(doc) if s.title]
    assert len(titled) >= 12
    for section in titled:
        assert f"{'#' * section.level} {section.title}\n" in md, section.title
        assert f"<h{section.level}>{section.title}</h{section.level}>" in page.replace("&#x27;", "'"), section.title
    assert md.count("\n## ") == page.count("<h2>")


def test_the_ha_posture_is_in_every_sign_off_and_says_whether_ac_ha_counted(factory, tmp_path):
    posture = {"workloads": [{"workload": "kserve/kserve-controller-manager", "replicas": "1/2", "nodes": "node-1",
                              "budgets": "none", "leases": "kserve/kserve-controller-manager-leader-lock: "
                              "kserve-controller-manager-7d4b55b658-c42m9_1f2e (renewed 4 s ago)", "age": "130d"}],
               "webhooks": [{"webhook": "ValidatingWebhookConfiguration/inferenceservice.serving.kserve.io x",
                             "failure_policy": "Fail", "service": "kserve/kserve-webhook-server-service",
                             "ready_endpoints": 1, "guards": ["serving.kserve.io/inferenceservices"]}],
               "findings": ["kserve/kserve-controller-manager: 1 Ready replica(s), fewer than the 2 HA needs"]}
    factory.run(ha=posture)
    factory.inventory()
    factory.all_passed()
    doc, md, html_text = _written(factory, tmp_path)
    assert doc["verdict"] == "PASS" and doc["ha"]["findings"] == posture["findings"]     # evidence, not a verdict
    assert "not highly available (AC-HA is not required: evidence only)" in md
    assert "- kserve/kserve-controller-manager: 1 Ready replica(s), fewer than the 2 HA needs" in md
    assert "| kserve/kserve-controller-manager | 1/2 | node-1 | none |" in md
    assert "<h2>High availability</h2>" in html_text and "<td>130d</td>" in html_text
    factory.run()          # a run record without a posture (an older run, or a profile without ha:): no section
    _, md, _ = _written(factory, tmp_path)
    assert "## High availability" not in md
