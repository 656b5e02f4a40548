"""The GitHub Actions workflows (.github/workflows): linted by actionlint and zizmor, their time limits equal to what
the profiles' budgets give (stack/run_budget.py), every action pinned by commit, secrets only in env mappings.

A real Actions runner cannot be had here: these checks and the twin runs of `make matrix` stand in for one."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stack.profile import Profile, available_profiles
from stack.run_budget import job_timeout_minutes, shipped_timeouts
from tests.helpers import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY, CI = WORKFLOWS / "nightly.yml", WORKFLOWS / "ci.yml"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$")


def _load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); the workflows' triggers are not what these tests look at.
    return yaml.safe_load(path.read_text())


def _actionlint() -> str:
    found = os.environ.get("KSTACK_ACTIONLINT") or next(
        (str(p) for p in sorted((ROOT / ".cache" / "tools").glob("actionlint-*/actionlint"))), None)
    if not found or not Path(found).is_file():
        pytest.skip("actionlint is not built: `make test` builds it with Go (go install ...actionlint@v1.7.12)")
    return found


def _zizmor() -> str:
    found = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    if not found:
        pytest.skip("zizmor is not installed: `make test` installs requirements-lint.txt")
    return found


def _lint(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})


def test_actionlint_passes_on_both_workflows():
    proc = _lint([_actionlint(), "-no-color", str(NIGHTLY), str(CI)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_passes_on_both_workflows():
    proc = _lint([_zizmor(), "--offline", "--no-progress", str(NIGHTLY), str(CI)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


BROKEN = """name: broken
on: issues
jobs:
  echo:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
      - run: echo ${{ steps.nope.outputs.x }}
"""


def test_both_linters_catch_a_broken_workflow(tmp_path):
    """The linters are not silent whatever they read: an unpinned action, an injectable expression, a bad step id."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    actionlint = _lint([_actionlint(), "-no-color", str(broken)])
    assert actionlint.returncode != 0 and "steps.nope" in actionlint.stdout, actionlint.stdout
    zizmor = _lint([_zizmor(), "--offline", "--no-progress", str(broken)])
    assert zizmor.returncode != 0 and "template-injection" in zizmor.stdout + zizmor.stderr, zizmor.stdout


def _nightly_timeouts() -> dict[str, int]:
    steps = _load(NIGHTLY)["jobs"]["plan"]["steps"]
    plan = next(s for s in steps if s.get("id") == "plan")
    return json.loads(plan["env"]["TIMEOUTS"])


def test_nightly_time_limits_are_the_ones_the_profiles_budgets_give():
    expected = shipped_timeouts()
    got = _nightly_timeouts()
    assert got == expected, (
        f"nightly.yml's plan step has TIMEOUTS {json.dumps(got, sort_keys=True)}, the profiles give "
        f"{json.dumps(expected, sort_keys=True)} (python -m stack.run_budget): put these numbers in the workflow")
    acceptance = _load(NIGHTLY)["jobs"]["acceptance"]
    assert acceptance["timeout-minutes"] == "${{ matrix.timeout_minutes }}"
    assert acceptance["strategy"]["fail-fast"] is False


def test_a_longer_budget_gives_a_longer_time_limit():
    profile = Profile.load("seed")
    longer = Profile({**profile.data, "budgets": {**profile.budgets, "install": profile.budgets["install"] + 600}},
                     profile.path)
    assert job_timeout_minutes(longer) == job_timeout_minutes(profile) + 10
    assert set(shipped_timeouts()) == set(available_profiles())


def _uses(path: Path) -> list[tuple[str, str, str | None]]:
    return [m.groups() for line in path.read_text().splitlines() if (m := USES.match(line))]


def test_every_action_is_pinned_by_full_commit_sha_with_its_version():
    pins: dict[str, set[tuple[str, str]]] = {}
    for path in (NIGHTLY, CI):
        uses = _uses(path)
        assert uses, f"no `uses:` found in {path}"
        for action, ref, version in uses:
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {action}@{ref} is not pinned by a full commit SHA"
            assert version and re.fullmatch(r"v\d+\.\d+\.\d+", version), f"{path.name}: {action}@{ref} has no version"
            pins.setdefault(action.split("/")[0] + "/" + action.split("/")[1], set()).add((ref, version))
    # One version of each action repository across both workflows (actions/cache/restore and /save included).
    assert all(len(v) == 1 for v in pins.values()), pins


