"""The installers against the twin: the real helm.py (through the helm shim) and manifests.py (through a file://
mirror) paths, server-side apply, ordering, retries, idempotency, deletion."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from installers import manifests
from installers.context import InstallError
from installers.plan import Plan
from installers.plan import component_result
from stack.profile import Profile
from stack.record import to_data
from stack.deadline import Deadline
from tests.installers.conftest import BARE_TWIN

pytestmark = pytest.mark.twin
# The tests of the module's installed seed twin run on one worker, which starts that twin once.
INSTALLED_SEED = pytest.mark.xdist_group("installed-seed")

CRD_PATH = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/(?:namespaces/[^/]+/)?(?P<plural>[^/]+)(?:/|$)")


def _apply_entries(e):
    return [x for x in e.twin.api.request_log.entries() if x.verb in ("apply", "create", "update", "patch")
            and 200 <= x.status < 300 and not x.dry_run]


def _subset(profile: Profile, names: list[str], **changes) -> Profile:
    data = copy.deepcopy(profile.data)
    data["components"] = {n: c for n, c in data["components"].items() if n in names}
    data.update(changes)
    return Profile(data, profile.path)


# -- a full install of the seed stack onto a fresh twin -----------------------------------------------------------------
@INSTALLED_SEED
def test_fresh_install_installs_every_component_in_order(installed_seed):
    e = installed_seed
    assert [(c.name, c.action) for c in e.report.components] == [
        ("cert-manager", "installed"), ("istio", "installed"), ("knative", "installed"), ("kserve", "installed")]
    assert all(r.done for r in Plan(e.ctx()).ready().values()), Plan(e.ctx()).ready()
    # progress lines name the component, the elapsed seconds and the step
    assert any(re.match(r"^\[kserve \d+\.\d+s\] applying kserve\.yaml \(\d+ objects\)$", line) for line in e.lines)
    # downloads: every manifest, unpinned in the seed profile, with its sha256 recorded
    urls = [m["url"] for c in e.profile.install_order() for m in c.manifests]
    assert [d.url for d in e.report.downloads] == urls
    assert all(re.fullmatch(r"[0-9a-f]{64}", d.sha256) and not d.pinned for d in e.report.downloads)
    assert to_data(e.report)["downloads"][0].keys() == {"url", "sha256", "pinned"}


@INSTALLED_SEED
def test_crds_are_applied_before_their_custom_resources(installed_seed):
    entries = _apply_entries(installed_seed)
    first_crd: dict[str, int] = {}
    for i, x in enumerate(entries):
        if x.resource == "customresourcedefinitions" and x.name:
            first_crd.setdefault(x.name, i)
    checked = 0
    for i, x in enumerate(entries):
        m = CRD_PATH.match(x.path)
        if not m or "." not in m["group"] or m["group"].endswith("k8s.io"):
            continue
        crd = f"{m['plural']}.{m['group']}"
        assert crd in first_crd and first_crd[crd] < i, f"{x.verb} {x.path} before the CRD {crd}"
        checked += 1
    assert checked >= 4      # Issuer, Certificate, Gateways, ClusterServingRuntime


def _check_helm_calls(e) -> None:
    calls = [c for c in e.helm_calls() if c["argv"][:2] == ["upgrade", "--install"]]
    releases = [r for c in e.profile.install_order() for r in c.helm_releases]
    assert len(calls) == len(releases)
    for call, r in zip(calls, releases, strict=True):
        argv = call["argv"]
        expected = ["upgrade", "--install", r["release"], r["chart"]]
        expected += ["--repo", r["repo"]] if r.get("repo") else []
        expected += ["--version", r["version"], "--namespace", r["namespace"]]
        expected += ["--create-namespace"] if r.get("create_namespace") else []
        assert argv[:len(expected)] == expected
        rest = argv[len(expected):]
        if r.get("wait"):
            assert rest[:2] == ["--wait", "--timeout"] and re.fullmatch(r"\d+s", rest[2])
            rest = rest[3:]
        assert "--wait" not in rest
        assert rest[:4] == ["--kubeconfig", str(e.twin.kubeconfig_path), "--kube-context", e.twin.context]
        assert rest[4] == "-f" and len(rest) == 6
        assert call["values"][rest[5]] == (r.get("values") or {})


@INSTALLED_SEED
def test_helm_commands_match_the_profile(installed_seed):
    _check_helm_calls(installed_seed)


@pytest.mark.parametrize("name", ["latest", "latest-standard"])
def test_other_shipped_profiles_install_with_the_profile_helm_commands(name, tmp_path):
    """The profile's helm commands, as `--install always` gives them on its twin. The install from nothing of
    these profiles is the one their twin's snapshot is made of (the same Plan, keyed by the installers' code: a
    change to it installs them from nothing again, and a failure fails the twin's start)."""
    from tests.installers.conftest import INSTALL_SCALE, make_env
    e = make_env(tmp_path, Profile.load(name), preinstalled=True)
    try:
        e.twin.api.request_log.reset()
        report = Plan(e.ctx(mode="always", timeout_scale=INSTALL_SCALE)).install()
        assert {c.action for c in report.components} == {"reapplied"}
        _check_helm_calls(e)
        assert any(c["argv"][3].startswith("oci://") and "--repo" not in c["argv"] for c in e.helm_calls()
                   if c["argv"][:2] == ["upgrade", "--install"])
        before = e.writes()
        assert {c.action for c in Plan(e.ctx(timeout_scale=INSTALL_SCALE)).install().components} == {"skipped"}
        assert e.writes() == before
    finally:
        e.twin.stop()


