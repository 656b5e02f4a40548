"""Docker preflight for --cluster kind: the daemon is found the way the docker CLI finds it (DOCKER_HOST, DOCKER_CONTEXT,
the config's currentContext and its meta.json, the default socket, Docker Desktop's socket), its CPUs and memory are
compared with what the profile's workloads request, and a reused kind cluster must match the profile's node image and
gateway port mapping. All against a fake Docker daemon on a unix socket."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from fixtures import docker_api, preflight
from fixtures import kind as kind_mod
from stack.profile import Profile
from stack.resources import stack_requests
from tests.helpers import ROOMY_DOCKER_HOST, fake_docker_daemon, run_pytest

GiB = 1024 ** 3


def write_context(docker_dir: Path, name: str, host: str) -> Path:
    """What `docker context create NAME --docker host=HOST` writes (cli/context/store: meta/<sha256(name)>/meta.json)."""
    meta = docker_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": name, "Metadata": {"Description": ""},
                                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}))
    return meta


def use_context(docker_dir: Path, name: str) -> None:
    """What `docker context use NAME` writes into config.json."""
    docker_dir.mkdir(parents=True, exist_ok=True)
    (docker_dir / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_api, "DEFAULT_SOCKET", str(tmp_path / "no-var-run" / "docker.sock"))
    return tmp_path / "home"


# -- finding the daemon like the docker CLI (cli/command/cli.go resolveContextName) ----------------------------------
def test_docker_host_wins_over_any_context(home):
    use_context(home / ".docker", "remote")
    write_context(home / ".docker", "remote", "tcp://10.0.0.9:2375")
    ep = docker_api.resolve_endpoint({"HOME": str(home), "DOCKER_HOST": "unix:///run/other.sock"})
    assert (ep.host, ep.source) == ("unix:///run/other.sock", "DOCKER_HOST")


def test_the_config_files_current_context_and_its_meta_json(home):
    use_context(home / ".docker", "colima")
    meta = write_context(home / ".docker", "colima", "unix:///home/u/.colima/default/docker.sock")
    ep = docker_api.resolve_endpoint({"HOME": str(home)})
    assert ep.host == "unix:///home/u/.colima/default/docker.sock"
    assert ep.source == f"docker context 'colima' ({meta})"


def test_docker_context_env_and_docker_config_dir(home, tmp_path):
    config_dir = tmp_path / "elsewhere"
    use_context(config_dir, "ignored")
    write_context(config_dir, "ci", "tcp://127.0.0.1:2375")
    ep = docker_api.resolve_endpoint({"HOME": str(home), "DOCKER_CONFIG": str(config_dir), "DOCKER_CONTEXT": "ci"})
    assert ep.host == "tcp://127.0.0.1:2375" and "'ci'" in ep.source


def test_a_current_context_that_does_not_exist_is_one_clear_error(home):
    use_context(home / ".docker", "gone")
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_docker({"HOME": str(home)})
    assert "docker context 'gone'" in e.value.problem and "meta.json" in e.value.problem
    assert "docker context use default" in e.value.remedy


def test_default_and_docker_desktop_sockets(home, tmp_path):
    ep = docker_api.resolve_endpoint({"HOME": str(home)})
    assert ep.host == f"unix://{docker_api.DEFAULT_SOCKET}" and ep.source == "the default socket" and not ep.export
    (home / ".docker" / "run").mkdir(parents=True)
    with fake_docker_daemon(home / ".docker" / "run") as desktop:
        ep = docker_api.resolve_endpoint({"HOME": str(home)})
        assert ep.host == desktop and ep.source == "Docker Desktop's socket" and ep.export
        assert preflight.check_docker({"HOME": str(home)}).host == desktop


def test_preflight_pings_the_daemon_of_the_current_context(home, tmp_path):
    """Docker Desktop on Linux and Colima set a context; the default socket does not exist there."""
    with fake_docker_daemon(tmp_path, name="desktop.sock") as host:
        use_context(home / ".docker", "desktop-linux")
        write_context(home / ".docker", "desktop-linux", host)
        assert preflight.docker_reachable({"HOME": str(home)}) is None
        assert preflight.check_docker({"HOME": str(home)}).host == host


def test_an_unreachable_daemon_names_the_endpoint_and_where_it_came_from(home):
    use_context(home / ".docker", "colima")
    write_context(home / ".docker", "colima", f"unix://{home}/missing.sock")
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_docker({"HOME": str(home)})
    assert f"unix://{home}/missing.sock" in e.value.problem and "docker context 'colima'" in e.value.problem


# -- the Docker host's CPUs and memory against the profile's requests ---------------------------------------------------
def test_the_profiles_requests_are_summed_from_profile_data():
    seed = stack_requests(Profile.load("seed"))
    # kind node 950m + istio 300m + knative 650m + kserve 100m + the Iris pod (storage-initializer's 100m) = 2100m
    assert seed.cpu_millis == 2100
    assert seed.memory_bytes == (290 + 328 + 420 + 200 + 128) * 1024 ** 2
    assert {name for name, _, _ in seed.parts} == {"kind node", "cert-manager", "istio", "knative", "kserve",
                                                   "iris pod"}
    assert stack_requests(Profile.load("latest-standard")).cpu_millis < stack_requests(Profile.load("latest")).cpu_millis


def test_a_docker_host_with_too_few_cpus_is_one_clear_error_with_the_numbers(tmp_path):
    with fake_docker_daemon(tmp_path, info=dict(ROOMY_DOCKER_HOST, NCPU=2)) as host:
        endpoint = preflight.check_docker({"DOCKER_HOST": host})
        with pytest.raises(preflight.PreflightError) as e:
            preflight.check_docker_resources(Profile.load("seed"), endpoint)
    assert "2 CPUs" in e.value.problem and "2.1 CPUs" in e.value.problem and "profile 'seed'" in e.value.problem
    assert "at least 3 CPUs" in e.value.remedy


def test_a_docker_host_with_too_little_memory_is_one_clear_error(tmp_path):
    with fake_docker_daemon(tmp_path, info=dict(ROOMY_DOCKER_HOST, MemTotal=1 * GiB)) as host, \
            pytest.raises(preflight.PreflightError, match=r"1\.0 GiB of memory.*requests 1\.3 GiB"):
        preflight.check_docker_resources(Profile.load("seed"), preflight.check_docker({"DOCKER_HOST": host}))


def test_a_tight_docker_host_is_a_warning_with_the_numbers(tmp_path):
    with fake_docker_daemon(tmp_path, info=dict(ROOMY_DOCKER_HOST, NCPU=3, MemTotal=int(1.5 * GiB))) as host:
        warning = preflight.check_docker_resources(Profile.load("seed"), preflight.check_docker({"DOCKER_HOST": host}))
    assert warning and "1.5 GiB" in warning and "1.3 GiB" in warning
    with fake_docker_daemon(tmp_path, info=ROOMY_DOCKER_HOST, name="roomy.sock") as host:
        assert preflight.check_docker_resources(Profile.load("seed"),
                                                preflight.check_docker({"DOCKER_HOST": host})) is None


@pytest.mark.slow
def test_a_two_cpu_docker_host_stops_the_run_before_kind_is_called(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").write_text("#!/bin/sh\n[ \"$1\" = version ] && echo v3.15.4+gfa9efb0\nexit 0\n")
    kind = bin_dir / "kind"
    kind.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'kind.log'}\nexit 1\n")
    for f in (bin_dir / "helm", kind):
        f.chmod(0o755)
    with fake_docker_daemon(tmp_path, info=dict(ROOMY_DOCKER_HOST, NCPU=2)) as host:
        proc = run_pytest("suites/acceptance", "--kind-bin", str(kind),
                          env={"DOCKER_HOST": host, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")] == [
        "ERROR: preflight failed: the Docker host has 2 CPUs; profile 'seed' requests 2.1 CPUs (kind node 0.95, "
        "cert-manager 0, istio 0.3, knative 0.65, kserve 0.1, iris pod 0.1): the Iris pod would stay Pending."]
    assert not (tmp_path / "kind.log").exists()


# -- a reused kind cluster ---------------------------------------------------------------------------------------------
STUB_KIND = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/kind.log"
case "$1 $2" in
  "get clusters") echo kt ;;
  "get nodes") echo kt-control-plane ;;
  "export kubeconfig") for a in "$@"; do case "$a" in --kubeconfig=*) kc="${a#--kubeconfig=}";; esac; done
      { printf 'apiVersion: v1\nkind: Config\ncurrent-context: kind-kt\n'
        printf 'clusters: [{name: kind-kt, cluster: {server: "https://127.0.0.1:6443"}}]\n'
        printf 'contexts: [{name: kind-kt, context: {cluster: kind-kt, user: kind-kt}}]\n'
        printf 'users: [{name: kind-kt, user: {}}]\n'; } > "$kc" ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


def node_container(image: str, host_port: int = 31080, container_port: int = 31080, ip: str = "127.0.0.1") -> dict:
    """The parts of `docker inspect kt-control-plane` the check reads (kind runs `docker run --publish=...  IMAGE`)."""
    return {"Name": "/kt-control-plane", "Config": {"Image": image},
            "HostConfig": {"PortBindings": {f"{container_port}/tcp": [{"HostIp": ip, "HostPort": str(host_port)}],
                                            "6443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]}}}


@pytest.fixture
def reuse(tmp_path):
    kind = tmp_path / "kind"
    kind.write_text(STUB_KIND)
    kind.chmod(0o755)
    profile = Profile.load("seed")
    containers: dict = {}
    with fake_docker_daemon(tmp_path, containers=containers) as host:
        endpoint = docker_api.resolve_endpoint({"DOCKER_HOST": host})

        def check():
            return kind_mod.create_or_reuse(profile, "kt", kind, profile.kind["node_image"], tmp_path / "work",
                                            docker=endpoint)
        yield profile, containers, check, tmp_path / "kind.log"


@pytest.mark.parametrize("container, wanted", [
    (dict(image="kindest/node:v1.26.6@sha256:" + "6" * 64), "node image kindest/node:v1.26.6@sha256:666"),
    (dict(host_port=8080), "containerPort 31080 on 127.0.0.1:31080"),
    (dict(container_port=30080), "containerPort 31080 on 127.0.0.1:31080"),
])
def test_a_reused_cluster_that_differs_from_the_profile_is_one_clear_error(reuse, container, wanted):
    profile, containers, check, log = reuse
    containers["kt-control-plane"] = node_container(**{"image": profile.kind["node_image"], **container})
    with pytest.raises(preflight.PreflightError) as e:
        check()
    assert "kind cluster 'kt' exists but was not created for profile 'seed'" in e.value.problem
    assert wanted in e.value.problem
    assert "kind delete cluster --name kt" in e.value.remedy and "--cluster-name" in e.value.remedy
    assert not any(line.startswith("create") or line.startswith("delete") for line in log.read_text().splitlines())


def test_a_reused_cluster_that_matches_the_profile_is_reused(reuse):
    profile, containers, check, log = reuse
    containers["kt-control-plane"] = node_container(profile.kind["node_image"])
    cluster, created = check()
    assert not created and cluster.name == "kt"