def _steps(workflow: dict):
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def test_secrets_reach_steps_only_through_env_and_are_never_printed():
    for path in (NIGHTLY, CI):
        for job, step in _steps(_load(path)):
            assert "secrets." not in step.get("run", ""), f"{path.name} {job}: a secret expanded into a script"
            assert "secrets." not in json.dumps(step.get("with", {})), f"{path.name} {job}: a secret as an input"
    s3 = [step for _, step in _steps(_load(NIGHTLY)) if "KSTACK_S3_SECRET_ACCESS_KEY" in step.get("env", {})]
    assert s3 and all(step["env"]["KSTACK_S3_SECRET_ACCESS_KEY"] == "${{ secrets.KSTACK_S3_SECRET_ACCESS_KEY }}"
                      for step in s3)


def test_nightly_runs_the_main_command_uploads_always_and_builds_the_matrix_after_all():
    nightly = _load(NIGHTLY)
    assert nightly["permissions"] == {}
    jobs = nightly["jobs"]
    steps = jobs["acceptance"]["steps"]
    assert any("make acceptance ARGS=" in s.get("run", "") for s in steps)
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and all(s.get("if") == "always()" for s in uploads)
    assert jobs["matrix"]["needs"] == ["plan", "acceptance"] and jobs["matrix"]["if"].startswith("always()")
    matrix_runs = " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    assert "python -m reports.matrix" in matrix_runs and "GITHUB_STEP_SUMMARY" in matrix_runs
    assert "--history allure-history/history.jsonl" in matrix_runs
    for job in jobs.values():
        assert set(job["permissions"]) <= {"contents"}, job["permissions"]


def test_ci_runs_the_readme_test_command_and_the_twin_matrix():
    runs = [s.get("run", "") for _, s in _steps(_load(CI))]
    assert "make test" in runs
    assert 'make matrix ARGS="--cluster twin" MATRIX_DIR=kstack-out' in runs
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _step(workflow: Path, job: str, name_or_id: str) -> dict:
    return next(s for s in _load(workflow)["jobs"][job]["steps"] if name_or_id in (s.get("id"), s.get("name")))


