"""The kind code path end to end, without Docker: a fake Docker socket answers the preflight ping, a stub `kind`
(--kind-bin) records its commands and hands out the kubeconfig of an empty twin, and the twin's helm stand-in and
manifest mirror take the place of the network. So `--cluster kind` runs its real code: preflight, the kind config,
create-or-reuse through pytest-kind-ng, the install of the whole stack, the checks, and the cluster's deletion.
The twin labels its node as simulated, so even this run must be reported SIMULATED. The kind path is what these
runs prove, so they run a few checks (KIND_CHECKS), not the whole suite: the install is whole all the same."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from stack.profile import Profile
from tests.helpers import fake_docker_daemon, run_pytest

pytestmark = [pytest.mark.slow]
# Checks enough to see the installed stack through the kind cluster's kubeconfig; the suite's checks themselves are
# proven by the twin's own runs (tests/test_acceptance_twin.py).
KIND_CHECKS = "test_namespaces or test_crds"

STUB_KIND = r"""#!/usr/bin/env bash
# Stand-in for kind: records argv, keeps the cluster list in a state file, hands out the twin's kubeconfig.
set -euo pipefail
here="$(dirname "$0")"
echo "$*" >> "$here/kind.log"
touch "$here/clusters"
arg() { for a in "$@"; do case "$a" in --$KEY=*) echo "${a#--$KEY=}";; esac; done; }
case "$1 ${2:-}" in
  "get clusters") cat "$here/clusters" ;;
  "get nodes") KEY=name name=$(arg "$@"); echo "$name-control-plane" ;;
  "create cluster") KEY=name name=$(arg "$@"); KEY=kubeconfig kc=$(arg "$@")
      prev=""; for a in "$@"; do [ "$prev" = "--config" ] && cp "$a" "$here/kind-config.yaml"; prev="$a"; done
      sed "s/: twin$/: kind-$name/" \
        "$here/twin.kubeconfig" > "$kc"
      echo "$name" >> "$here/clusters" ;;
  "export kubeconfig") KEY=name name=$(arg "$@"); KEY=kubeconfig kc=$(arg "$@")
      sed "s/: twin$/: kind-$name/" \
        "$here/twin.kubeconfig" > "$kc" ;;
  "delete cluster") KEY=name name=$(arg "$@"); grep -vx "$name" "$here/clusters" > "$here/clusters.new" || true
      mv "$here/clusters.new" "$here/clusters" ;;
  *) echo "stub kind: unsupported: $*" >&2; exit 1 ;;
