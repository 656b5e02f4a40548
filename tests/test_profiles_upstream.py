"""Offline cross-checks of the shipped profiles against real upstream manifests.

The manifests live outside the repository, in the shared folder next to it (../shared/upstream, see its README.md):
the in-repo copies kept by kserve/kserve, istio/istio and knative/serving at the release tags. A user's clone has no
such folder, so every test here skips with a clear reason when it (or the sub-folder a test needs) is absent.

Each test compares whole sets (names, kinds, versions, images, ...) and reports exactly what differs, so any drift
between a profile and upstream fails loudly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pytest
import yaml

from stack.profile import Profile

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"

pytestmark = pytest.mark.skipif(
    not UPSTREAM.is_dir(), reason=f"upstream manifests not available at {UPSTREAM} (only in the team workspace)"
)


# ----------------------------------------------------------------------------------------------- helpers

def _folder(name: str) -> Path:
    path = UPSTREAM / name
    if not path.is_dir():
        pytest.skip(f"upstream folder {path} is absent")
    return path


def _docs(*paths: Path) -> list[dict]:
    out: list[dict] = []
    for path in paths:
        if not path.is_file():
            pytest.skip(f"upstream file {path} is absent")
        with path.open() as f:
            out.extend(d for d in yaml.safe_load_all(f) if isinstance(d, dict))
    return out


def _of_kind(docs: Iterable[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def _diff(what: str, profile: dict, upstream: dict) -> str:
    """A readable account of how two keyed maps differ."""
    lines = [f"{what}: profile and upstream differ"]
    for key in sorted(set(profile) - set(upstream), key=str):
        lines.append(f"  only in profile:  {key}: {profile[key]}")
    for key in sorted(set(upstream) - set(profile), key=str):
        lines.append(f"  only upstream:    {key}: {upstream[key]}")
    for key in sorted(set(profile) & set(upstream), key=str):
        if profile[key] != upstream[key]:
            lines.append(f"  {key}: profile {profile[key]} != upstream {upstream[key]}")
    return "\n".join(lines)


def _assert_same(what: str, profile: dict, upstream: dict) -> None:
    assert profile == upstream, _diff(what, profile, upstream)


def _crd_summary(crd: dict) -> dict:
    spec = crd["spec"]
    return {
        "kind": spec["names"]["kind"],
        "scope": spec["scope"],
        "versions": sorted(v["name"] for v in spec["versions"] if v.get("served")),
    }


def _upstream_crds(docs: Iterable[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: _crd_summary(d) for d in _of_kind(docs, "CustomResourceDefinition")}


def _profile_crds(profile: Profile, component: str) -> dict[str, dict]:
    crds = profile.components[component].inventory.get("crds", [])
    return {c["name"]: {"kind": c.get("kind"), "scope": c.get("scope"), "versions": sorted(c["versions"])} for c in crds}


def _override(image: str, profile: Profile) -> str:
    """An upstream image as the profile deploys it: exact image_overrides first, then registry prefix rewrites."""
    image = profile.image_overrides.get(image, image)
    for prefix, replacement in profile.registry_overrides.items():
        if image.startswith(prefix.rstrip("/") + "/"):
            return replacement.rstrip("/") + image[len(prefix.rstrip("/")):]
    return image


def _ports(ports: Iterable[dict]) -> list[tuple]:
    """(name, port, targetPort) with Kubernetes' default targetPort = port."""
    return sorted(
        ((p.get("name") or ""), p["port"], str(p.get("targetPort", p["port"]))) for p in ports
    )


def _rules(webhook: dict) -> set[str]:
    """The resources a webhook intercepts as group/version/resource (core group as an empty group)."""
    return {
        f"{group}/{version}/{resource}"
        for rule in webhook.get("rules", [])
        for group in rule.get("apiGroups", [])
        for version in rule.get("apiVersions", [])
        for resource in rule.get("resources", [])
    }


@pytest.fixture(scope="module")
def seed() -> Profile:
    return Profile.load("seed")


STANDARD_PROFILES = ["latest", "latest-standard"]


# ----------------------------------------------------------------------------------------------- seed: KServe v0.11.0

@pytest.fixture(scope="module")
def kserve_011() -> list[dict]:
    return _docs(_folder("kserve-v0.11.0") / "kserve.yaml")


