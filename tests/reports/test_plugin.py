"""reports.plugin inside a real pytest run (a throwaway project in tmp_path, with and without xdist)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reports.evaluation import build_signoff
from stack.criteria import CRITERIA
from tests.helpers import run_pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = '''
import json
from pathlib import Path

import allure
import pytest

pytest_plugins = ["reports.plugin"]


def pytest_addoption(parser):
    parser.addoption("--signoff-dir", dest="signoff_dir", default=None)


def pytest_configure(config):
    config.addinivalue_line("markers", "criteria(*ids): criteria")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    # the lead's inventory, recorded before deselection, one file per process (xdist workers collect, not the
    # controller), deselected tests marked so, as fixtures/plugin.py records it
    config.kstack_inventory = {i.nodeid: {"id": i.name, "nodeid": i.nodeid, "deselected": False,
                                          "criteria": list(i.get_closest_marker("criteria").args)} for i in items}
    _write_inventory(config)


def pytest_deselected(items):
    for item in items:
        item.config.kstack_inventory[item.nodeid]["deselected"] = True
    if items:
        _write_inventory(items[0].config)


def _write_inventory(config):
    from reports.plugin import results_dir
    worker = getattr(config, "workerinput", {}).get("workerid", "controller")
    results_dir(config).mkdir(parents=True, exist_ok=True)
    (results_dir(config) / f"kstack-inventory-{worker}.json").write_text(json.dumps(list(config.kstack_inventory.values())))


@pytest.fixture(autouse=True)
def _labels(request):
    allure.dynamic.id(request.node.name)
    for c in request.node.get_closest_marker("criteria").args:
        allure.dynamic.label("criterion", c)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    from reports.plugin import finalize, results_dir
    from stack.criteria import CRITERIA, RunFacts
    from stack.record import ClusterInfo, CriterionApplicability, RunRecord, write_run
    facts = RunFacts(frozenset({"cert-manager", "istio", "knative", "kserve"}), serverless=True)
    run = RunRecord(simulated=True, profile="seed", versions={"kserve": "v0.11.0"},
                    running_versions={"kserve": "v0.11.0"},
                    cluster=ClusterInfo(provider="twin", server_version="v1.27.3"),
                    criteria=[CriterionApplicability(c.id, c.title, *c.applies(facts)) for c in CRITERIA])
    write_run(results_dir(session.config), run)
    finalize(session.config, run)
'''

# one passing test per criterion that is not optional (the optional ones are NOT RUN without what they need)
MANDATORY = [c.id for c in CRITERIA if not c.needs]
TESTS = "import pytest\n" + "".join(
    f"\n@pytest.mark.criteria('{cid}')\ndef test_{cid.replace('-', '_')}():\n    pass\n" for cid in MANDATORY)


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / "reports" / "allure-results").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "suites").mkdir()
    (project / "suites" / "test_x.py").write_text(TESTS)   # the default results dir is for acceptance runs (suites/)
    (project / "reports" / "allure-results" / "stale-result.json").write_text("{}")
    return project


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "suites", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_plugin_default_dir_clean_and_finalize(tmp_path, xdist):
    project = _project(tmp_path)
    args = ["-n", "2"] if xdist else []
    proc = _run(project, *args, "--signoff-dir", "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = project / "reports" / "allure-results"
    assert not (results / "stale-result.json").exists()
    assert len(list(results.glob("*-result.json"))) == len(MANDATORY)
    for name in ("environment.properties", "executor.json", "categories.json"):
        assert (results / name).is_file(), name
    doc = json.loads((project / "out" / "signoff.json").read_text())
    assert doc["verdict"] == "PASS", doc["verdict_reasons"]
    assert doc["simulated"] is True
    assert "sign-off: PASS (SIMULATED)" in proc.stdout
    assert _junit_cases(project / "reports" / "junit.xml") == len(MANDATORY)   # beside the allure-results folder, by default


def _junit_cases(path: Path) -> int:
    import xml.etree.ElementTree as ET
    assert path.is_file(), f"no JUnit XML at {path}"
    return len(ET.parse(path).getroot().findall(".//testcase"))


def test_explicit_alluredir_is_respected(tmp_path):
    project = _project(tmp_path)
    (project / "suites" / "test_x.py").write_text("import pytest\n\n@pytest.mark.criteria('AC-CRDS')\ndef test_a():\n    pass\n")
    proc = _run(project, "--alluredir", "elsewhere")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "reports" / "allure-results" / "stale-result.json").exists()  # untouched
    assert len(list((project / "elsewhere").glob("*-result.json"))) == 1
    assert (project / "reports" / "out" / "signoff.json").is_file()  # default --signoff-dir
    assert _junit_cases(project / "junit.xml") == 1   # beside the explicit --alluredir
    assert not (project / "reports" / "junit.xml").exists()


def test_explicit_junitxml_is_respected(tmp_path):
    project = _project(tmp_path)
    proc = _run(project, "--junitxml", "ci/results.xml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _junit_cases(project / "ci" / "results.xml") == len(MANDATORY)
    assert not (project / "reports" / "junit.xml").exists()


def test_collect_only_does_not_clean(tmp_path):
    project = _project(tmp_path)
    proc = _run(project, "--collect-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "reports" / "allure-results" / "stale-result.json").exists()


def _pytest_counts(output: str) -> dict[str, int]:
    """pytest's own closing line, e.g. "1 failed, 2 passed, 1 skipped, 1 deselected in 0.12s", as counts."""
    line = [x for x in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected)", x)][-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", line)}


