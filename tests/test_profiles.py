"""Profile loading and validation: shipped profiles are valid, bad ones fail at once naming the file and the field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stack.profile import PROFILES_DIR, Profile, ProfileError, available_profiles

SHIPPED = ["latest", "latest-standard", "seed"]


def test_three_profiles_ship():
    assert available_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_valid(name):
    profile = Profile.load(name)
    assert profile.name == name
    order = [c.name for c in profile.install_order()]
    for comp in profile.install_order():   # dependencies come first
        assert all(order.index(d) < order.index(comp.name) for d in comp.depends_on if d in order)
    assert "@sha256:" in profile.kind["node_image"]


def test_seed_is_the_first_users_stack():
    versions = Profile.load("seed").versions()
    assert versions == {"cert-manager": "v1.13.0", "istio": "1.19.0", "knative": "v1.11.0", "kserve": "v0.11.0"}
    seed = Profile.load("seed")
    assert seed.image_overrides["gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1"].startswith("quay.io/brancz/")
    assert seed.kind["node_image"].startswith("kindest/node:v1.27.3@")


def test_latest_standard_has_only_cert_manager_and_kserve():
    profile = Profile.load("latest-standard")
    assert set(profile.components) == {"cert-manager", "kserve"}
    assert profile.iris["route"] == "service-proxy"


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ProfileError) as e:
        Profile.load("nope")
    assert "unknown profile 'nope'" in str(e.value)
    for name in SHIPPED:
        assert name in str(e.value)


def _seed_data() -> dict:
    return yaml.safe_load((PROFILES_DIR / "seed.yaml").read_text())


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["components"]["kserve"].__setitem__("version", 11), "components.kserve.version"),
    (lambda d: d["kind"].__setitem__("node_image", "kindest/node:v1.27.3"), "kind.node_image"),
    (lambda d: d["budgets"].pop("install"), "budgets"),
    (lambda d: d["components"].__setitem__("linkerd", {}), "components"),
    (lambda d: d["kubernetes"].__setitem__("min", "1.30"), "kubernetes"),
    (lambda d: d.pop("iris"), "iris"),
    (lambda d: d.__setitem__("require", ["AC-CRDS"]), "require.0"),        # not an optional criterion
    (lambda d: d.__setitem__("require", ["AC-MONITORS"]), "require"),      # and no monitors declared
    (lambda d: d.__setitem__("require", ["AC-MESH-AUTHZ"]), "require"),    # and no authorization policy
    (lambda d: d.__setitem__("authorization_policy", {"rules": [{"from": [{"source": {"principals": ["a"]}}]},
                                                                {"to": [{"operation": {"paths": ["/"]}}]}]}),
     "authorization_policy.rules.1"),                                       # a rule anyone matches
    (lambda d: d.__setitem__("monitors", [{"kind": "Probe", "namespace": "a", "name": "b"}]), "monitors.0.kind"),
])
def test_malformed_profile_names_the_field(tmp_path, mutate, field):
    data = copy.deepcopy(_seed_data())
    mutate(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as e:
        Profile.load(str(path))
    assert e.value.field == field, str(e.value)
    assert str(path) in str(e.value)


def test_profile_that_is_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        Profile.load(str(path))


def test_subset_profile_kserve_alone_assumes_the_rest_present(tmp_path):
    data = _seed_data()
    data["components"] = {"kserve": data["components"]["kserve"]}
    path = tmp_path / "kserve-only.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = Profile.load(str(path))
    assert [c.name for c in profile.install_order()] == ["kserve"]


def test_the_readme_states_the_docker_host_each_profile_needs():
    """The README's kind prerequisites are the numbers stack/resources.py sums from the profiles' requests."""
    import re

    from stack.resources import stack_requests
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in available_profiles():
        need = stack_requests(Profile.load(name))
        cpus, gib = need.minimum_host()
        row = (f"| {name} | {need.cpu_millis / 1000:g} CPU, {need.memory_gib:.1f} GiB | "
               f"{cpus} CPUs, {gib} GiB memory |")
        assert row in readme, f"README lacks {row!r}; it says: {re.findall(rf'^[|] {name} [|].*$', readme, re.M)}"


def test_an_optional_criterion_applies_where_configured_or_required(tmp_path):
    """AC-IRIS-S3 is NOT RUN (with its reason) where the run has no S3 store, unless the profile requires it: then
    it applies, so a missing store fails it."""
    from stack.criteria import BY_ID, RunFacts
    s3 = BY_ID["AC-IRIS-S3"]
    kserve = frozenset({"kserve"})
    ok, reason = s3.applies(RunFacts(kserve))
    assert not ok and "optional" in reason and "KSTACK_S3_" in reason
    assert s3.applies(RunFacts(kserve, given=frozenset({"s3"}))) == (True, None)
    assert s3.applies(RunFacts(kserve, required=frozenset({"AC-IRIS-S3"}))) == (True, None)
    assert s3.applies(RunFacts(frozenset(), required=frozenset({"AC-IRIS-S3"})))[0] is False      # no kserve: never
    data = copy.deepcopy(_seed_data())
    data["require"] = ["AC-IRIS-S3"]
    path = tmp_path / "requires-s3.yaml"
    path.write_text(yaml.safe_dump(data))
    assert Profile.load(str(path)).required_criteria == {"AC-IRIS-S3"}


def test_declared_monitors_make_ac_monitors_apply(tmp_path):
    """AC-MONITORS applies where the profile declares monitors; without them it is NOT RUN, saying what it needs."""
    from stack.criteria import BY_ID
    from stack.profile import MonitorRef
    data = copy.deepcopy(_seed_data())
    data["monitors"] = [{"kind": "ServiceMonitor", "namespace": "cert-manager", "name": "cert-manager"}]
    path = tmp_path / "with-monitors.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = Profile.load(str(path))
    assert profile.monitors == [MonitorRef("ServiceMonitor", "cert-manager", "cert-manager")]
    assert str(profile.monitors[0]) == "ServiceMonitor cert-manager/cert-manager"

    monitors = BY_ID["AC-MONITORS"]
    assert monitors.applies(profile.facts()) == (True, None)
    ok, reason = monitors.applies(Profile.load("seed").facts())
    assert not ok and "monitors declared in the profile" in reason


# Registries deleted upstream: no image a profile names should come from one, even in a dry run (the profile is a
# user's example). Knative's samples moved from gcr.io/knative-samples to ghcr.io/knative (knative/docs).
DELETED_REGISTRIES = ("gcr.io/knative-samples/",)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_admission_probes_name_no_image_of_a_deleted_registry(name):
    def images(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from ([value] if key == "image" and isinstance(value, str) else images(value))
        elif isinstance(node, list):
            for item in node:
                yield from images(item)
    profile = Profile.load(name)
    named = [i for c in profile.components.values() for p in c.admission_probes for i in images(p)]
    assert named or not profile.has("knative"), "Knative's probe names no image: this test reads the wrong field"
    stale = [i for i in named if i.startswith(DELETED_REGISTRIES) or profile.retired_registry(i)]
    assert not stale, stale


@pytest.mark.parametrize("name, not_applicable", [
    ("seed", {"AC-IRIS-S3", "AC-PROMQL", "AC-MONITORS", "AC-MESH-MTLS", "AC-MESH-AUTHZ", "AC-POD-SECURITY", "AC-HA"}),
    ("latest", {"AC-IRIS-S3", "AC-PROMQL", "AC-MONITORS", "AC-MESH-MTLS", "AC-MESH-AUTHZ"}),     # it requires AC-HA
    ("latest-standard", {"AC-IRIS-S3", "AC-PROMQL", "AC-MONITORS", "AC-MESH-MTLS", "AC-MESH-AUTHZ", "AC-HA", "AC-ISTIO",
                         "AC-KNATIVE", "AC-SCALE-TO-ZERO", "AC-SCALE-OUT"}),
])
def test_each_shipped_profile_says_which_criteria_apply_without_anything_given(name, not_applicable):
    from stack.criteria import applicability
    answers = applicability(Profile.load(name).facts())
    assert {c for c, (ok, _) in answers.items() if not ok} == not_applicable
    assert all(reason for ok, reason in answers.values() if not ok)


def test_collection_marks_the_tests_of_criteria_that_do_not_apply_not_run_with_the_criterions_reason():
    """One place decides (stack.criteria): a test none of whose criteria applies gets a skip marker with the reason;
    a test with one criterion that applies runs."""
    from fixtures.plugin import _not_applicable

    class Mark:
        def __init__(self, *args):
            self.args, self.kwargs = args, {}

    class Item:
        def __init__(self, *criteria):
            self.marks, self.stash = [Mark(*criteria)], {}

        def iter_markers(self, name):
            return iter(self.marks if name == "criteria" else [])

    zero, s3, both = Item("AC-SCALE-TO-ZERO"), Item("AC-IRIS-S3"), Item("AC-IRIS-S3", "AC-IRIS-PREDICT")
    _not_applicable([zero, s3, both], Profile.load("latest-standard").facts())
    assert list(zero.stash.values()) == ["not applicable: the profile has no knative"]
    assert list(s3.stash.values()) == ["not applicable: optional, and it needs an S3 store (KSTACK_S3_*)"]
    assert both.stash == {}


def test_a_run_may_require_an_optional_criterion_as_the_profiles_require_would():
    """--require AC-HA: the seed profile's ha: sections make it apply; a profile without any cannot require it."""
    from stack.criteria import applicability
    seed = Profile.load("seed")
    assert not applicability(seed.facts())["AC-HA"][0]
    required = seed.requiring(["AC-HA"])
    assert applicability(required.facts())["AC-HA"] == (True, None) and "AC-HA" not in seed.required_criteria
    bare = {**seed.data, "components": {n: {k: v for k, v in c.items() if k != "ha"}
                                        for n, c in seed.data["components"].items()}}
    with pytest.raises(ProfileError, match="requires AC-HA but no component lists its HA workloads under ha:"):
        Profile(bare).requiring(["AC-HA"])
    with pytest.raises(ProfileError, match="AC-CRDS is not an optional criterion"):
        seed.requiring(["AC-CRDS"])


def test_an_ha_workload_must_be_a_deployment_of_its_components_inventory():
    seed = Profile.load("seed")
    data = {**seed.data, "components": {**seed.data["components"], "kserve": {
        **seed.data["components"]["kserve"], "ha": [{"workload": "kserve/no-such", "replicas": 2, "why": "x"}]}}}
    with pytest.raises(ProfileError, match="kserve/no-such is not a Deployment of the component's inventory"):
        Profile(data)
