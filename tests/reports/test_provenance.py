"""stack/provenance.py: which suite ran (version, git commit and tree state, Python, pytest) and where (hostname, the CI
run), as the run record keeps them; and Allure's executor.json links to the same CI run."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import tomllib

import pytest

from reports.allure_meta import write_executor
from stack import provenance
from stack.record import RunnerInfo
from tests.helpers import ROOT

GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/kstack",
          "GITHUB_RUN_ID": "987654321", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_RUN_NUMBER": "42"}


def _git(cwd, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def _tree(path, version="9.8.7"):
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "kstack"\nversion = "{version}"\n')
    (path / "README.md").write_text("kstack\n")
    return path


def test_the_version_is_the_one_pyproject_states():
    assert provenance.suite_version() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
def test_a_git_checkout_reports_its_commit_and_whether_its_tree_is_dirty(tmp_path):
    repo = _tree(tmp_path / "repo")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    suite = provenance.suite(repo)
    assert (suite.version, suite.commit, suite.dirty) == ("9.8.7", _git(repo, "rev-parse", "HEAD"), False)
    assert suite.python == platform.python_version() and suite.pytest == pytest.__version__
    (repo / "README.md").write_text("changed\n")
    assert provenance.suite(repo).dirty is True
    (repo / "README.md").write_text("kstack\n")
    (repo / "new_check.py").write_text("")          # an untracked file changes what runs too
    assert provenance.suite(repo).dirty is True


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
def test_a_tarball_has_an_unknown_commit_even_inside_another_repository(tmp_path):
    alone = _tree(tmp_path / "unpacked")
    assert (provenance.suite(alone).commit, provenance.suite(alone).dirty) == ("unknown", None)
    outer = tmp_path / "outer"
    outer.mkdir()
    _git(outer, "init", "-q")
    _git(outer, "commit", "-q", "--allow-empty", "-m", "outer")
    inside = _tree(outer / "vendor" / "kstack")
    suite = provenance.suite(inside)
    assert (suite.commit, suite.dirty, suite.version) == ("unknown", None, "9.8.7")


def test_no_pyproject_is_an_unknown_version(tmp_path):
    assert provenance.suite_version(tmp_path) == "unknown"


@pytest.mark.parametrize(("env", "expected"), [
    (GITHUB, RunnerInfo(ci="GitHub Actions", ci_url="https://github.com/acme/kstack/actions/runs/987654321",
                        ci_attempt="1")),
    ({**GITHUB, "GITHUB_RUN_ATTEMPT": "2"},
     RunnerInfo(ci="GitHub Actions", ci_url="https://github.com/acme/kstack/actions/runs/987654321/attempts/2",
                ci_attempt="2")),
    ({"GITLAB_CI": "true", "CI_JOB_URL": "https://gitlab.example.org/acme/kstack/-/jobs/77"},
     RunnerInfo(ci="GitLab CI", ci_url="https://gitlab.example.org/acme/kstack/-/jobs/77")),
    ({"JENKINS_URL": "https://ci.example.org/", "BUILD_URL": "https://ci.example.org/job/kstack/12/"},
     RunnerInfo(ci="Jenkins", ci_url="https://ci.example.org/job/kstack/12/")),
    ({"BUILD_URL": "https://builds.example.org/12"}, RunnerInfo(ci="CI", ci_url="https://builds.example.org/12")),
    ({"HOME": "/root"}, RunnerInfo()),
], ids=["github", "github-rerun", "gitlab", "jenkins", "build-url", "local"])
def test_the_ci_run_of_each_ci_system(env, expected):
    assert provenance.ci_run(env) == expected


def test_the_runner_has_this_hosts_name(monkeypatch):
    monkeypatch.setattr(provenance.socket, "gethostname", lambda: "build-host-3")
    assert provenance.runner({"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/j/1"}) == RunnerInfo(
        hostname="build-host-3", ci="GitLab CI", ci_url="https://gl/j/1")


def test_allure_executor_links_the_same_ci_run(tmp_path):
    env = {**GITHUB, "GITHUB_RUN_ATTEMPT": "3"}
    assert json.loads(write_executor(tmp_path, env).read_text())["buildUrl"] == provenance.ci_run(env).ci_url