@INSTALLED_SEED
def test_rerun_in_auto_mode_makes_zero_writes(installed_seed):
    e = installed_seed
    before = e.writes()
    helm_before = len(e.helm_calls())
    lines_before = len(e.lines)
    report = Plan(e.ctx(mode="auto")).install()
    assert [c.action for c in report.components] == ["skipped"] * 4
    assert component_result(report, "kserve").detail == "already at v0.11.0"
    # the last one is gated by nothing after it: the progress must not claim it was found ready
    kserve = [line for line in e.lines[lines_before:] if line.startswith("[kserve")]
    assert kserve and not any("ready (" in line for line in kserve), kserve
    assert e.writes() == before
    assert [c["argv"][0] for c in e.helm_calls()[helm_before:]] in ([], ["version"])


@INSTALLED_SEED
def test_mode_never_writes_nothing(installed_seed):
    e = installed_seed
    before = e.writes()
    report = Plan(e.ctx(mode="never")).install()
    assert [c.action for c in report.components] == ["none"] * 4
    assert component_result(report, "istio").found == "v1.19.0"
    assert e.writes() == before


@INSTALLED_SEED
def test_version_mismatch_in_auto_is_refused(installed_seed):
    e = installed_seed
    data = copy.deepcopy(e.profile.data)
    data["components"]["kserve"]["version"] = "v0.12.0"
    before = e.writes()
    with pytest.raises(InstallError, match=r"^kserve v0\.11\.0 is running but the profile wants v0\.12\.0; "
                                           r"rerun with --install always to upgrade$"):
        Plan(e.ctx(Profile(data, e.profile.path))).install()
    assert e.writes() == before