OUTCOMES_PROJECT = """import allure
import pytest


@pytest.mark.criteria("AC-CRDS")
@pytest.mark.parametrize("component", ["kserve", "istio"])
@allure.title("{component}: CRDs present")
def test_crds(component):
    assert component == "kserve", "the istio CRDs are missing"


@pytest.mark.criteria("AC-IRIS-PREDICT")
def test_iris_from_s3():
    pytest.skip("S3 settings not given")


@pytest.mark.criteria("AC-ISTIO")
def test_left_out():
    pass


@pytest.mark.criteria("AC-KNATIVE")
def test_knative():
    pass
"""


def test_the_signoff_counts_are_pytests(tmp_path):
    """A real run (allure-pytest's results) with a failure, a skip and a -k deselection: the sign-off counts what
    pytest counted, they add up to the inventory, and the failure is named by its allure.title."""
    project = _project(tmp_path)
    (project / "suites" / "test_x.py").write_text(OUTCOMES_PROJECT)
    proc = _run(project, "-k", "not left_out", "--signoff-dir", "out")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    pytest_counts = _pytest_counts(proc.stdout)
    assert pytest_counts == {"failed": 1, "passed": 2, "skipped": 1, "deselected": 1}
    doc = json.loads((project / "out" / "signoff.json").read_text())
    assert {k: doc["results"][k] for k in pytest_counts} == pytest_counts
    assert doc["results"]["broken"] == doc["results"]["not_executed"] == 0
    assert doc["results"]["total"] == doc["inventory"]["expected"] == sum(pytest_counts.values()) == 5
    assert [f["title"] for f in doc["failures"]] == ["istio: CRDs present"]
    md = (project / "out" / "signoff.md").read_text()
    assert "| 2 | 1 | 0 | 1 | 1 | 0 | 5 |" in md
    assert "| istio: CRDs present (`test_crds[istio]`) | failed |" in md


def test_the_inventory_records_what_pytest_deselected(tmp_path):
    """The suite's own plugin (fixtures/plugin.py) on the real acceptance suites, collected only (no cluster): the
    inventory holds every collected test, marked where -k/-m deselected it, and the sign-off's counts are pytest's."""
    results = tmp_path / "allure-results"
    proc = run_pytest("suites/acceptance", "--collect-only", "-q", "-k", "iris or crds", "--alluredir", str(results),
                      env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    selected, collected, deselected = map(int, re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)",
                                                         proc.stdout).groups())
    doc = build_signoff(results)
    assert doc["inventory"]["expected"] == doc["results"]["total"] == collected
    assert doc["results"]["deselected"] == len(doc["inventory"]["deselected"]) == deselected
    assert doc["results"]["not_executed"] == selected        # collected only: nothing ran
    assert "inference.test_iris_from_s3" in {t["id"] for t in doc["tests"]}   # the optional S3 check
    assert all("iris" in t or "crds" in t for t in doc["inventory"]["not_executed"])
