"""The twin's install sources: KServe's release files rendered from the module's source equal the released ones."""
from __future__ import annotations

import json

import pytest

from stack.profile import Profile
from twin import toolchain, upstream

KSERVE_011 = "https://github.com/kserve/kserve/releases/download/v0.11.0"


def test_only_the_first_latest_of_a_line_is_tagged_as_011s_sed_does():
    once = upstream.RENDERED[f"{KSERVE_011}/kserve.yaml"]
    every = upstream.RENDERED["https://github.com/kserve/kserve/releases/download/v0.20.0/kserve.yaml"]
    text = "image: a:latest b:latest\nc:latest"
    assert once.image_tags(text) == "image: a:v0.11.0 b:latest\nc:v0.11.0"
    assert every.image_tags(text) == "image: a:v0.20.0 b:v0.20.0\nc:v0.20.0"


def _by_key(docs: list[dict]) -> dict[tuple, str]:
    return {upstream._key(d): json.dumps(d, sort_keys=True) for d in docs}


@pytest.mark.parametrize("file", ["kserve.yaml", "kserve-runtimes.yaml"])
def test_kserve_011_rendered_from_its_module_equals_the_released_file(file, monkeypatch):
    builds = toolchain.load_builds()
    if toolchain.built(builds["kserve-v0.11.0"]) is None or toolchain.built(builds["kustomize"]) is None:
        pytest.skip("the twin's toolchain is not built (make controlplane)")
    copies = upstream._load(upstream.FILES[f"{KSERVE_011}/{file}"])
    if copies is None:
        pytest.skip("no upstream copy of KServe v0.11.0 at hand (../shared/upstream, only in the team workspace)")
    rendered = upstream._render(f"{KSERVE_011}/{file}")
    assert rendered, "nothing rendered"
    mine, released = _by_key(rendered), _by_key(copies)
    assert sorted(mine) == sorted(released)
    assert [k for k in mine if mine[k] != released[k]] == []


def test_without_copies_the_seed_profiles_kserve_files_are_upstreams_rendered(monkeypatch, tmp_path):
    builds = toolchain.load_builds()
    if toolchain.built(builds["kserve-v0.11.0"]) is None or toolchain.built(builds["kustomize"]) is None:
        pytest.skip("the twin's toolchain is not built (make controlplane)")
    monkeypatch.setenv("KSTACK_TWIN_UPSTREAM", str(tmp_path / "absent"))
    files, sources = upstream.manifest_files(Profile.load("seed"), "kserve")
    assert [(s.upstream, s.detail.split(" config/")[0]) for s in sources] == \
        [(True, "rendered from github.com/kserve/kserve@v0.11.0")] * 2
    deployments = [o["metadata"]["name"] for objs in files.values() for o in objs if o["kind"] == "Deployment"]
    assert deployments == ["kserve-controller-manager"]


KSERVE_020 = "https://github.com/kserve/kserve/releases/download/v0.20.0"


def test_kserve_020_cluster_resources_rendered_from_its_module_equal_the_released_file():
    """The ServingRuntimes a user's clone (no copies at hand) installs on the twin are upstream's, securityContext
    included (AC-POD-SECURITY reads it), not objects synthesised from the profile."""
    builds = toolchain.load_builds()
    if toolchain.built(builds["kserve-v0.20.0"]) is None or toolchain.built(builds["kustomize"]) is None:
        pytest.skip("the twin's toolchain is not built (make controlplane)")
    rendered = upstream._render(f"{KSERVE_020}/kserve-cluster-resources.yaml")
    assert rendered, "nothing rendered"
    sklearn = next(o for o in rendered if o["kind"] == "ClusterServingRuntime" and o["metadata"]["name"] ==
                   "kserve-sklearnserver")
    assert sklearn["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True
    copies = upstream._load(upstream.FILES[f"{KSERVE_020}/kserve-cluster-resources.yaml"])
    if copies is None:
        pytest.skip("no upstream copy of KServe v0.20.0 at hand (../shared/upstream, only in the team workspace)")
    mine, released = _by_key(rendered), _by_key(copies)
    assert sorted(mine) == sorted(released)
    assert [k for k in mine if mine[k] != released[k]] == []