def test_seed_kserve_namespaces(seed, kserve_011):
    upstream = {d["metadata"]["name"] for d in _of_kind(kserve_011, "Namespace")}
    profile = set(seed.components["kserve"].inventory.get("namespaces", []))
    assert profile == upstream, f"namespaces: only in profile {profile - upstream}, only upstream {upstream - profile}"


def test_seed_kserve_deployments_and_images(seed, kserve_011):
    """Deployment names and containers, with images after the profile's image_overrides."""
    upstream, upstream_labels = {}, {}
    for d in _of_kind(kserve_011, "Deployment"):
        key = f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}'
        pod = d["spec"]["template"]
        upstream[key] = {c["name"]: _override(c["image"], seed) for c in pod["spec"]["containers"]}
        upstream_labels[key] = pod["metadata"].get("labels", {})
    profile = {f'{w["namespace"]}/{w["name"]}': dict(w["containers"]) for w in seed.components["kserve"].inventory["deployments"]}
    _assert_same("kserve Deployments (container -> image after overrides)", profile, upstream)
    # The labels the suite waits on must be on the pods (a profile names a subset of them, by design).
    for w in seed.components["kserve"].inventory["deployments"]:
        key = f'{w["namespace"]}/{w["name"]}'
        missing = {k: v for k, v in w.get("labels", {}).items() if upstream_labels[key].get(k) != v}
        assert not missing, f"{key}: profile labels {missing} are not on the upstream pod template {upstream_labels[key]}"


def test_seed_kserve_requests_match_kserve_yaml(seed, kserve_011):
    """The pod requests the Docker host check sums (stack/resources.py): each Deployment's containers together, and
    the storage-initializer init container's from inferenceservice-config."""
    import json

    from stack.resources import cpu_millis, memory_bytes

    def pod(containers):
        reqs = [(c.get("resources") or {}).get("requests") or {} for c in containers]
        return sum(cpu_millis(r.get("cpu")) for r in reqs), sum(memory_bytes(r.get("memory")) for r in reqs)

    upstream = {f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}': pod(d["spec"]["template"]["spec"]["containers"])
                for d in _of_kind(kserve_011, "Deployment")}
    profile = {f'{w["namespace"]}/{w["name"]}': (cpu_millis(w["requests"].get("cpu")), memory_bytes(w["requests"].get("memory")))
               for w in seed.components["kserve"].inventory["deployments"]}
    _assert_same("kserve Deployments (pod requests: millicores, bytes)", profile, upstream)
    config = next(d for d in _of_kind(kserve_011, "ConfigMap") if d["metadata"]["name"] == "inferenceservice-config")
    initializer = json.loads(config["data"]["storageInitializer"])
    assert seed.data["iris"]["init_requests"] == {"cpu": initializer["cpuRequest"], "memory": initializer["memoryRequest"]}


def test_seed_kserve_image_overrides_are_used(seed, kserve_011):
    """Every image_overrides key replaces an image that kserve.yaml really references (no stale overrides)."""
    images = {c["image"] for d in _of_kind(kserve_011, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    stale = set(seed.image_overrides) - images
    assert not stale, f"image_overrides for images that kserve.yaml v0.11.0 does not use: {sorted(stale)}"


def test_seed_kserve_services(seed, kserve_011):
    upstream = {
        f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}': {
            "type": d["spec"].get("type", "ClusterIP"), "selector": d["spec"].get("selector", {}), "ports": _ports(d["spec"]["ports"])}
        for d in _of_kind(kserve_011, "Service")
    }
    profile = {
        f'{s["namespace"]}/{s["name"]}': {"type": s.get("type", "ClusterIP"), "selector": s.get("selector", {}), "ports": _ports(s.get("ports", []))}
        for s in seed.components["kserve"].inventory["services"]
    }
    _assert_same("kserve Services (type, selector, ports)", profile, upstream)


def test_seed_kserve_crds(seed, kserve_011):
    _assert_same("kserve CRDs (kind, scope, served versions)", _profile_crds(seed, "kserve"), _upstream_crds(kserve_011))


