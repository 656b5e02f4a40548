"""Installer logic that needs no cluster: versions, image rewrites, mirrors, parsing, downloads, helm commands."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from installers import helm, manifests
from installers.context import InstallContext, InstallError
from stack.versions import image_tag, normalise_version, same_version
from installers.plan import Plan
from stack.profile import Profile
from stack.retry import RetryLog

PROFILES = ["seed", "latest", "latest-standard"]


class FakeKube:
    """Only what the code under test touches without a cluster."""

    def __init__(self, deployments: dict | None = None):
        self.kubeconfig, self.context = "/tmp/kubeconfig", "ctx"
        self.retries = RetryLog()
        self.deployments = deployments or {}
        self.writes = 0

    def get(self, api_version, kind, name, namespace=None):
        return self.deployments.get((namespace, name)) if kind == "Deployment" else None

    def apply(self, obj, **kw):
        self.writes += 1
        raise AssertionError("no writes expected")


def ctx_for(profile="seed", kube=None, **kw) -> InstallContext:
    kw.setdefault("progress", lambda m: None)
    return InstallContext(kube=kube or FakeKube(), profile=Profile.load(profile), **kw)


def deployment(image=None, labels=None, container="manager"):
    return {"metadata": {"labels": labels or {}},
            "spec": {"template": {"spec": {"containers": [{"name": "kube-rbac-proxy", "image": "quay.io/x:v9"},
                                                          {"name": container, "image": image or ""}]}}}}


def test_versions_normalised():
    assert normalise_version("1.11.0") == "v1.11.0" == normalise_version("v1.11.0")
    assert same_version("1.19.0", "v1.19.0") and not same_version("v0.10.0", "v0.11.0") and not same_version(None, "v1")
    assert image_tag("kserve/kserve-controller:v0.11.0") == "v0.11.0"
    assert image_tag("localhost:5000/a/b:1.2@sha256:" + "a" * 64) == "1.2"
    assert image_tag("gcr.io/x/y@sha256:abc") == "@sha256:abc"
    assert image_tag("nginx") is None


def test_installed_version_from_container_tag_and_label():
    plan = Plan(ctx_for(kube=FakeKube({
        ("kserve", "kserve-controller-manager"): deployment("kserve/kserve-controller:v0.11.0"),
        ("knative-serving", "controller"): deployment(labels={"app.kubernetes.io/version": "1.11.0"}),
        ("istio-system", "istiod"): deployment("docker.io/istio/pilot:1.19.0", container="discovery"),
    })))
    assert plan.addon("kserve").installed_version(plan.ctx) == "v0.11.0"
    assert plan.addon("knative").installed_version(plan.ctx) == "v1.11.0"
    assert plan.addon("istio").installed_version(plan.ctx) == "v1.19.0"
    assert plan.addon("cert-manager").installed_version(plan.ctx) is None


def test_version_mismatch_in_auto_is_a_clear_error_before_any_write():
    kube = FakeKube({("kserve", "kserve-controller-manager"): deployment("kserve/kserve-controller:v0.10.0")})
    with pytest.raises(InstallError) as e:
        Plan(ctx_for(kube=kube)).install()
    assert str(e.value) == ("kserve v0.10.0 is running but the profile wants v0.11.0; "
                            "rerun with --install always to upgrade")
    assert kube.writes == 0


def test_bad_mode_rejected():
    with pytest.raises(InstallError, match="auto, always, never"):
        ctx_for(mode="sometimes")


@pytest.mark.parametrize("image,expected", [
    ("gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1", "mirror.local/quay/brancz/kube-rbac-proxy:v0.13.1"),  # exact, then registry
    ("quay.io/jetstack/cert-manager-controller:v1.13.0", "mirror.local/quay/jetstack/cert-manager-controller:v1.13.0"),
    ("kserve/kserve-controller:v0.11.0", "hub.local/kserve/kserve-controller:v0.11.0"),     # implicit docker.io
    ("docker.io/istio/pilot:1.19.0", "hub.local/istio/pilot:1.19.0"),
    ("nginx:1.25", "hub.local/library/nginx:1.25"),
    ("quay.iox/a/b:1", "quay.iox/a/b:1"),                                                     # registry boundary
    ("gcr.io/knative-releases/x@sha256:" + "1" * 64, "gcr.io/knative-releases/x@sha256:" + "1" * 64),
])
def test_rewrite_image(image, expected):
    exact = {"gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1": "quay.io/brancz/kube-rbac-proxy:v0.13.1"}
    regs = {"quay.io": "mirror.local/quay", "docker.io": "hub.local"}
    assert manifests.rewrite_image(image, exact, regs) == expected


def test_registry_overrides_env_merges_over_profile():
    ctx = ctx_for(env={"KSTACK_REGISTRY_OVERRIDES": "quay.io=mirror.local/quay, docker.io=hub.local/"})
    assert manifests.registry_overrides(ctx) == {"quay.io": "mirror.local/quay", "docker.io": "hub.local"}
    with pytest.raises(InstallError, match="REGISTRY=REPLACEMENT"):
        manifests.registry_overrides(ctx_for(env={"KSTACK_REGISTRY_OVERRIDES": "quay.io"}))


def test_rewrite_covers_workloads_init_containers_and_runtimes():
    objs = [
        {"kind": "Deployment", "spec": {"template": {"spec": {"initContainers": [{"image": "quay.io/a:1"}],
                                                               "containers": [{"image": "quay.io/b:1"}]}}}},
        {"kind": "DaemonSet", "spec": {"template": {"spec": {"containers": [{"image": "quay.io/c:1"}]}}}},
        {"kind": "StatefulSet", "spec": {"template": {"spec": {"containers": [{"image": "quay.io/d:1"}]}}}},
        {"kind": "Job", "spec": {"template": {"spec": {"containers": [{"image": "quay.io/e:1"}]}}}},
        {"kind": "ClusterServingRuntime", "spec": {"containers": [{"image": "quay.io/f:1"}]}},
        {"kind": "ServingRuntime", "spec": {"containers": [{"image": "quay.io/g:1"}]}},
        {"kind": "ConfigMap", "data": {"image": "quay.io/h:1"}},
    ]
    changed = sum(len(manifests.rewrite_images(o, {}, {"quay.io": "m"})) for o in objs)
    assert changed == 7
    assert objs[0]["spec"]["template"]["spec"]["initContainers"][0]["image"] == "m/a:1"
    assert objs[4]["spec"]["containers"][0]["image"] == "m/f:1"
    assert objs[6]["data"]["image"] == "quay.io/h:1"


def test_mirrored_url():
    url = "https://github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml"
    assert manifests.mirrored_url(url, None) == url
    assert manifests.mirrored_url(url, "file:///srv/mirror/") == \
        "file:///srv/mirror/github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml"
    assert manifests.mirrored_url(url, "https://m.local/base") == \
        "https://m.local/base/github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml"


def test_parse_documents_skips_empty_and_expands_lists():
    text = "---\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# comment only\n---\n" \
           "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n" \
           "- {apiVersion: v1, kind: Namespace, metadata: {name: c}}\n"
    objs = manifests.parse_documents(text)
    assert [o["metadata"]["name"] for o in objs] == ["a", "b", "c"]
    ns, crds, rest = manifests.split_objects(objs + [{"apiVersion": "apiextensions.k8s.io/v1",
                                                      "kind": "CustomResourceDefinition", "metadata": {"name": "x"}}])
    assert [o["metadata"]["name"] for o in ns] == ["c"] and len(crds) == 1 and len(rest) == 2


def _file_manifest(tmp_path: Path, content: bytes) -> str:
    src = tmp_path / "src" / "m.yaml"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    return src.as_uri()


def test_fetch_records_unpinned_sha_and_uses_cache(tmp_path):
    url = _file_manifest(tmp_path, b"kind: ConfigMap\n")
    ctx = ctx_for(cache_dir=tmp_path / "cache", env={})
    path, d = manifests.fetch(ctx, url)
    assert (d.sha256, d.pinned, d.cached) == (hashlib.sha256(b"kind: ConfigMap\n").hexdigest(), False, False)
    assert path.name == hashlib.sha256(url.encode()).hexdigest() + "-m.yaml"
    Path(url[len("file://"):]).unlink()           # the source is gone: the second use must come from the cache
    path2, d2 = manifests.fetch(ctx, url)
    assert path2 == path and d2.cached and ctx.fetches == [url]
    assert [(x.url, x.sha256, x.pinned) for x in ctx.downloads] == [(url, d.sha256, False)]


def test_fetch_pinned_mismatch_fails_and_deletes_cached_file(tmp_path):
    url = _file_manifest(tmp_path, b"kind: ConfigMap\n")
    ctx = ctx_for(cache_dir=tmp_path / "cache", env={})
    actual = hashlib.sha256(b"kind: ConfigMap\n").hexdigest()
    with pytest.raises(InstallError) as e:
        manifests.fetch(ctx, url, "0" * 64)
    assert f"expected {'0' * 64}, got {actual}" in str(e.value) and url in str(e.value)
    assert not list((tmp_path / "cache").glob("*m.yaml"))
    path, d = manifests.fetch(ctx, url, actual)
    assert d.pinned and path.is_file()


def test_cache_dir_from_env(tmp_path):
    assert ctx_for(env={"KSTACK_CACHE_DIR": str(tmp_path)}).cache_dir == tmp_path
    assert ctx_for(env={}).cache_dir == Path("~/.cache/kstack/manifests").expanduser()


def test_missing_helm_is_one_clear_error(tmp_path):
    helm.reset_version_check()
    ctx = ctx_for("seed", env={"PATH": str(tmp_path)})
    with pytest.raises(InstallError) as e:
        helm.find_helm(ctx)
    assert "helm is not installed" in str(e.value) and "https://helm.sh/docs/intro/install/" in str(e.value)
    assert "helm v3" in str(e.value)


@pytest.mark.parametrize("name", PROFILES)
def test_helm_commands_follow_the_profile(name):
    ctx = ctx_for(name)
    for comp in ctx.profile.install_order():
        for r in comp.helm_releases:
            argv = helm.upgrade_command("helm", r, "/tmp/v.yaml", ctx, 120)
            assert argv[:5] == ["helm", "upgrade", "--install", r["release"], r["chart"]]
            assert ("--repo" in argv) == (bool(r.get("repo")) and not r["chart"].startswith("oci://"))
            assert argv[argv.index("--version") + 1] == str(r["version"])
            assert argv[argv.index("--namespace") + 1] == r["namespace"]
            assert ("--create-namespace" in argv) == bool(r.get("create_namespace"))
            assert ("--wait" in argv) == bool(r.get("wait"))
            if r.get("wait"):
                assert argv[argv.index("--timeout") + 1] == "120s"
            assert argv[-6:] == ["--kubeconfig", "/tmp/kubeconfig", "--kube-context", "ctx", "-f", "/tmp/v.yaml"]


def test_helm_failure_carries_redacted_stderr(tmp_path):
    from stack.redact import register_secret
    register_secret("s3cr3t-value")
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = version ]; then echo v3.15.0; exit 0; fi\n"
                    "echo 'Error: INSTALLATION FAILED: token s3cr3t-value rejected' >&2; exit 1\n")
    fake.chmod(0o755)
    helm.reset_version_check()
    ctx = ctx_for("seed", env={"PATH": str(tmp_path)})
    from stack.deadline import Deadline
    release = ctx.profile.components["cert-manager"].helm_releases[0]
    with pytest.raises(InstallError) as e:
        helm.install_release(ctx, "cert-manager", release, Deadline(30))
    assert "INSTALLATION FAILED" in str(e.value) and "s3cr3t-value" not in str(e.value)
    helm.reset_version_check()
