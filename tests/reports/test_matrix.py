"""The matrix page (reports/matrix.py) built from three real twin runs, one of them with a fault, and from missing,
unreadable and cut-short runs; the HTML in headless Chromium; the runs merged into one Allure report with history.

The three twin runs are the session's shared runs (tests/twinruns.py): the profiles' own PASS runs of
tests/test_acceptance_twin.py and its latest run with KServe's controller unable to pull its image."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reports import build_html
from reports.matrix import FAIL, INCOMPLETE, NOT_RUN, PASS, build_matrix, main, render_markdown
from stack.criteria import CRITERIA
from tests.helpers import CHROMIUM, headless_chromium
from tests.test_acceptance_twin import CONTROLLER_PULL, controller_pull_run, profile_run
from twin import toolchain

pytestmark = [pytest.mark.slow, pytest.mark.twin]

TWIN_K8S = toolchain.load_builds()["kubernetes"].version      # every profile's twin runs this one
# profile -> its run (seed and latest-standard as shipped; latest with the fault CONTROLLER_PULL)
RUNS = {"seed": lambda runs, twins: profile_run(runs, twins, "seed"), "latest": controller_pull_run,
        "latest-standard": lambda runs, twins: profile_run(runs, twins, "latest-standard")}
assert CONTROLLER_PULL.endswith("kserve/kserve-controller-manager")     # what EXPECTED["latest"] describes
KSERVE_WORKLOADS = ("workloads.test_workloads_ready[kserve]", "Image pull")

# profile -> criterion -> (status, first failing test, its category); criteria not named here must PASS.
# no Prometheus given to these runs, no profile declares monitors
OPTIONAL = {"AC-PROMQL": (NOT_RUN, None, None), "AC-MONITORS": (NOT_RUN, None, None),
            "AC-HA": (NOT_RUN, None, None),                     # required by latest only (it installs HA)
            "AC-MESH-MTLS": (NOT_RUN, None, None),     # none requires STRICT mTLS
            "AC-MESH-AUTHZ": (NOT_RUN, None, None)}    # nor declares an authorization policy
EXPECTED = {
    "seed": {**OPTIONAL, "AC-POD-SECURITY": (NOT_RUN, None, None)},     # v0.11's runtimes declare no securityContext
    "latest": {
        # The controller's image cannot be pulled: its workloads test fails first, on the image pull ...
        "AC-KSERVE-CONTROLLER": (FAIL, *KSERVE_WORKLOADS),
        "AC-ALL-READY": (FAIL, *KSERVE_WORKLOADS),
        # ... and with no controller pod, KServe's webhook has no endpoints: admission and the Iris deploy fail on it,
        # blocked by the controller, so filed under its root cause (fixtures/blocking.py).
        "AC-WEBHOOKS": (FAIL, "webhooks.test_webhooks_admitting[kserve]", "Image pull"),
        "AC-IRIS-PREDICT": (FAIL, "inference.test_iris_ready", "Image pull"),
        "AC-IRIS-S3": (FAIL, "inference.test_iris_from_s3", "Image pull"),
        "AC-POD-SECURITY": (FAIL, "security.test_predictor_containers_run_restricted", "Image pull"),
        "AC-AUTOSCALING": (FAIL, "autoscaling.test_autoscaling_follows_the_inference_service", "Image pull"),
        "AC-METRICS": (FAIL, "monitoring.test_model_metrics_count_the_predict_calls", "Image pull"),
        "AC-SCALE-TO-ZERO": (FAIL, "autoscaling.test_scale_to_zero_and_cold_start", "Image pull"),
        "AC-SCALE-OUT": (FAIL, "autoscaling.test_replicas_rise_under_load_and_fall_back", "Image pull"),
        **OPTIONAL,
        # ... and the controller's replicas are not Ready: not highly available either (AC-HA has no blocker)
        "AC-HA": (FAIL, "availability.test_the_stack_is_highly_available", "High availability"),
    },
    "latest-standard": {"AC-ISTIO": (NOT_RUN, None, None), "AC-KNATIVE": (NOT_RUN, None, None),   # no Istio/Knative
                        "AC-SCALE-TO-ZERO": (NOT_RUN, None, None), "AC-SCALE-OUT": (NOT_RUN, None, None),
                        **OPTIONAL},
}


@pytest.fixture(scope="session")
def twin_runs(shared_runs, shared_twins) -> dict[str, Path]:
    """profile -> its run folder (allure-results/, out/, junit.xml), made once per session."""
    return {profile: make(shared_runs, shared_twins).folder for profile, make in RUNS.items()}


def _cells(matrix) -> dict[str, dict[str, tuple]]:
    return {col.run.name: {c.id: (cell.status, cell.test, cell.category) for c, cell in zip(matrix.criteria, col.cells, strict=True)}
            for col in matrix.columns}


def test_every_cell_is_right_for_healthy_and_faulty_runs(twin_runs):
    matrix = build_matrix([twin_runs[p] for p in RUNS])
    got = _cells(matrix)
    assert list(got) == list(RUNS)
    for profile in RUNS:
        expected = {c.id: EXPECTED[profile].get(c.id, (PASS, None, None)) for c in CRITERIA}
        assert got[profile] == expected, profile
    columns = {col.run.name: col for col in matrix.columns}
    assert {p: columns[p].verdict for p in RUNS} == {"seed": "PASS", "latest": "FAIL", "latest-standard": "PASS"}
    assert matrix.verdict == "FAIL"
    assert matrix.simulated == list(RUNS)
    for profile, col in columns.items():
        signoff = json.loads((twin_runs[profile] / "out" / "signoff.json").read_text())
        assert col.verdict == signoff["verdict"], profile            # the same evaluation as the run's own sign-off
        assert col.run.server_version == signoff["cluster"]["server_version"] and col.run.server_version
        assert col.run.duration_seconds == signoff["duration_seconds"]
        assert {v.component: (v.wanted, v.running, v.matches) for v in col.run.versions} == {
            name: (signoff["versions"][name], signoff["running_versions"][name], True) for name in signoff["versions"]}
    assert columns["latest-standard"].cells[0].note == "not applicable: the profile has no istio"


def test_the_three_files_agree(twin_runs, tmp_path):
    assert main([str(twin_runs[p]) for p in RUNS] + ["--out", str(tmp_path)]) == 0
    md = (tmp_path / "matrix.md").read_text()
    doc = json.loads((tmp_path / "matrix.json").read_text())
    assert md.startswith("# KServe stack matrix: FAIL")
    assert "SIMULATED: seed, latest, latest-standard ran on the twin" in md
    row = next(line for line in md.splitlines() if line.startswith("| AC-KSERVE-CONTROLLER"))
    assert row.split(" | ")[1:] == ["PASS", "FAIL: workloads.test_workloads_ready[kserve] (Image pull)", "PASS |"]
    heading = md.splitlines()[4]
    assert f"seed (Kubernetes {TWIN_K8S} on twin, SIMULATED)" in heading     # the twin's one control plane
    assert doc["schema_version"] == 1 and doc["verdict"] == "FAIL"
    cells = {p["name"]: p["cells"] for p in doc["profiles"]}
    assert cells["latest"]["AC-ALL-READY"] == {"status": FAIL, "test": KSERVE_WORKLOADS[0],
                                               "category": KSERVE_WORKLOADS[1], "note": None}
    assert cells["latest-standard"]["AC-KNATIVE"]["status"] == NOT_RUN
    assert (twin_runs["seed"] / "junit.xml").is_file()   # JUnit XML beside the run's allure-results, by default


def test_missing_unreadable_and_cut_short_runs_are_incomplete_columns(twin_runs, tmp_path):
    unreadable = tmp_path / "seed-unreadable"
    shutil.copytree(twin_runs["seed"], unreadable)
    (unreadable / "allure-results" / "kstack-run.json").write_text('{"profile": "seed", "versio')
    wrong_shape = tmp_path / "seed-wrong-shape"
    shutil.copytree(twin_runs["seed"], wrong_shape)
    (wrong_shape / "allure-results" / "kstack-run.json").write_text(
        '{"schema_version": 1, "simulated": true, "profile": "seed", "versions": "v1"}')
    cut_short = tmp_path / "latest-cut-short"     # killed by the job's time limit: no run record, failures so far
    shutil.copytree(twin_runs["latest"], cut_short)
    (cut_short / "allure-results" / "kstack-run.json").unlink()
    missing = tmp_path / "latest-standard"        # its job left no artifact

    matrix = build_matrix([twin_runs["seed"], unreadable, wrong_shape, cut_short, missing])
    columns = {col.run.name: col for col in matrix.columns}
    assert list(columns) == ["seed", "seed-unreadable", "seed-wrong-shape", "latest-cut-short", "latest-standard"]
    assert {c.status for c in columns["seed"].cells} == {PASS, NOT_RUN}
    for name, reason in (("seed-unreadable", "kstack-run.json is unreadable"),
                         ("seed-wrong-shape", "kstack-run.json is unreadable: RunRecord.versions: expected a mapping"),
                         ("latest-standard", "no results at")):
        col = columns[name]
        assert col.verdict == INCOMPLETE and reason in col.run.problem, (name, col.run.problem)
        assert all(c.status == INCOMPLETE and c.note == col.run.problem for c in col.cells), name
        assert col.run.simulated is None
    cut = _cells(matrix)["latest-cut-short"]
    assert columns["latest-cut-short"].verdict == FAIL      # a failure found stands, even in partial results
    assert cut["AC-ALL-READY"] == (FAIL, *KSERVE_WORKLOADS)
    assert cut["AC-CRDS"] == (INCOMPLETE, None, None)
    assert "no kstack-run.json" in columns["latest-cut-short"].run.problem
    assert matrix.verdict == FAIL
    md = render_markdown(matrix)
    assert f"latest-standard: INCOMPLETE: no results at {missing}" in md


class _References(HTMLParser):
    """Every attribute that could make a browser fetch something, and every CSS url()/@import."""

    ATTRS = {"src", "href", "srcset", "action", "poster", "data", "background", "formaction", "xlink:href"}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.found += [f"{tag} {k}={v}" for k, v in attrs if k in self.ATTRS and v and not v.startswith("#")]
        self.found += [f"{tag} style={v}" for k, v in attrs if k == "style" and v and re.search(r"url\(|@import", v)]

    def handle_data(self, data):
        if re.search(r"url\(|@import", data):
            self.found.append(f"css: {data[:80]}")


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_html_page_opens_in_chromium_and_references_nothing_outside_itself(twin_runs, tmp_path):
    main([str(twin_runs[p]) for p in RUNS] + [str(tmp_path / "missing"), "--out", str(tmp_path / "page")])
    page = tmp_path / "page" / "matrix.html"
    refs = _References()
    refs.feed(page.read_text())
    assert refs.found == [] and not refs.tags & {"script", "link", "iframe", "img", "object", "embed", "base"}
    proc = headless_chromium(page.as_uri(), tmp_path / "chromium-profile", "--enable-logging=stderr", "--v=0",
                             "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    rendered = _References()
    rendered.feed(proc.stdout)
    assert rendered.found == []
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style\b[\s\S]*?</style>", "", proc.stdout)))
    assert "KServe stack matrix: FAIL" in text
    assert "AC-KSERVE-CONTROLLER KServe controller running PASS FAIL workloads.test_workloads_ready[kserve] " \
           "Image pull PASS INCOMPLETE" in text, text[:3000]
    assert f"latest-standard SIMULATED Kubernetes {TWIN_K8S} on twin PASS" in text
    assert "missing Kubernetes unknown INCOMPLETE" in text


@pytest.mark.skipif(not build_html.allure_installed(), reason="the allure npm package is not installed "
                                                               "(npm ci --prefix reports)")
def test_the_runs_merge_into_one_allure_report_with_history_across_nights(twin_runs, tmp_path):
    results = [twin_runs[p] / "allure-results" for p in RUNS]
    history = tmp_path / "allure-history" / "history.jsonl"
    tests = sum(len(list(r.glob("*-result.json"))) for r in results)
    for night in (1, 2):
        index = build_html.build(results, tmp_path / f"report-{night}", history=history)
        assert index.is_file() and not build_html.external_references(index.read_text(encoding="utf-8"))
        entries = [json.loads(line) for line in history.read_text().splitlines()]
        assert len(entries) == night
    # Each profile keeps its own history: every test of every profile has an entry of its own.
    assert len(entries[-1]["testResults"]) == tests
    roundtrip = [item for item in entries[-1]["testResults"].values()
                 if item["name"] == "cert-manager issues a CA and a leaf certificate that validate"]   # its allure.title
    epics = sorted(label["value"] for item in roundtrip for label in item["labels"] if label["name"] == "epic")
    assert epics == [f"KServe stack ({p})" for p in sorted(RUNS)]