def test_seed_kserve_webhook_configurations(seed, kserve_011):
    """Configuration names by kind, their webhook names, backing Services, rules and cert-manager CA injection."""
    upstream = {}
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for d in _of_kind(kserve_011, kind):
            services = {f'{w["clientConfig"]["service"]["namespace"]}/{w["clientConfig"]["service"]["name"]}' for w in d["webhooks"]}
            upstream[(kind, d["metadata"]["name"])] = {
                "webhooks": sorted(w["name"] for w in d["webhooks"]),
                "services": sorted(services),
                "rules": sorted(set().union(*(_rules(w) for w in d["webhooks"]))),
                "inject_ca_from": (d["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from"),
            }
    profile = {
        (w["kind"], w["name"]): {
            "webhooks": sorted(w.get("webhooks", [])),
            "services": sorted([w["service"]] if "service" in w else []),
            "rules": sorted(w.get("rules", [])),
            "inject_ca_from": w.get("inject_ca_from"),
        }
        for w in seed.components["kserve"].inventory["webhooks"]
    }
    _assert_same("kserve webhook configurations", profile, upstream)


def test_seed_kserve_isvc_crd_ca_injection(seed, kserve_011):
    """The ISVC CRD's conversion webhook CA comes from the Certificate the profile gates on."""
    crd = next(d for d in _of_kind(kserve_011, "CustomResourceDefinition") if d["metadata"]["name"] == "inferenceservices.serving.kserve.io")
    source = (crd["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
    gates = seed.components["kserve"].readiness_gates.get("certificates", [])
    assert source in gates, f"ISVC CRD injects its CA from {source!r}, the profile gates on certificates {gates}"


def test_seed_kserve_runtimes(seed):
    docs = _docs(_folder("kserve-v0.11.0") / "kserve-runtimes.yaml")
    runtimes = {d["metadata"]["name"]: d for d in _of_kind(docs, "ClusterServingRuntime")}
    assert len(docs) == 9 and len(runtimes) == 9, f"expected 9 ClusterServingRuntimes, got {sorted(runtimes)} in {len(docs)} documents"
    iris = seed.iris
    runtime = runtimes.get(iris.get("runtime") or "kserve-sklearnserver")
    assert runtime is not None, f"runtime {iris.get('runtime')!r} not among {sorted(runtimes)}"
    declared = runtime["spec"].get("protocolVersions", [])
    if iris.get("protocol_version"):
        assert iris["protocol_version"] in declared, f"iris asks protocol {iris['protocol_version']}, runtime declares {declared}"
    else:
        # The seed calls /v2 without protocolVersion precisely because the 0.11.0 runtime declares v1 only.
        assert declared == ["v1"], f"kserve-sklearnserver v0.11.0 declares {declared}; the seed's sklearn-011-v1-only limitation assumes ['v1']"


# ----------------------------------------------------------------------------------------------- seed: Istio, Knative

def test_seed_istio_crds(seed):
    folder = _folder("istio-1.19.0")
    upstream = _upstream_crds(_docs(folder / "crd-all.gen.yaml", folder / "crd-operator.yaml"))
    _assert_same("Istio 1.19.0 CRDs (kind, scope, served versions)", _profile_crds(seed, "istio"), upstream)


def test_seed_knative_crds(seed):
    folder = _folder("knative-serving-v1.11.0")
    upstream = _upstream_crds(_docs(*sorted(folder.glob("*.yaml"))))
    assert len(upstream) == 12, f"expected the 12 CRDs serving-crds.yaml is built from, found {sorted(upstream)}"
    _assert_same("Knative Serving 1.11.0 CRDs (kind, scope, served versions)", _profile_crds(seed, "knative"), upstream)


# ----------------------------------------------------------------------------------------------- latest: KServe v0.20.0

@pytest.fixture(scope="module")
def kserve_020_crds() -> list[dict]:
    return _docs(_folder("kserve-v0.20.0") / "kserve-crds.yaml")


@pytest.fixture(scope="module")
def kserve_020_cluster_resources() -> list[dict]:
    return _docs(_folder("kserve-v0.20.0") / "kserve-cluster-resources.yaml")


@pytest.mark.parametrize("name", STANDARD_PROFILES)
def test_latest_kserve_core_crds(name, kserve_020_crds):
    """The 6 CRDs of kserve-crds.yaml, exactly as the profile lists them (the profile adds kserve.yaml's others)."""
    profile = _profile_crds(Profile.load(name), "kserve")
    upstream = _upstream_crds(kserve_020_crds)
    assert len(upstream) == 6, f"kserve-crds.yaml v0.20.0 should hold 6 CRDs, holds {sorted(upstream)}"
    _assert_same(f"{name}: kserve-crds.yaml CRDs", {k: v for k, v in profile.items() if k in upstream}, upstream)


@pytest.mark.parametrize("name", STANDARD_PROFILES)
def test_latest_sklearn_runtime_protocols(name, kserve_020_cluster_resources):
    """The runtime the iris check pins exists and declares the protocol versions the check uses."""
    profile = Profile.load(name)
    iris = profile.iris
    runtimes = {d["metadata"]["name"]: d for d in _of_kind(kserve_020_cluster_resources, "ClusterServingRuntime")}
    runtime = runtimes.get(iris["runtime"])
    assert runtime is not None, f"{name}: iris runtime {iris['runtime']!r} not in kserve-cluster-resources.yaml {sorted(runtimes)}"
    declared = set(runtime["spec"].get("protocolVersions", []))
    wanted = {iris["protocol_version"]} if iris.get("protocol_version") else {"v1"}
    if iris.get("v2"):
        wanted.add("v2")
    assert wanted <= declared, f"{name}: iris uses protocols {sorted(wanted)}, {iris['runtime']} declares {sorted(declared)}"
    formats = {f["name"] for f in runtime["spec"].get("supportedModelFormats", [])}
    assert "sklearn" in formats, f"{name}: {iris['runtime']} supports {sorted(formats)}, not sklearn"


@pytest.mark.parametrize("name", STANDARD_PROFILES)
def test_latest_cluster_resources_need_their_webhooks(name, kserve_020_cluster_resources):
    """needs_webhooks of kserve-cluster-resources.yaml names exactly the configurations whose rules cover its kinds."""
    kserve = Profile.load(name).components["kserve"]
    entry = next(m for m in kserve.manifests if m["url"].endswith("/kserve-cluster-resources.yaml"))
    plural = {c["kind"]: c["name"].split(".", 1)[0] for c in kserve.inventory["crds"]}
    group_of = {c["kind"]: c["name"].split(".", 1)[1] for c in kserve.inventory["crds"]}
    kinds = {(d["kind"], d["apiVersion"]) for d in kserve_020_cluster_resources}
    unknown = {k for k, _ in kinds if k not in plural}
    assert not unknown, f"{name}: kserve-cluster-resources.yaml has kinds without a profile CRD: {sorted(unknown)}"
    resources = {f'{group_of[k]}/{v.split("/")[1]}/{plural[k]}' for k, v in kinds}
    covering = {
        w["name"] for w in kserve.inventory["webhooks"]
        if w["kind"] == "ValidatingWebhookConfiguration" and resources & set(w.get("rules", []))
    }
    uncovered = {r for r in resources if not any(r in w.get("rules", []) for w in kserve.inventory["webhooks"])}
    assert not uncovered, f"{name}: no profile webhook covers {sorted(uncovered)}"
    assert set(entry.get("needs_webhooks", [])) == covering, (
        f"{name}: needs_webhooks {sorted(entry.get('needs_webhooks', []))} != validating configurations covering "
        f"{sorted(resources)}: {sorted(covering)}"
    )


def _single_replica(inventory: dict) -> dict:
    """An inventory as a single-replica install expects it (latest installs HA: its workloads carry `replicas`)."""
    return {key: [{k: v for k, v in item.items() if k != "replicas" or v == 0} for item in value]
            if key in ("deployments", "daemonsets") else value for key, value in inventory.items()}


def test_latest_profiles_share_kserve_inventory():
    """latest-standard differs from latest in mode and in HA only: the same KServe and cert-manager releases, the same
    objects (latest runs more replicas of some)."""
    latest, standard = Profile.load("latest"), Profile.load("latest-standard")
    for component in ("kserve", "cert-manager"):
        a, b = latest.components[component], standard.components[component]
        assert a.version == b.version and a.manifests == b.manifests, f"{component} version/manifests differ"
        for key in sorted(set(a.inventory) | set(b.inventory)):
            assert _single_replica(a.inventory).get(key) == _single_replica(b.inventory).get(key), \
                f"{component} inventory '{key}' differs between latest and latest-standard"
    charts = [(r["chart"], r["version"]) for r in latest.components["cert-manager"].helm_releases]
    assert charts == [(r["chart"], r["version"]) for r in standard.components["cert-manager"].helm_releases]
