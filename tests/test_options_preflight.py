"""Option handling, provider selection and each preflight message: one clear error with a remedy, at once."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import pytest
import yaml

from fixtures import preflight
from fixtures.kind import kind_config
from stack import provenance
from stack.profile import Profile
from tests.helpers import fake_docker_daemon, run_pytest

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_collect_only_lists_the_suites_without_a_cluster():
    out = run_pytest("suites/acceptance", "--collect-only", "-q", env=NO_DOCKER, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for area in ("test_readiness.py", "test_crds.py", "test_webhooks.py", "test_certificates.py", "test_inference.py"):
        assert area in out.stdout
    assert "test_workloads_ready[kserve]" in out.stdout


def test_unknown_profile_is_a_usage_error_listing_profiles():
    out = run_pytest("suites/acceptance", "--profile", "nope", env=NO_DOCKER, timeout=60)
    assert out.returncode == 4
    assert "unknown profile 'nope'; available profiles: latest, latest-standard, seed" in out.stderr


def test_malformed_profile_is_a_usage_error_naming_the_field(tmp_path):
    data = yaml.safe_load(Path("profiles/seed.yaml").read_text())
    data["budgets"]["install"] = -5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_pytest("suites/acceptance", "--profile", str(path), env=NO_DOCKER, timeout=60)
    assert out.returncode == 4
    assert "field 'budgets.install'" in out.stderr


def test_without_docker_the_default_run_stops_fast_with_one_message():
    started = time.monotonic()
    out = run_pytest("suites/acceptance", env=NO_DOCKER, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == 4, out.stdout + out.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s"
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, out.stderr
    assert "Docker daemon unreachable" in out.stderr
    assert "--cluster existing --kubeconfig" in out.stderr and "make acceptance-twin" in out.stderr
    assert "passed" not in out.stdout and "failed" not in out.stdout


def test_twin_fault_needs_the_twin():
    out = run_pytest("suites/acceptance", "--twin-fault", "cert-stuck", env=NO_DOCKER, timeout=60)
    assert out.returncode == 4 and "--twin-fault only applies to --cluster twin" in out.stderr


@pytest.mark.parametrize("args,message", [
    (("--cert-window-days", "-1"), "--cert-window-days must be zero or more days, got -1.0"),
    (("--prometheus-url", "prometheus:9090"), "--prometheus-url must be an http:// or https:// URL"),
    (("--verifier-subject", "alice"), "--verifier-subject: 'alice' is not User:NAME or ServiceAccount:NAMESPACE/NAME"),
    (("--require", "AC-CRDS"), "--require AC-CRDS: profile"),                  # not optional: always required
    (("--require", "AC-MONITORS"), "requires AC-MONITORS but declares no monitors"),
])
def test_a_bad_security_or_monitoring_option_is_one_clear_error(args, message):
    out = run_pytest("suites/acceptance", *args, env=NO_DOCKER, timeout=60)
    assert out.returncode == 4 and message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_context_needs_an_existing_cluster():
    out = run_pytest("suites/acceptance", "--context", "prod", env=NO_DOCKER, timeout=60)
    assert out.returncode == 4 and "add --cluster existing" in out.stderr


def test_existing_cluster_with_a_missing_kubeconfig(tmp_path):
    out = run_pytest("suites/acceptance", "--cluster", "existing", "--kubeconfig", str(tmp_path / "none"), timeout=60)
    assert out.returncode == 4
    assert "kubeconfig" in out.stderr and "not found" in out.stderr and "remedy:" in out.stderr


# -- preflight units ---------------------------------------------------------------------------------------------------
def test_docker_check_names_docker_and_the_alternatives():
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_docker(NO_DOCKER)
    assert "Docker daemon unreachable" in e.value.problem
    assert "make acceptance-twin" in e.value.remedy


def test_docker_check_passes_when_the_daemon_answers(tmp_path):
    with fake_docker_daemon(tmp_path) as docker_host:
        assert preflight.docker_reachable({"DOCKER_HOST": docker_host}) is None


def test_missing_helm_is_found_through_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_helm_if_needed(Profile.load("seed"), "auto")
    assert "`helm` not found on PATH" in str(e.value) and "helm.sh" in e.value.remedy
    preflight.check_helm_if_needed(Profile.load("seed"), "never")   # nothing to install: helm not needed


def stub_helm(directory: Path, version_line: str, exit_code: int = 0) -> Path:
    """A `helm` that answers `helm version --short` with version_line (what helm 3 and helm 4 print)."""
    helm = directory / "helm"
    helm.write_text(f"#!/bin/sh\n[ \"$1\" = version ] && echo '{version_line}'\nexit {exit_code}\n")
    helm.chmod(0o755)
    return helm


def test_helm_found_through_path(tmp_path, monkeypatch):
    stub_helm(tmp_path, "v3.15.4+gfa9efb0")
    monkeypatch.setenv("PATH", str(tmp_path))
    preflight.check_helm_if_needed(Profile.load("seed"), "auto")


@pytest.mark.parametrize("version_line", ["v4.0.0+g0d6d3ed", "v2.17.0+ga690bad", ""])
def test_helm_other_than_v3_is_one_clear_error_at_preflight(tmp_path, monkeypatch, version_line):
    stub_helm(tmp_path, version_line)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_helm_if_needed(Profile.load("seed"), "auto")
    assert f"{tmp_path / 'helm'} is helm {version_line or '(unknown version)'}" in e.value.problem
    assert "helm v3" in e.value.problem
    assert "helm.sh" in e.value.remedy and "v3" in e.value.remedy and "PATH" in e.value.remedy
    assert "brew install helm@3" in e.value.remedy      # Homebrew's `helm` is v4: a laptop's first helm


def test_a_helm_that_fails_to_report_its_version_is_one_clear_error(tmp_path, monkeypatch):
    stub_helm(tmp_path, "Error: unknown flag", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(preflight.PreflightError, match="helm version --short"):
        preflight.check_helm_if_needed(Profile.load("seed"), "auto")


def test_an_unreachable_api_server_is_one_message_with_its_cause(tmp_path):
    """A closed port: the suite's own retries are logged, urllib3 retries nothing under them, and the error says the
    cause once (not urllib3's "Max retries exceeded ... Caused by ...")."""
    import socket
    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                                    "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                                    "users": [{"name": "u", "user": {"token": "t"}}],
                                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    out = run_pytest("suites/acceptance", "--cluster", "existing", "--kubeconfig", str(path), "--alluredir",
                     str(tmp_path / "r"), "--signoff-dir", str(tmp_path / "o"), timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 4, text
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: preflight failed: API server unreachable at https://127.0.0.1:{port}: "
                      "[Errno 111] Connection refused"], text
    assert "urllib3.connectionpool" not in text and "Max retries exceeded" not in errors[0]


def test_kubeconfig_with_unknown_context(tmp_path):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "a",
                                    "contexts": [{"name": "a", "context": {"cluster": "a", "user": "a"}}],
                                    "clusters": [], "users": []}))
    assert preflight.check_kubeconfig(str(path), None) == (path, "a")
    with pytest.raises(preflight.PreflightError, match="context 'b' is not in kubeconfig"):
        preflight.check_kubeconfig(str(path), "b")


