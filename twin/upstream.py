"""Where the twin's install sources come from: upstream's real files where they are at hand, else objects
synthesised from the profile inventory (twin/seed.py) - and a record of which was which, for the twin's report.

Upstream's files are the copies kept beside the project (../shared/upstream, or $KSTACK_TWIN_UPSTREAM), read as
they are, never copied into the project. A machine with neither gets the synthesised objects for everything.

| profile URL or Helm release                    | upstream copy                                         |
|------------------------------------------------|-------------------------------------------------------|
| kserve v0.11.0 kserve.yaml, kserve-runtimes.yaml | kserve-v0.11.0/{kserve,kserve-runtimes}.yaml          |
| kserve v0.20.0 kserve-crds.yaml, kserve-cluster-resources.yaml | kserve-v0.20.0/...                    |
| knative-v1.11.0 serving-crds.yaml              | knative-serving-v1.11.0/*.yaml (the 12 CRDs it is built from) |
| Istio 1.19.0 base chart's CRDs (release istio-base) | istio-1.19.0/crd-all.gen.yaml, crd-operator.yaml |

KServe's release files are also rendered from the module's own source (its config/, copied into the build cache by
twin/toolchain.py, since the twin builds that module's controller anyway) with kustomize, the way each release does
it; that is the only source of v0.20.0's kserve.yaml (over 4 MiB, no copy at hand), and the source of v0.11.0's
files on a machine without the copies (a user's clone):
- hack/release/generate-install.sh @v0.20.0: `kustomize build config/overlays/all | yq 'select(.kind != "Namespace")'
  | sed s/:latest/:$TAG/g`, and `kustomize build config/clusterresources | sed s/:latest/:$TAG/g` for
  kserve-cluster-resources.yaml;
- hack/generate-install.sh @v0.11.0: `kustomize build config/default | sed s/:latest/:$TAG/` (and config/runtimes for
  kserve-runtimes.yaml), the first `:latest` of a line only. Rendered with kustomize v5.8.1, both files equal the
  released copies object for object (measured against ../shared/upstream/kserve-v0.11.0; tests/twin/test_upstream.py).
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from twin.seed import inventory_objects

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)      # libyaml: these files are megabytes
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

ROOT = Path(__file__).resolve().parent.parent
_KSERVE = "https://github.com/kserve/kserve/releases/download"
FILES = {
    f"{_KSERVE}/v0.11.0/kserve.yaml": ["kserve-v0.11.0/kserve.yaml"],
    f"{_KSERVE}/v0.11.0/kserve-runtimes.yaml": ["kserve-v0.11.0/kserve-runtimes.yaml"],
    f"{_KSERVE}/v0.20.0/kserve-crds.yaml": ["kserve-v0.20.0/kserve-crds.yaml"],
    f"{_KSERVE}/v0.20.0/kserve-cluster-resources.yaml": ["kserve-v0.20.0/kserve-cluster-resources.yaml"],
    "https://github.com/knative/serving/releases/download/knative-v1.11.0/serving-crds.yaml":
        ["knative-serving-v1.11.0/*.yaml"],
}


@dataclass(frozen=True)
class Rendering:
    """A release file built from its module's config/ by the release script's recipe."""
    build: str                  # the toolchain build that holds the module's config/
    overlay: str                # the kustomization under config/
    tag: str                    # what `:latest` becomes
    drop_namespaces: bool       # 0.20's `yq 'select(.kind != "Namespace")'`
    every_latest: bool          # `sed s/:latest/:TAG/g` (0.20), or only the first on each line (0.11's `sed` without g)

    def image_tags(self, text: str) -> str:
        if self.every_latest:
            return text.replace(":latest", f":{self.tag}")
        return "\n".join(line.replace(":latest", f":{self.tag}", 1) for line in text.split("\n"))


RENDERED = {
    f"{_KSERVE}/v0.20.0/kserve.yaml": Rendering("kserve-v0.20.0", "overlays/all", "v0.20.0", True, True),
    f"{_KSERVE}/v0.11.0/kserve.yaml": Rendering("kserve-v0.11.0", "default", "v0.11.0", False, False),
    f"{_KSERVE}/v0.11.0/kserve-runtimes.yaml": Rendering("kserve-v0.11.0", "runtimes", "v0.11.0", False, False),
    # hack/release/generate-install.sh @v0.20.0: `kustomize build config/clusterresources | sed s/:latest/:$TAG/g`
    # (the ServingRuntimes with their securityContext, and the storage containers)
    f"{_KSERVE}/v0.20.0/kserve-cluster-resources.yaml": Rendering("kserve-v0.20.0", "clusterresources", "v0.20.0",
                                                                  False, True),
}
HELM_CRDS = {("istio-base", "1.19.0"): ["istio-1.19.0/crd-all.gen.yaml", "istio-1.19.0/crd-operator.yaml"]}


def upstream_dir() -> Path | None:
    path = Path(os.environ.get("KSTACK_TWIN_UPSTREAM") or ROOT.parent / "shared" / "upstream")
    return path if path.is_dir() else None


def _load(patterns: list[str]) -> list[dict] | None:
    base = upstream_dir()
    if base is None:
        return None
    files = sorted(p for pattern in patterns for p in base.glob(pattern))
    if not files:
        return None
    return [d for f in files for d in yaml.load_all(f.read_text(), Loader=_LOADER) if d]


def _render(url: str) -> list[dict] | None:
    """A release file rendered from upstream's source by upstream's recipe (cached beside the build)."""
    recipe = RENDERED.get(url)
    if recipe is None:
        return None
    import subprocess

    from twin import toolchain
    builds = toolchain.load_builds()
    source, kustomize = toolchain.built(builds[recipe.build]), toolchain.built(builds["kustomize"])
    if source is None or kustomize is None or "config" not in source.data:
        return None
    cached = Path(source.data["config"]).parent / f"rendered-{recipe.overlay.replace('/', '-')}.yaml"
    if not cached.is_file():
        proc = subprocess.run([kustomize.binaries["kustomize"], "build",
                               str(Path(source.data["config"]) / recipe.overlay)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"kustomize build of {recipe.build} {recipe.overlay} failed: "
                               f"{proc.stderr.strip()[-500:]}")
        text = proc.stdout
        if recipe.drop_namespaces:
            docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d and d.get("kind") != "Namespace"]
            text = yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(recipe.image_tags(text))
        tmp.replace(cached)
    return [d for d in yaml.load_all(cached.read_text(), Loader=_LOADER) if d]


def _key(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


# -- synthesised objects, split over a component's files the way the real releases are ----------------------------
# - a file whose name contains "crds" (serving-crds.yaml, kserve-crds.yaml): the component's CRDs only;
# - a runtimes file (kserve-runtimes.yaml, kserve-cluster-resources.yaml): the ClusterServingRuntimes;
# - net-istio.yaml: the net-istio Deployments, Services, webhook configurations, the Istio Gateways and the
#   istio-system Service knative-local-gateway;
# - the first other file (serving-core.yaml, kserve.yaml): everything else, CRDs included (as serving-core.yaml and
#   kserve.yaml 0.11 really hold them); without its Namespace when the profile says `namespace_first`.
def _basename(url: str) -> str:
    return os.path.basename(urllib.parse.urlsplit(url).path)


def _is_net_istio(obj: dict) -> bool:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if "net-istio" in name or "istio.networking.internal.knative.dev" in name:
        return True
    if obj.get("apiVersion", "").startswith("networking.istio.io/"):
        return True
    return obj.get("kind") == "Service" and meta.get("namespace") == "istio-system"


def split_for_files(component, objs: list[dict]) -> dict[str, list[dict]]:
    """URL -> objects, for the component's manifests."""
    files = [m["url"] for m in component.manifests]
    out: dict[str, list[dict]] = {url: [] for url in files}
    crds = [o for o in objs if o.get("kind") == "CustomResourceDefinition"]
    assigned: set[int] = set()
    main = None
    for m in component.manifests:
        url, base = m["url"], _basename(m["url"])
        if "crds" in base:
            out[url] = list(crds)
        elif "runtimes" in base or "cluster-resources" in base:
            picked = [o for o in objs if o.get("kind") in ("ClusterServingRuntime", "ServingRuntime")]
            out[url] = picked
            assigned |= {id(o) for o in picked}
        elif base.startswith("net-istio") or base == "istio.yaml" and component.name == "knative":
            picked = [o for o in objs if _is_net_istio(o)]
            out[url] = picked
            assigned |= {id(o) for o in picked}
        elif main is None:
            main = m
    if main is None:
        main = component.manifests[0]
    rest = [o for o in objs if id(o) not in assigned]
    if main.get("namespace_first"):
        rest = [o for o in rest if o.get("kind") != "Namespace"]
    out[main["url"]] = out[main["url"]] + [o for o in rest if o not in out[main["url"]]]
    return out


