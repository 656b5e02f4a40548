"""The twin's binaries are built from pinned upstream modules: the wrapper module's replaces come from upstream."""
from __future__ import annotations

import json
import os
import stat

import pytest

from twin import toolchain

K8S_GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
\tgithub.com/spf13/cobra v1.9.1
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // the staging copy
)
"""

ETCD_GO_MOD = """module go.etcd.io/etcd/server/v3

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/client/v3 => ../client/v3
)

// Bad imports are sometimes causing attempts to pull that code.
replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY

replace github.com/example/fork => github.com/example/fork v1.2.3
"""


def test_kubernetes_staging_modules_are_replaced_by_their_published_versions():
    build = toolchain.load_builds()["kubernetes"]
    assert build.relative_replace_version == "v0.{minor}.{patch}"
    custom = toolchain.Build("k", "k8s.io/kubernetes", "v1.34.4", ("cmd/kube-apiserver",),
                             relative_replace_version="v0.{minor}.{patch}")
    assert custom.replace_lines(K8S_GO_MOD) == ["k8s.io/api => k8s.io/api v0.34.4",
                                                "k8s.io/client-go => k8s.io/client-go v0.34.4"]


def test_etcd_siblings_get_the_same_version_and_guards_are_dropped():
    build = toolchain.Build("etcd", "go.etcd.io/etcd/server/v3", "v3.6.5", (".",), binaries={".": "etcd"},
                            relative_replace_version="{version}")
    assert build.replace_lines(ETCD_GO_MOD) == [
        "go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.5",
        "go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v3.6.5",
        "github.com/example/fork => github.com/example/fork v1.2.3"]
    assert build.binary_names == ["etcd"] and build.import_path(".") == "go.etcd.io/etcd/server/v3"


def test_a_relative_replace_without_a_rule_is_one_clear_error():
    build = toolchain.Build("x", "k8s.io/kubernetes", "v1.34.4", ("cmd/kube-apiserver",))
    with pytest.raises(toolchain.ToolchainError, match="relative_replace_version"):
        build.replace_lines(K8S_GO_MOD)


def test_the_real_kubernetes_go_mod_yields_every_staging_module():
    """Against the go.mod the proxy served (present once `make controlplane` ran): no staging module is missed."""
    gomodcache = os.environ.get("GOMODCACHE") or os.path.expanduser("~/go/pkg/mod")
    build = toolchain.load_builds()["kubernetes"]
    path = os.path.join(gomodcache, "cache", "download", "k8s.io", "kubernetes", "@v", f"{build.version}.mod")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is not downloaded (run `make controlplane`)")
    text = open(path).read()
    lines = build.replace_lines(text)
    staging = [ln for ln in text.splitlines() if "=> ./staging/" in ln]
    assert len(lines) == len(staging) >= 25
    minor = build.version.split(".")[1]
    assert all(ln.endswith(f" v0.{minor}.{build.version.split('.')[2]}") for ln in lines)


def test_version_ldflags_make_the_binaries_report_the_real_version():
    flags = toolchain.load_builds()["kubernetes"].ldflag_string()
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "-X k8s.io/component-base/version.gitMinor=34" in flags


def test_a_missing_build_names_make_controlplane(tmp_path):
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.binaries(root=tmp_path)
    assert "make controlplane" in str(err.value) and "kubernetes v1.34.4" in str(err.value)


def test_a_cached_build_is_found_and_a_half_written_one_is_not(tmp_path):
    spec = toolchain.Build("demo", "example.com/demo", "v1.0.0", ("cmd/demo",))
    target = tmp_path / spec.key
    (target / "bin").mkdir(parents=True)
    binary = target / "bin" / "demo"
    record = {"build": "demo", "module": spec.module, "version": spec.version, "go_version": "go1.26",
              "seconds": 1.0, "binaries": {"demo": str(binary)}, "data": {}}
    (target / "build.json").write_text(json.dumps(record))
    assert toolchain.built(spec, tmp_path) is None        # the binary is not there
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert toolchain.built(spec, tmp_path).binaries == {"demo": str(binary)}


def test_no_go_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = toolchain.Build("demo", "example.com/demo", "v1.0.0", ("cmd/demo",))
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.build(spec, root=tmp_path, log=lambda m: None)
    assert "Go is not on PATH" in str(err.value) and "remedy" in str(err.value)


def test_a_long_go_step_logs_progress_while_it_runs_and_stops_when_it_ends(monkeypatch):
    import threading
    import time

    monkeypatch.setattr(toolchain, "PROGRESS_EVERY", 0.01)
    lines: list[str] = []
    two = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        if len(lines) >= 2:
            two.set()

    with toolchain._progress(log, lambda seconds: f"still resolving, {seconds:.2f}s"):
        assert two.wait(5), "no progress line while the step ran"
    after = len(lines)
    time.sleep(0.1)                                   # ten periods: a ticker still running would log again
    assert len(lines) <= after + 1                    # at most the one line already under way
    assert all(line.startswith("still resolving, ") for line in lines)