def test_unreadable_kubeconfig(tmp_path):
    path = tmp_path / "config"
    path.write_text("{not yaml: [")
    with pytest.raises(preflight.PreflightError, match="cannot be read"):
        preflight.check_kubeconfig(str(path), None)


class _FakeKube:
    def __init__(self, minor=None, error=None):
        self.minor, self.error = minor, error

    def server_version(self):
        if self.error:
            raise self.error
        return {"major": "1", "minor": self.minor, "git_version": f"v1.{self.minor}.0"}


def test_api_unreachable_is_one_error():
    from stack.kube import ApiUnreachable
    with pytest.raises(preflight.PreflightError, match="API server unreachable"):
        preflight.check_api(_FakeKube(error=ApiUnreachable("https://10.0.0.1:6443", "connection refused")),
                            Profile.load("seed"))


def test_inside_the_tested_range_there_is_no_finding():
    version, finding = preflight.check_api(_FakeKube("27+"), Profile.load("seed"))
    assert version["minor"] == "27+" and finding is None


def test_a_cluster_outside_the_tested_range_is_verified_all_the_same_with_a_finding(capsys):
    """A cluster built in July 2025 runs 1.29-1.33, the seed profile's stack was tested on 1.25-1.27: no refusal."""
    version, finding = preflight.check_api(_FakeKube("31"), Profile.load("seed"))
    assert version["git_version"] == "v1.31.0"
    assert (finding.server_version, finding.tested_range, finding.profile) == ("v1.31.0", "1.25-1.27", "seed")
    assert set(finding.statements) == {"cert-manager", "istio", "knative", "kserve"}
    assert "1.25 to 1.28" in finding.statements["istio"]
    assert "outside profile 'seed''s tested range 1.25-1.27: verifying it all the same" in capsys.readouterr().out