esac
"""


def node_container(profile: Profile, name: str) -> dict:
    """`docker inspect NAME-control-plane` of a node kind created with this profile's kind config."""
    port = profile.kind["ingress_node_port"]
    return {"Name": f"/{name}-control-plane", "Config": {"Image": profile.kind["node_image"]},
            "HostConfig": {"PortBindings": {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}}


@pytest.fixture
def fake_docker(tmp_path):
    containers = {"kt-control-plane": node_container(Profile.load("seed"), "kt")}
    with fake_docker_daemon(tmp_path, containers=containers) as docker_host:
        yield docker_host


class KindWorld:
    """An empty twin behind a stub kind, a fake Docker daemon, and the twin's helm and download stand-ins."""

    def __init__(self, tmp_path: Path, docker_host: str, twin, profile: Profile):
        from twin.helm_stub import write_helm_shim
        from twin.manifest_mirror import write_mirror
        self.tmp, self.twin, self.profile = tmp_path, twin, profile
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.kind = self.bin / "kind"
        self.kind.write_text(STUB_KIND)
        self.kind.chmod(0o755)
        (self.bin / "twin.kubeconfig").write_text(Path(twin.kubeconfig_path).read_text())
        shim_dir = write_helm_shim(tmp_path / "helm").parent
        self.env = {"DOCKER_HOST": docker_host, "KSTACK_INGRESS_URL": twin.gateway_url,
                    "PATH": f"{shim_dir}:{os.environ['PATH']}",
                    "KSTACK_MANIFEST_MIRROR": write_mirror(profile, tmp_path / "mirror"),
                    "KSTACK_TWIN_PROFILE": str(profile.path), "KSTACK_CACHE_DIR": str(tmp_path / "cache"),
                    "KSTACK_HELM_LOG": str(tmp_path / "helm.jsonl")}

    def run(self, name: str, *args: str) -> tuple[dict, str]:
        results, out = self.tmp / f"results-{name}", self.tmp / f"out-{name}"
        proc = run_pytest("suites/acceptance", "--cluster", "kind", "--kind-bin", str(self.kind), "--cluster-name",
                          "kt", "--alluredir", str(results), "--signoff-dir", str(out), "-k", KIND_CHECKS, *args,
                          env=self.env, timeout=420)
        output = proc.stdout + proc.stderr
        assert (out / "signoff.json").exists(), output[-5000:]
        return json.loads((out / "signoff.json").read_text()), output

    def keep_cluster(self, name: str) -> None:
        """The stub kind lists `name` among its clusters, as after a run with --keep-cluster."""
        with (self.bin / "clusters").open("a") as clusters:
            clusters.write(f"{name}\n")

    def kind_log(self) -> list[str]:
        return (self.bin / "kind.log").read_text().splitlines()

    def helm_installs(self) -> list[str]:
        lines = [json.loads(x) for x in (self.tmp / "helm.jsonl").read_text().splitlines()]
        return [x["argv"][2] for x in lines if x["argv"][:2] == ["upgrade", "--install"]]


@pytest.fixture
def world(tmp_path, fake_docker):
    from twin import Twin
    profile = Profile.load("seed")
    with Twin(profile, preinstalled=False) as twin:
        yield KindWorld(tmp_path, fake_docker, twin, profile)


def passed(doc: dict) -> bool:
    """The checks that ran all passed (the rest deselected: INCOMPLETE, never PASS)."""
    return doc["verdict"] == "INCOMPLETE" and not doc["failures"] and \
        next(c["status"] for c in doc["criteria"] if c["id"] == "AC-CRDS") == "passed"


@pytest.mark.twin
def test_kind_path_creates_installs_verifies_deletes_and_reuses_a_kept_cluster_without_installing(world):
    """A kind cluster's life, as a user lives it: a run creates it with the profile's node image and port mapping,
    installs the stack and deletes the cluster at its end; a cluster kept from an earlier run (--keep-cluster) is
    reused by name, installs nothing, and is left as it was found (the suite deletes only what it created)."""
    doc, output = world.run("first")
    assert passed(doc), output[-5000:]
    assert doc["simulated"] is True and doc["cluster"]["provider"] == "kind"
    create = next(line for line in world.kind_log() if line.startswith("create cluster"))
    assert f"--image={world.profile.kind['node_image']}" in create and "--name=kt" in create and "--config" in create
    config = yaml.safe_load((world.bin / "kind-config.yaml").read_text())
    assert config["nodes"][0]["image"] == world.profile.kind["node_image"]
    assert config["nodes"][0]["extraPortMappings"][0]["containerPort"] == 31080
    assert world.helm_installs() == ["cert-manager", "istio-base", "istiod", "istio-ingressgateway"]
    assert any(line.startswith("delete cluster") and "--name=kt" in line for line in world.kind_log())

    world.keep_cluster("kt")          # as an earlier run with --keep-cluster leaves it (the stack still installed)
    doc, output = world.run("second")
    assert passed(doc), output[-5000:]
    log = world.kind_log()
    assert sum(line.startswith("create cluster") for line in log) == 1, log
    assert any(line.startswith("export kubeconfig") for line in log), log
    assert len(world.helm_installs()) == 4, "the rerun called helm again"
    assert "already at v1.13.0; skipping" in output
    assert sum(line.startswith("delete cluster") for line in world.kind_log()) == 1, "it deleted a kept cluster"


def test_a_missing_kind_binary_is_one_clear_error(tmp_path, fake_docker):
    helm_dir = tmp_path / "helm-bin"
    helm_dir.mkdir()
    (helm_dir / "helm").write_text("#!/bin/sh\necho v3.15.0\n")
    (helm_dir / "helm").chmod(0o755)
    proc = run_pytest("suites/acceptance", "--kind-bin", str(tmp_path / "no-kind"),
                      env={"DOCKER_HOST": fake_docker, "PATH": f"{helm_dir}:{os.environ['PATH']}"}, timeout=60)
    assert proc.returncode == 4
    assert "--kind-bin" in proc.stderr and "does not exist" in proc.stderr and "remedy:" in proc.stderr


def test_kind_without_helm_is_one_clear_error(tmp_path, fake_docker):
    python_only = tmp_path / "bin"
    python_only.mkdir()
    os.symlink(sys.executable, python_only / "python3")
    proc = run_pytest("suites/acceptance", env={"DOCKER_HOST": fake_docker, "PATH": str(python_only)}, timeout=60)
    assert proc.returncode == 4
    assert "`helm` not found on PATH" in proc.stderr and "helm.sh" in proc.stderr


def test_helm_4_is_refused_before_any_kind_command(tmp_path, fake_docker):
    """Preflight checks helm's version, so a helm 4 on PATH stops the run before a cluster exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").write_text("#!/bin/sh\n[ \"$1\" = version ] && echo v4.0.0+g0d6d3ed\nexit 0\n")
    (bin_dir / "helm").chmod(0o755)
    kind = bin_dir / "kind"
    kind.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'kind.log'}\nexit 1\n")
    kind.chmod(0o755)
    proc = run_pytest("suites/acceptance", "--kind-bin", str(kind),
                      env={"DOCKER_HOST": fake_docker, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "is helm v4.0.0+g0d6d3ed" in proc.stderr and "helm v3" in proc.stderr and "remedy:" in proc.stderr
    assert not (tmp_path / "kind.log").exists(), "kind ran before the helm check"