@INSTALLED_SEED
def test_ssa_updates_and_image_rewrites_before_apply(installed_seed):
    e = installed_seed
    kube = e.ctx().kube
    dep0 = kube.get("apps/v1", "Deployment", "kserve-controller-manager", "kserve")
    images0 = {c["name"]: c["image"] for c in dep0["spec"]["template"]["spec"]["containers"]}
    assert images0["kube-rbac-proxy"] == "quay.io/brancz/kube-rbac-proxy:v0.13.1"
    profile = _subset(e.profile, ["kserve"], image_overrides={
        **e.profile.image_overrides, "kserve/kserve-controller:v0.11.0": "mirror.local/kserve/kserve-controller:v0.11.0"})
    env = dict(e.env, KSTACK_REGISTRY_OVERRIDES="quay.io=mirror.local/quay")
    ctx = e.ctx(profile, env=env)
    start = len(e.twin.api.request_log.entries())
    manifests.apply_manifest(ctx, "kserve", profile.components["kserve"].manifests[0], Deadline(30))
    dep = kube.get("apps/v1", "Deployment", "kserve-controller-manager", "kserve")
    images = {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    assert images == {"manager": "mirror.local/kserve/kserve-controller:v0.11.0",
                      "kube-rbac-proxy": "mirror.local/quay/brancz/kube-rbac-proxy:v0.13.1"}
    assert dep["metadata"]["resourceVersion"] != dep0["metadata"]["resourceVersion"]
    assert "kstack" in {m["manager"] for m in dep["metadata"]["managedFields"]}
    # rewritten before the apply: one apply of the Deployment, no later patch
    dep_writes = [x for x in e.twin.api.request_log.entries()[start:]
                  if x.resource == "deployments" and x.name == "kserve-controller-manager" and x.verb != "get"
                  and x.verb not in ("list", "watch")]
    assert [x.verb for x in dep_writes] == ["apply"] and dep_writes[0].field_manager == "kstack"
    assert any("image kserve/kserve-controller:v0.11.0 -> mirror.local/" in line for line in e.lines)
    # put it back for the other tests of this module
    manifests.apply_manifest(e.ctx(), "kserve", e.profile.components["kserve"].manifests[0], Deadline(30))


@INSTALLED_SEED
def test_delete_removes_what_install_created_and_nothing_else(installed_seed):
    e = installed_seed
    kube = e.ctx().kube
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foreign"}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foreign", "namespace": "foreign"}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foreign", "namespace": "default"}})
    plan = Plan(e.ctx())
    plan.delete()
    for comp in e.profile.install_order():
        for ns in comp.inventory.get("namespaces", []):
            assert kube.get("v1", "Namespace", ns) is None, ns
        for crd in comp.inventory.get("crds", []):
            assert kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["name"]) is None, crd["name"]
        for hook in comp.inventory.get("webhooks", []):
            assert kube.get("admissionregistration.k8s.io/v1", hook["kind"], hook["name"]) is None, hook["name"]
    assert kube.get("v1", "ConfigMap", "foreign", "foreign") is not None
    assert kube.get("v1", "ConfigMap", "foreign", "default") is not None
    assert kube.get("v1", "Namespace", "kube-system") is not None
    plan.delete()     # idempotent


# -- ordering, retries and failures on a fresh twin ----------------------------------------------------------------------
@BARE_TWIN
def test_a_file_mixing_crs_and_crds_applies(fresh_env, tmp_path):
    e = fresh_env
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    docs = [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "mixed"},
             "spec": {"size": 1}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "mixed"}},
            crd, None,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mixed"}}]
    src = tmp_path / "mixed.yaml"
    src.write_text(yaml.safe_dump_all(docs))
    ctx = e.ctx(env={**e.env, "KSTACK_MANIFEST_MIRROR": ""})
    n = manifests.apply_manifest(ctx, "test", {"url": src.as_uri()}, Deadline(30))
    assert n == 4
    assert ctx.kube.get("example.com/v1", "Widget", "w", "mixed")["spec"] == {"size": 1}
    order = [(x.resource, x.name) for x in _apply_entries(e)]
    assert order.index(("namespaces", "mixed")) < order.index(("customresourcedefinitions", "widgets.example.com")) \
        < order.index(("widgets", "w"))


