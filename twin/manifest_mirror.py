"""A file:// mirror of a profile's release manifests for the twin (which has no internet).

`write_mirror(profile, directory)` writes, for every manifest URL of every component, `<directory>/<host>/<path>`
holding YAML of the objects `twin.seed.inventory_objects` synthesises for that component, split over the component's
files the way the real releases are:
- a file whose name contains "crds" (serving-crds.yaml, kserve-crds.yaml): the component's CRDs only;
- a runtimes file (kserve-runtimes.yaml, kserve-cluster-resources.yaml): the ClusterServingRuntimes;
- net-istio.yaml: the net-istio Deployments, Services, webhook configurations, the Istio Gateways and the
  istio-system Service knative-local-gateway;
- the first other file (serving-core.yaml, kserve.yaml): everything else, CRDs included (as serving-core.yaml and
  kserve.yaml 0.11 really hold them); without its Namespace when the profile says `namespace_first`.
It returns the file:// base URL to put in KSTACK_MANIFEST_MIRROR (the installers fetch <mirror>/<host>/<path>).
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import yaml



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


def mirror_path(directory: str | Path, url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    return Path(directory) / parts.netloc / parts.path.lstrip("/")


def write_mirror(profile, directory: str | Path) -> str:
    """Write every manifest URL of the profile: upstream's own file where at hand, else synthesised objects."""
    from twin.upstream import manifest_files
    directory = Path(directory).resolve()
    for comp in profile.install_order():
        if not comp.manifests:
            continue
        files, _ = manifest_files(profile, comp.name)
        for url, objs in files.items():
            path = mirror_path(directory, url)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.dump_all(objs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False) if objs else "")
    return directory.as_uri()