@dataclass(frozen=True)
class Source:
    what: str            # a URL or "helm release NAME"
    upstream: bool       # True: upstream's own file; False: synthesised from the profile inventory
    detail: str


def manifest_files(profile, component_name: str) -> tuple[dict[str, list[dict]], list[Source]]:
    """URL -> objects for a component's release manifests, real where at hand, and where each came from."""
    comp = profile.components[component_name]
    copies = {m["url"]: _load(FILES.get(m["url"], [])) for m in comp.manifests}
    copies = {url: objs for url, objs in copies.items() if objs}
    real = {m["url"]: copies.get(m["url"]) or _render(m["url"]) for m in comp.manifests}
    real = {url: objs for url, objs in real.items() if objs}
    defined = {_key(o) for objs in real.values() for o in objs}
    synthesised = split_for_files(comp, inventory_objects(profile, comp.name))
    out, sources = {}, []
    for m in comp.manifests:
        url = m["url"]
        if url in real:
            out[url] = real[url]
            how = (f"upstream copy {', '.join(FILES[url])}" if url in copies else
                   f"rendered from github.com/kserve/kserve@{RENDERED[url].tag} config/{RENDERED[url].overlay} "
                   "with kustomize, as the release does")
            sources.append(Source(url, True, how))
        else:
            out[url] = [o for o in synthesised.get(url, []) if _key(o) not in defined]
            sources.append(Source(url, False, "synthesised from the profile inventory (not available offline)"))
    return out, sources


def release_crds(release: str, chart_version: str) -> list[dict] | None:
    """The real CRDs of a Helm release, where upstream's copies are at hand."""
    return _load(HELM_CRDS.get((release, chart_version.lstrip("v")), []))


def install_sources(profile) -> list[Source]:
    """Where every install source of the profile comes from on the twin (for its report)."""
    out = []
    for comp in profile.install_order():
        if comp.manifests:
            out += manifest_files(profile, comp.name)[1]
        for rel in comp.helm_releases:
            crds = release_crds(rel["release"], str(rel.get("version", "")))
            out.append(Source(f"helm release {rel['release']} ({rel.get('chart')} {rel.get('version')})", False,
                              "chart objects synthesised from the profile inventory (charts are not available "
                              "offline)" + ("; CRDs from upstream's copy" if crds else "")))
    return out