def _run_step(step: dict, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run a step's script as the runner would (bash -eo pipefail), with its env mapping's literal values and the
    given ones, and GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files."""
    if not shutil.which("jq"):
        pytest.skip("jq is not installed (the runner image has it)")
    output, summary = tmp_path / "output", tmp_path / "summary"
    literal = {k: v for k, v in (step.get("env") or {}).items() if "${{" not in str(v)}
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **literal, **env, "GITHUB_OUTPUT": str(output),
                               "GITHUB_STEP_SUMMARY": str(summary)})
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines()) if output.exists() else {}
    return proc, outputs


@pytest.mark.parametrize("requested, profiles", [("", ["latest", "latest-standard", "seed"]),
                                                 ("seed, latest", ["latest", "seed"]),
                                                 ("latest-standard latest-standard", ["latest-standard"])])
def test_the_plan_step_turns_the_dispatch_input_into_the_matrix(tmp_path, requested, profiles):
    proc, outputs = _run_step(_step(NIGHTLY, "plan", "plan"), tmp_path, REQUESTED=requested)
    assert proc.returncode == 0, proc.stderr
    include = json.loads(outputs["include"])
    assert [i["profile"] for i in include] == profiles
    assert all(i["timeout_minutes"] == shipped_timeouts()[i["profile"]] for i in include)
    assert json.loads(outputs["profiles"]) == profiles


@pytest.mark.parametrize("images, problem", [
    ("kindest/node:v1.30.0", "takes PROFILE=IMAGE entries"),        # one image for all: the ranges do not overlap
    ("sead=kindest/node:v1.27.3", "takes PROFILE=IMAGE entries"),   # a typo would silently use the pinned image
    ("seed=$(curl evil)", "not an image reference for seed")])
def test_the_plan_step_refuses_node_images_that_are_not_one_per_shipped_profile(tmp_path, images, problem):
    proc, outputs = _run_step(_step(NIGHTLY, "plan", "plan"), tmp_path, REQUESTED="", KIND_IMAGES=images)
    assert proc.returncode == 1 and problem in proc.stderr and "include" not in outputs
    proc, outputs = _run_step(_step(NIGHTLY, "plan", "plan"), tmp_path, REQUESTED="",
                              KIND_IMAGES=f"seed={SEED_NODE},latest=kindest/node:v1.34.0")
    assert proc.returncode == 0, proc.stderr


def test_the_plan_step_refuses_an_unknown_profile(tmp_path):
    proc, outputs = _run_step(_step(NIGHTLY, "plan", "plan"), tmp_path, REQUESTED="seed nightly-typo")
    assert proc.returncode == 1 and "unknown profile: nightly-typo (shipped: latest, latest-standard, seed)" in proc.stderr
    assert "include" not in outputs


def test_the_s3_step_names_missing_secrets_and_prints_no_value(tmp_path):
    step = _step(NIGHTLY, "acceptance", "S3 variant of the Iris check")
    names = ("KSTACK_S3_ENDPOINT", "KSTACK_S3_REGION", "KSTACK_S3_URI", "KSTACK_S3_ACCESS_KEY_ID",
             "KSTACK_S3_SECRET_ACCESS_KEY")
    assert set(step["env"]) == set(names)
    values = {name: f"planted-{i}-value" for i, name in enumerate(names)}
    proc, _ = _run_step(step, tmp_path, **values)
    assert proc.returncode == 0 and "S3 variant: runs" in proc.stdout
    proc, _ = _run_step(step, tmp_path, **{**values, "KSTACK_S3_SECRET_ACCESS_KEY": ""})
    assert "skipped, repository secrets not set: KSTACK_S3_SECRET_ACCESS_KEY" in proc.stdout
    assert "KSTACK_S3_SECRET_ACCESS_KEY" in (tmp_path / "summary").read_text()
    for value in values.values():
        assert value not in proc.stdout + proc.stderr + (tmp_path / "summary").read_text()


def _stub_make(tmp_path: Path) -> Path:
    """A `make` on PATH that records its arguments instead of running anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "make"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$MAKE_ARGS_FILE"\necho "stub make ran"\n')
    stub.chmod(0o755)
    return bin_dir


SEED_NODE = "kindest/node:v1.27.3@sha256:" + "a" * 64


@pytest.mark.parametrize("images, image, accepted", [
    ("", "", True), (f"seed={SEED_NODE}", SEED_NODE, True),
    (f"latest=kindest/node:v1.34.0, seed={SEED_NODE}", SEED_NODE, True),      # each profile takes its own
    ("latest=kindest/node:v1.34.0", "", True),                                # none for seed: its pinned one
    ("seed=kindest/node:v1;curl", "", False), ("seed=--help", "", False)])
def test_the_acceptance_step_runs_the_main_command_with_its_profiles_node_image(tmp_path, images, image, accepted):
    step = _step(NIGHTLY, "acceptance", "make acceptance --profile ${{ matrix.profile }}")
    args_file = tmp_path / "make-args"
    path = f"{_stub_make(tmp_path)}{os.pathsep}{os.environ['PATH']}"
    proc, _ = _run_step(step, tmp_path, PATH=path, MAKE_ARGS_FILE=str(args_file), PROFILE="seed", KIND_IMAGES=images,
                        OUT="kstack-out/seed")
    if not accepted:
        assert proc.returncode == 2 and "not an image reference for seed" in proc.stderr and not args_file.exists()
        return
    assert proc.returncode == 0, proc.stderr
    make_args = args_file.read_text().splitlines()
    assert make_args[0] == "acceptance"
    expected = ("ARGS=--profile seed --alluredir kstack-out/seed/allure-results --signoff-dir kstack-out/seed/signoff "
                "--keep-on-failure" + (f" --kind-image {image}" if image else ""))
    assert make_args[1] == expected
    assert "stub make ran" in (tmp_path / "kstack-out" / "seed" / "diagnostics" / "console.log").read_text()