@BARE_TWIN
def test_race_signatures_are_retried_and_logged(fresh_env, monkeypatch):
    e = fresh_env
    ctx = e.ctx()
    real_apply = ctx.kube.apply
    calls = []

    def racing_apply(obj, **kw):
        calls.append(obj["metadata"]["name"])
        if len(calls) <= 2:
            from stack.kube import KubeError
            raise KubeError(500, "InternalError", 'Internal error occurred: failed calling webhook '
                            '"webhook.cert-manager.io": failed to call webhook: Post "https://cert-manager-webhook.'
                            'cert-manager.svc:443/validate?timeout=30s": dial tcp 10.96.0.1:443: connect: connection refused')
        return real_apply(obj, **kw)

    monkeypatch.setattr(ctx.kube, "apply", racing_apply)
    manifests.apply_objects(ctx, "test", [{"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": "raced", "namespace": "default"}}], Deadline(30), "t")
    assert calls == ["raced"] * 3
    assert [(r.layer, r.reason) for r in ctx.kube.retries.entries] == [("install", "webhook connection refused")] * 2
    assert ctx.kube.get("v1", "ConfigMap", "raced", "default") is not None


@BARE_TWIN
def test_api_flakiness_is_retried(fresh_env):
    e = fresh_env
    ctx = e.ctx()
    ctx.kube.resource("v1", "ConfigMap")          # discovery before the faults start
    ctx.kube.resource("v1", "Namespace")
    e.twin.api.faults.flaky_rate = 0.2     # 16 objects x 0.2**6 (every try failing): one run in a thousand
    try:
        objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flaky"}}] + [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "flaky"}}
            for i in range(15)]
        manifests.apply_objects(ctx, "test", objs, Deadline(60), "flaky.yaml")
    finally:
        e.twin.api.faults.flaky_rate = 0.0
    # Each transient answer is retried by the API layer only, never again by the install layer on top of it.
    assert ctx.kube.retries.count("api") > 0 and ctx.kube.retries.count("install") == 0
    assert len(ctx.kube.list("v1", "ConfigMap", "flaky")[0]) >= 15


@BARE_TWIN
def test_invalid_object_is_not_retried(fresh_env, monkeypatch):
    e = fresh_env
    ctx = e.ctx()
    real_apply, calls = ctx.kube.apply, []
    monkeypatch.setattr(ctx.kube, "apply", lambda obj, **kw: calls.append(obj["metadata"]["name"]) or real_apply(obj, **kw))
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "bad"}},
                    "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": []}}}}
    with pytest.raises(InstallError, match=r"applying deployment default/bad failed: .*HTTP 422"):
        manifests.apply_objects(ctx, "test", [bad], Deadline(30), "bad.yaml")
    assert calls == ["bad"]                                    # exactly one request
    assert ctx.kube.requests[("apply", "deployment")] == 1
    assert not [r for r in ctx.kube.retries.entries if "default/bad" in r.what]
    # (the twin appends to its request log after answering, so the log is not read here: it may lag)


@BARE_TWIN
def test_missing_helm_fails_with_the_remedy(fresh_env, tmp_path):
    from installers import helm
    helm.reset_version_check()
    e = fresh_env
    ctx = e.ctx(_subset(e.profile, ["cert-manager"]), env={**e.env, "PATH": str(tmp_path / "empty")})
    with pytest.raises(InstallError, match=r"helm is not installed .*https://helm\.sh/docs/intro/install/"):
        Plan(ctx).install()
    assert e.writes() == 0
    helm.reset_version_check()


@BARE_TWIN
def test_pinned_sha_mismatch_fails_before_any_apply(fresh_env):
    e = fresh_env
    data = copy.deepcopy(e.profile.data)
    data["components"] = {"knative": data["components"]["knative"]}
    data["components"]["knative"]["install"]["manifests"][0]["sha256"] = "0" * 64
    ctx = e.ctx(Profile(data, e.profile.path))
    with pytest.raises(InstallError, match=r"sha256 mismatch for https://github\.com/knative/serving/.*/serving-crds"
                                           r"\.yaml .*expected 0{64}, got [0-9a-f]{64}"):
        Plan(ctx).install()
    assert not list(e.cache.glob("*serving-crds.yaml"))
    assert e.writes() == 0
