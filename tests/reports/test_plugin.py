"""reports.plugin inside a real pytest run (a throwaway project in tmp_path, with and without xdist)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(session, config, items):
    # the lead's inventory, recorded before deselection, one file per process (xdist workers collect, not the
    # controller)
    from reports.plugin import results_dir
    worker = getattr(config, "workerinput", {}).get("workerid", "controller")
    inv = [{"id": i.name, "nodeid": i.nodeid, "criteria": list(i.get_closest_marker("criteria").args)}
           for i in items]
    results_dir(config).mkdir(parents=True, exist_ok=True)
    (results_dir(config) / f"kstack-inventory-{worker}.json").write_text(json.dumps(inv))


@pytest.fixture(autouse=True)
def _labels(request):
    allure.dynamic.id(request.node.name)
    for c in request.node.get_closest_marker("criteria").args:
        allure.dynamic.label("criterion", c)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    from reports.plugin import finalize, results_dir
    run = {"simulated": True, "profile": "seed", "versions": {"kserve": "v0.11.0"},
           "running_versions": {"kserve": "v0.11.0"}, "cluster": {"provider": "twin", "server_version": "v1.27.3"}}
    (results_dir(session.config) / "kstack-run.json").write_text(json.dumps(run))
    finalize(session.config, run)
'''

TESTS = "import pytest\n" + "".join(
    f"\n@pytest.mark.criteria('{cid}')\ndef test_{cid.replace('-', '_')}():\n    pass\n"
    for cid in ("AC-ISTIO", "AC-KNATIVE", "AC-CERT-MANAGER", "AC-KSERVE-CONTROLLER", "AC-ALL-READY", "AC-CRDS",
                "AC-WEBHOOKS", "AC-CERT-ROUNDTRIP", "AC-IRIS-PREDICT"))


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
    assert len(list(results.glob("*-result.json"))) == 9
    for name in ("environment.properties", "executor.json", "categories.json"):
        assert (results / name).is_file(), name
    doc = json.loads((project / "out" / "signoff.json").read_text())
    assert doc["verdict"] == "PASS", doc["verdict_reasons"]
    assert doc["simulated"] is True
    assert "sign-off: PASS (SIMULATED)" in proc.stdout
    assert _junit_cases(project / "reports" / "junit.xml") == 9   # beside the allure-results folder, by default


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
    assert _junit_cases(project / "ci" / "results.xml") == 9
    assert not (project / "reports" / "junit.xml").exists()


def test_collect_only_does_not_clean(tmp_path):
    project = _project(tmp_path)
    proc = _run(project, "--collect-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "reports" / "allure-results" / "stale-result.json").exists()
