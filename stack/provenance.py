"""Where a run came from: the suite that ran (its version, git commit, Python and pytest) and the machine it ran on
(hostname, the CI run). fixtures/runmeta.py puts both into the RunRecord; reports/allure_meta.py takes the CI run's
URL from here too, so the two never disagree."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Mapping

from stack.record import RunnerInfo, SuiteInfo

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = "unknown"


def suite_version(root: Path = ROOT) -> str:
    """The suite's version as pyproject.toml states it: the one place it is stated."""
    try:
        return str(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return UNKNOWN


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def git_state(root: Path = ROOT) -> tuple[str, bool | None]:
    """(HEAD, whether the work tree differs from it); ("unknown", None) when root is not a git checkout of its own."""
    try:
        # A tarball unpacked inside another repository must not report that repository's commit.
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return UNKNOWN, None
        return _git(root, "rev-parse", "HEAD"), bool(_git(root, "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):     # no git, not a checkout, a repository git refuses to read
        return UNKNOWN, None


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return UNKNOWN


def suite(root: Path = ROOT) -> SuiteInfo:
    commit, dirty = git_state(root)
    return SuiteInfo(version=suite_version(root), commit=commit, dirty=dirty, python=platform.python_version(),
                     pytest=_distribution_version("pytest"))


def ci_run(env: Mapping[str, str] | None = None) -> RunnerInfo:
    """The CI run this process belongs to, from the variables each CI system sets (without a hostname)."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true" or env.get("GITHUB_RUN_ID"):
        server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        repo, run_id, attempt = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID"), env.get("GITHUB_RUN_ATTEMPT")
        url = f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None
        if url and attempt and attempt != "1":     # a re-run is a page of its own
            url += f"/attempts/{attempt}"
        return RunnerInfo(ci="GitHub Actions", ci_url=url, ci_attempt=attempt or None)
    if env.get("GITLAB_CI") or env.get("CI_JOB_URL"):
        return RunnerInfo(ci="GitLab CI", ci_url=env.get("CI_JOB_URL") or None)
    if env.get("BUILD_URL"):
        return RunnerInfo(ci="Jenkins" if env.get("JENKINS_URL") else "CI", ci_url=env["BUILD_URL"])
    return RunnerInfo()


def runner(env: Mapping[str, str] | None = None) -> RunnerInfo:
    info = ci_run(env)
    info.hostname = socket.gethostname() or UNKNOWN
    return info