def test_the_minor_is_read_from_any_git_version():
    assert [preflight.minor_of(v) for v in ("v1.34.4", "v1.27.9-eks-5e0fdde", "v1.29.3+k3s1", "", "v2")] == \
        [34, 27, 29, 0, 0]


def test_outside_tested_range_fail_stops_before_any_check():
    with pytest.raises(preflight.PreflightError, match="Kubernetes v1.31.0 is outside profile 'seed''s tested range "
                       "1.25-1.27") as e:
        preflight.check_api(_FakeKube("31"), Profile.load("seed"), outside="fail")
    assert "drop --outside-tested-range fail" in e.value.remedy


def test_kind_config_maps_the_gateway_node_port():
    config = kind_config(Profile.load("seed"), "kindest/node:v1.27.3@sha256:" + "0" * 64)
    mapping = config["nodes"][0]["extraPortMappings"][0]
    assert mapping == {"containerPort": 31080, "hostPort": 31080, "listenAddress": "127.0.0.1", "protocol": "TCP"}


def test_kind_binary_is_pinned_per_profile_not_the_plugins_default():
    import pytest_kind.cluster as plugin_cluster
    assert plugin_cluster.KIND_VERSION == "v0.17.0"     # why we pin our own
    assert Profile.load("seed").kind["version"] == "v0.20.0"
    assert Profile.load("latest").kind["version"] != "v0.17.0"


def test_a_run_stopped_at_preflight_leaves_no_stale_verdict_but_an_error_signoff(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "signoff.json").write_text('{"verdict": "PASS"}')
    (out_dir / "results-bundle.tar.gz").write_bytes(b"old")
    (out_dir / "notes.txt").write_text("the user's own file")
    out = run_pytest("suites/acceptance", "--profile", "nope", "--signoff-dir", str(out_dir), env=NO_DOCKER,
                     timeout=60)
    assert out.returncode == 4
    import json
    doc = json.loads((out_dir / "signoff.json").read_text())
    assert doc["verdict"] == "ERROR"
    assert doc["verdict_reasons"] == ["the run stopped before any check ran: bad options: profile: unknown profile 'nope'; "
                                      "available profiles: latest, latest-standard, seed"]
    md = (out_dir / "signoff.md").read_text()
    assert "# KServe stack sign-off: ERROR" in md
    assert (out_dir / "notes.txt").read_text() == "the user's own file"      # only the sign-off's own files go
    assert doc["profile"] is None and doc["suite"]["version"] == provenance.suite_version()   # what it knew
    assert "Python unknown" not in md and "kstack unknown" not in md


def test_a_run_without_docker_writes_an_error_signoff_naming_the_preflight(tmp_path):
    out = run_pytest("suites/acceptance", "--signoff-dir", str(tmp_path / "out"), env=NO_DOCKER, timeout=60)
    assert out.returncode == 4
    import json
    doc = json.loads((tmp_path / "out" / "signoff.json").read_text())
    assert doc["verdict"] == "ERROR" and "preflight failed: " in doc["verdict_reasons"][0]
    assert "Docker daemon unreachable" in doc["verdict_reasons"][0]
    # What the run knew before it touched a cluster: the profile it loaded, the provider, the suite, the runner.
    assert doc["profile"] == "seed" and doc["versions"]["kserve"] == "v0.11.0"
    assert doc["cluster"]["provider"] == "kind" and doc["simulated"] is False
    assert doc["suite"]["python"] == platform.python_version() and doc["suite"]["version"] == provenance.suite_version()
    assert doc["runner"]["hostname"] != "unknown"
    md = (tmp_path / "out" / "signoff.md").read_text()
    assert "- **Profile:** seed" in md and "kstack unknown" not in md and "Python unknown" not in md
    assert "| kserve | v0.11.0 | not read (the run stopped before) | unknown |" in md
