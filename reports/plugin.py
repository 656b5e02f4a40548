"""pytest plugin: where allure-results go, and the end-of-session report files.

Registered from the root conftest.py (`pytest_plugins = ["reports.plugin"]`).

- pytest_configure (tryfirst, so it runs before allure-pytest's own pytest_configure reads `allure_report_dir`):
  when --alluredir was not given, results go to <rootdir>/reports/allure-results; in the controller (or a run without
  xdist) stale files are removed from that default directory first, so the sign-off reflects only this run. An explicit
  --alluredir is left alone (use allure's --clean-alluredir). JUnit XML goes to junit.xml beside the results folder
  unless --junitxml is given.
- finalize(config, run): called by fixtures/plugin.py at session end on the controller, after the RunRecord
  (kstack-run.json) is written.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
import pytest

from reports.allure_meta import write_categories, write_environment, write_executor
from reports.signoff import read_signoff, remove_previous, summary_line, write_signoff
from stack.record import RunRecord, write_run

DEFAULT_RESULTS = Path("reports") / "allure-results"
DEFAULT_SIGNOFF = Path("reports") / "out"
JUNIT_NAME = "junit.xml"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def default_results_dir(config: pytest.Config) -> Path:
    return Path(config.rootpath) / DEFAULT_RESULTS


SUITES_DIR = "suites"


def acceptance_run(config: pytest.Config) -> bool:
    """Whether this pytest run selects acceptance suites (paths under suites/), not only the suite's own tests."""
    suites = (Path(config.rootpath) / SUITES_DIR).resolve()
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / str(arg).split("::")[0]).resolve()
        if path == suites or suites in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # The suite's own tests (tests/) write no allure results or JUnit XML of their own unless asked.
    if not acceptance_run(config):
        return
    explicit = bool(getattr(config.option, "allure_report_dir", None))
    if not explicit:
        config.option.allure_report_dir = str(default_results_dir(config))
    # JUnit XML by default, next to the Allure results: CI systems read it natively. --junitxml PATH overrides it.
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(junit_path(config))
    if is_worker(config) or getattr(config.option, "collectonly", False):
        return
    # A previous run's verdict must not survive this run: it is removed now, and this run writes its own (ERROR
    # when it stops before any check: stopped()).
    remove_previous(signoff_dir(config))
    if not explicit:
        clean_results_dir(default_results_dir(config))


def clean_results_dir(path: Path) -> None:
    """Remove everything inside path (not path itself)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            try:
                child.unlink()
            except FileNotFoundError:
                pass


def results_dir(config: pytest.Config) -> Path:
    """The allure results directory of this run (absolute)."""
    value = getattr(config.option, "allure_report_dir", None)
    return Path(os.path.abspath(value)) if value else default_results_dir(config)


def junit_path(config: pytest.Config) -> Path:
    """Where the JUnit XML goes by default: beside the allure-results folder (reports/junit.xml by default)."""
    return results_dir(config).parent / JUNIT_NAME


def signoff_dir(config: pytest.Config) -> Path:
    try:
        value = config.getoption("signoff_dir")
    except ValueError:  # option not registered (yet)
        value = None
    if not value:
        return Path(config.rootpath) / DEFAULT_SIGNOFF
    return Path(os.path.abspath(value))


def stopped(config: pytest.Config, message: str, run: RunRecord | None = None) -> None:
    """The run stops before any check (bad options, preflight): a sign-off with verdict ERROR and the reason, and
    what the run knew by then (`run`: its profile, the suite, the runner), so the sign-off folder says what happened
    to this run. A no-op in xdist workers."""
    if is_worker(config) or not acceptance_run(config) or getattr(config.option, "collectonly", False):
        return
    if run is not None:
        results_dir(config).mkdir(parents=True, exist_ok=True)
        write_run(results_dir(config), run)
    paths = write_signoff(results_dir(config), signoff_dir(config), stopped=message)
    print(summary_line(read_signoff(paths[0]), paths[:3]), flush=True)


def finalize(config: pytest.Config, run: RunRecord | None) -> list[Path]:
    """Write environment.properties, executor.json, categories.json into the results dir, then the sign-off into
    --signoff-dir; print a one-line summary. A no-op (returns []) in xdist workers."""
    if is_worker(config):
        return []
    rdir = results_dir(config)
    rdir.mkdir(parents=True, exist_ok=True)
    write_environment(rdir, run)
    write_executor(rdir)
    write_categories(rdir)
    paths = write_signoff(rdir, signoff_dir(config))
    doc = read_signoff(paths[0])
    line = summary_line(doc, paths)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, bold=True, red=doc.verdict == "FAIL", green=doc.verdict == "PASS")
    else:
        print(line)
    return paths
