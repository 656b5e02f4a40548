"""Release manifests: download once into a cache (sha256-checked), rewrite images, apply with server-side apply in a
safe order (Namespaces, CRDs, wait Established, the rest), merge patches, and deletion of what a file created.

Mirrors: KSTACK_MANIFEST_MIRROR (or the profile's `manifest_mirror`) is a base URL (https://, http:// or file://)
that replaces everything up to the file's path: https://github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml
is fetched from <mirror>/github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml.

Image rewrites, before anything is applied (containers and initContainers of Deployments, DaemonSets, StatefulSets,
Jobs, CronJobs, Pods, and the containers of ClusterServingRuntimes/ServingRuntimes):
1. exact: the profile's `image_overrides` {old image: new image};
2. registry prefix: the profile's `registry_overrides` merged with KSTACK_REGISTRY_OVERRIDES
   ("quay.io=mirror.local/quay,docker.io=mirror.local/hub"; the env wins). A key matches the image's registry part
   (quay.io/jetstack/x -> mirror.local/quay/jetstack/x); "docker.io" also matches Docker Hub images written without a
   registry (kserve/x -> <mirror>/kserve/x, nginx -> <mirror>/library/nginx).
"""
from __future__ import annotations

import copy
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from installers.context import Download, InstallContext, InstallError, gate
from stack import checks, readiness, retry
from stack.checks import ADMISSION_API, CRD_API, CRD_KIND, WEBHOOK_KINDS
from stack.kube import KubeError, NoSuchKind
from stack.deadline import Deadline

WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "Pod", "CronJob"}
RUNTIME_KINDS = {"ClusterServingRuntime", "ServingRuntime"}


# -- download -------------------------------------------------------------------------------------------------------
def manifest_mirror(ctx: InstallContext) -> str | None:
    return ctx.env.get("KSTACK_MANIFEST_MIRROR") or ctx.profile.data.get("manifest_mirror") or None


def mirrored_url(url: str, mirror: str | None) -> str:
    """<mirror>/<host>/<path> for a mirror base URL; the URL itself without one."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}" if parts.netloc else f"{mirror.rstrip('/')}{parts.path}"


def cache_path(ctx: InstallContext, url: str) -> Path:
    base = os.path.basename(urllib.parse.urlsplit(url).path) or "manifest.yaml"
    return Path(ctx.cache_dir) / f"{hashlib.sha256(url.encode()).hexdigest()}-{base}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(ctx: InstallContext, source: str, target: Path) -> None:
    ctx.fetches.append(source)
    tmp = target.with_name(target.name + ".part")

    def fetch():
        with urllib.request.urlopen(source, timeout=60) as resp, tmp.open("wb") as out:   # noqa: S310 - https/file by schema
            while chunk := resp.read(1 << 20):
                out.write(chunk)

    def transient(e: BaseException) -> str | None:
        if isinstance(e, urllib.error.HTTPError):
            return f"HTTP {e.code}" if e.code in (429, 500, 502, 503, 504) else None
        if isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError)) and not source.startswith("file:"):
            return "network error"
        return None

    try:
        retry.call(fetch, what=f"download {source}", layer="download", is_transient=transient,
                   retries=ctx.kube.retries, deadline=ctx.current_deadline(), attempts=4)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise InstallError(f"cannot download {source}: {e}") from None
    tmp.replace(target)


def fetch(ctx: InstallContext, url: str, sha256: str | None = None) -> tuple[Path, Download]:
    """The manifest's local path (downloaded once into the cache) and the evidence of what was used."""
    source = mirrored_url(url, manifest_mirror(ctx))
    path = cache_path(ctx, source)
    cached = path.is_file()
    if not cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        _download(ctx, source, path)
    actual = _sha256(path)
    if sha256 and actual != sha256.lower():
        path.unlink(missing_ok=True)
        raise InstallError(f"sha256 mismatch for {url} (fetched from {source}): expected {sha256}, got {actual}; "
                           f"the {'cached' if cached else 'downloaded'} file {path} was deleted")
    download = Download(url=url, sha256=actual, pinned=bool(sha256), source=source, cached=cached)
    if not any(d.url == url and d.sha256 == actual for d in ctx.downloads):
        ctx.downloads.append(download)
    return path, download


# -- parsing and rewriting --------------------------------------------------------------------------------------------
def parse_documents(text: str) -> list[dict]:
    """Objects of a multi-document YAML: empty documents skipped, `kind: List` expanded."""
    out: list[dict] = []
    # libyaml where PyYAML has it: release files are megabytes (KServe 0.20's CRDs), pure Python takes seconds
    for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if not doc:
            continue
        if not isinstance(doc, dict):
            raise InstallError(f"manifest document is not a mapping: {str(doc)[:80]}")
        if doc.get("kind") == "List" or (doc.get("kind", "").endswith("List") and "items" in doc):
            out += [i for i in doc.get("items") or [] if i]
        else:
            out.append(doc)
    return out


def registry_overrides(ctx: InstallContext) -> dict[str, str]:
    out = dict(ctx.profile.registry_overrides)
    for pair in (ctx.env.get("KSTACK_REGISTRY_OVERRIDES") or "").split(","):
        if pair.strip():
            if "=" not in pair:
                raise InstallError(f"KSTACK_REGISTRY_OVERRIDES entry {pair!r} is not REGISTRY=REPLACEMENT")
            k, v = pair.split("=", 1)
            out[k.strip().rstrip("/")] = v.strip().rstrip("/")
    return out


def _registry_and_path(image: str) -> tuple[str | None, str]:
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, image            # Docker Hub, implicit registry


def rewrite_image(image: str, exact: dict[str, str], registries: dict[str, str]) -> str:
    image = exact.get(image, image)
    registry, path = _registry_and_path(image)
    for prefix in sorted(registries, key=len, reverse=True):
        target = registries[prefix]
        if registry is None and prefix in ("docker.io", "index.docker.io"):
            return f"{target}/{path if '/' in path.split('@')[0].split(':')[0] else 'library/' + path}"
        if image == prefix or image.startswith(prefix.rstrip("/") + "/"):
            return target.rstrip("/") + image[len(prefix.rstrip("/")):]
    return image


def _pod_specs(obj: dict) -> list[dict]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}]
    if kind in WORKLOAD_KINDS:
        return [(spec.get("template") or {}).get("spec") or {}]
    if kind in RUNTIME_KINDS:
        return [spec]
    return []


def rewrite_images(obj: dict, exact: dict[str, str], registries: dict[str, str]) -> list[tuple[str, str]]:
    """Rewrite images in place; the (old, new) pairs changed."""
    changed = []
    for pod_spec in _pod_specs(obj):
        for key in ("initContainers", "containers"):
            for c in pod_spec.get(key) or []:
                old = c.get("image")
                if old:
                    new = rewrite_image(old, exact, registries)
                    if new != old:
                        c["image"] = new
                        changed.append((old, new))
    return changed


def _ref(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind', '?').lower()} {ns + '/' if ns else ''}{meta.get('name', '?')}"


def split_objects(objs: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    namespaces = [o for o in objs if o.get("kind") == "Namespace" and o.get("apiVersion") == "v1"]
    crds = [o for o in objs if o.get("kind") == CRD_KIND]
    rest = [o for o in objs if o not in namespaces and o not in crds]
    return namespaces, crds, rest


def load_manifest(ctx: InstallContext, manifest: dict) -> tuple[list[dict], Download]:
    path, download = fetch(ctx, manifest["url"], manifest.get("sha256"))
    try:
        objs = parse_documents(path.read_text())
    except yaml.YAMLError as e:
        raise InstallError(f"{manifest['url']} is not valid YAML: {e}") from None
    return objs, download


# -- applying -------------------------------------------------------------------------------------------------------
def _default_namespace(ctx: InstallContext, obj: dict) -> None:
    meta = obj.setdefault("metadata", {})
    if meta.get("namespace"):
        return
    try:
        if ctx.kube.resource(obj["apiVersion"], obj["kind"]).namespaced:
            meta["namespace"] = "default"       # what kubectl apply does
    except NoSuchKind:
        pass


def _install_race(ctx: InstallContext, what: str, fn, deadline: Deadline):
    """The install layer's retries: known install races only (API transients are retried by Kube, once)."""
    return retry.call(fn, what=what, layer="install", is_transient=retry.race_signature, retries=ctx.kube.retries,
                      deadline=deadline, attempts=8)


def _client_configs(obj: dict) -> dict[str, dict]:
    """The webhook clientConfigs of a webhook configuration (by webhook name) or of a CRD's conversion webhook."""
    if obj.get("kind") in WEBHOOK_KINDS and obj.get("apiVersion") == ADMISSION_API:
        return {w.get("name", ""): w["clientConfig"] for w in obj.get("webhooks") or []
                if isinstance(w, dict) and isinstance(w.get("clientConfig"), dict)}
    if obj.get("kind") == CRD_KIND:
        webhook = (((obj.get("spec") or {}).get("conversion") or {}).get("webhook") or {})
        return {"conversion": webhook["clientConfig"]} if isinstance(webhook.get("clientConfig"), dict) else {}
    return {}


def keep_injected_ca_bundles(ctx: InstallContext, obj: dict,
                             deadline: Deadline | None = None) -> tuple[dict, list[str]]:
    """The object to apply, without the placeholder caBundles (KServe ships `Cg==`) whose live value is a valid,
    injected CA: a re-apply (--install always) must not reset what cert-manager's cainjector wrote, or the webhooks
    refuse every call until it re-injects. Safe under server-side apply: the cainjector's write took the field's
    ownership from our field manager, so leaving it out removes nothing. Returns (object, names of kept bundles)."""
    placeholders = [name for name, cc in _client_configs(obj).items()
                    if "caBundle" in cc and readiness.ca_bundle_problem(cc["caBundle"])]
    if not placeholders:
        return obj, []
    meta = obj.get("metadata") or {}
    try:
        live = ctx.kube.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), deadline=deadline)
    except NoSuchKind:
        live = None
    live_configs = _client_configs(live or {})
    kept = [name for name in placeholders
            if name in live_configs and readiness.ca_bundle_problem(live_configs[name].get("caBundle")) is None]
    if not kept:
        return obj, []
    obj = copy.deepcopy(obj)
    for name in kept:
        del _client_configs(obj)[name]["caBundle"]
    return obj, kept


def apply_object(ctx: InstallContext, obj: dict, deadline: Deadline, what: str = "") -> dict:
    """Server-side apply with retries on install-race signatures only; anything else raises InstallError at once."""
    def attempt():
        _default_namespace(ctx, obj)
        return ctx.kube.apply(obj, deadline=deadline)

    try:
        return _install_race(ctx, f"apply {_ref(obj)}", attempt, deadline)
    except KubeError as e:
        raise InstallError(f"{what + ': ' if what else ''}applying {_ref(obj)} failed: {e}") from e


def wait_crds_established(ctx: InstallContext, crds: list[dict], deadline: Deadline, component: str) -> None:
    specs = [{"name": c["metadata"]["name"],
              "versions": [v["name"] for v in (c.get("spec") or {}).get("versions", []) if v.get("served")]}
             for c in crds]
    if specs:
        gate(ctx, checks.crds(specs, name=f"{component}: CRDs Established"), deadline)


def wait_webhooks_admit(ctx: InstallContext, names: list[str], deadline: Deadline, component: str, why: str) -> None:
    """Wait until the named webhook configurations admit: caBundle valid and their Services' Endpoints non-empty."""
    if not names:
        return
    ctx.say(component, f"waiting for webhooks {', '.join(names)} before {why}")
    gate(ctx, checks.webhooks_admit(names, ctx.profile), deadline, f"{component}: webhooks before {why}")


def apply_objects(ctx: InstallContext, component: str, objs: list[dict], deadline: Deadline, label: str,
                  namespace_first: str | None = None) -> int:
    """Apply a list of objects in a safe order: Namespaces, CRDs (then wait Established), the rest."""
    exact, registries = ctx.profile.image_overrides, registry_overrides(ctx)
    for obj in objs:
        for old, new in rewrite_images(obj, exact, registries):
            ctx.say(component, f"{label}: image {old} -> {new} in {_ref(obj)}")
    namespaces, crds, rest = split_objects(objs)
    if namespace_first and not any(n["metadata"]["name"] == namespace_first for n in namespaces):
        namespaces.insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_first}})
    ctx.say(component, f"applying {label} ({len(objs)} objects)")

    def apply(obj: dict) -> None:
        obj, kept = keep_injected_ca_bundles(ctx, obj, deadline)
        if kept:
            ctx.say(component, f"{label}: {_ref(obj)} keeps its injected caBundle ({', '.join(kept)})")
        apply_object(ctx, obj, deadline, label)

    for obj in namespaces + crds:
        apply(obj)
    # A CRD whose conversion webhook gets its CA from cert-manager (KServe's InferenceService) is not Established
    # until the cainjector fills the caBundle ("InvalidCABundle"), and that needs the Certificate applied below:
    # wait for it after the rest, as one `kubectl apply -f` lets it settle.
    injected = [c for c in crds if awaits_ca_injection(c)]
    first = [c for c in crds if c not in injected]
    if first:
        ctx.say(component, f"{label}: waiting for {len(first)} CRDs to be Established")
        wait_crds_established(ctx, first, deadline, component)
    for obj in rest:
        apply(obj)
    if injected:
        ctx.say(component, f"{label}: waiting for {len(injected)} CRDs whose conversion webhook CA cert-manager "
                           f"injects to be Established")
        wait_crds_established(ctx, injected, deadline, component)
    return len(namespaces) + len(crds) + len(rest)


def awaits_ca_injection(crd: dict) -> bool:
    annotations = (crd.get("metadata") or {}).get("annotations") or {}
    conversion = (crd.get("spec") or {}).get("conversion") or {}
    return conversion.get("strategy") == "Webhook" and any(
        a in annotations for a in ("cert-manager.io/inject-ca-from", "cert-manager.io/inject-ca-from-secret"))


def manifest_label(manifest: dict) -> str:
    return os.path.basename(urllib.parse.urlsplit(manifest["url"]).path)


def apply_manifest(ctx: InstallContext, component: str, manifest: dict, deadline: Deadline) -> int:
    label = manifest_label(manifest)
    ctx.say(component, f"fetching {label}")
    objs, download = load_manifest(ctx, manifest)
    ctx.say(component, f"{label}: sha256 {download.sha256} ({'pinned, verified' if download.pinned else 'recorded'}"
                       f"{', from cache' if download.cached else ''})")
    wait_webhooks_admit(ctx, manifest.get("needs_webhooks") or [], deadline, component, f"applying {label}")
    return apply_objects(ctx, component, objs, deadline, label, manifest.get("namespace_first"))


def apply_patch(ctx: InstallContext, component: str, patch: dict, deadline: Deadline) -> dict:
    ref = f"{patch['kind'].lower()} {patch.get('namespace') + '/' if patch.get('namespace') else ''}{patch['name']}"
    wait_webhooks_admit(ctx, patch.get("needs_webhooks") or [], deadline, component, f"patching {ref}")
    ctx.say(component, f"patching {ref}")
    try:
        return _install_race(ctx, f"patch {ref}", lambda: ctx.kube.merge_patch(
            patch["apiVersion"], patch["kind"], patch["name"], patch.get("namespace"), patch["merge"],
            deadline=deadline), deadline)
    except KubeError as e:
        raise InstallError(f"{component}: patching {ref} failed: {e}") from e


# -- deleting -------------------------------------------------------------------------------------------------------
def delete_objects(ctx: InstallContext, component: str, objs: list[dict], label: str,
                   namespace_first: str | None = None) -> tuple[list[str], list[str]]:
    """Delete in reverse apply order (the rest, CRDs, Namespaces); the namespaces and CRDs deleted."""
    namespaces, crds, rest = split_objects(objs)
    ns_names = [n["metadata"]["name"] for n in namespaces]
    if namespace_first and namespace_first not in ns_names:
        ns_names.insert(0, namespace_first)
    deleted = 0
    for obj in reversed(rest):
        meta = obj.get("metadata") or {}
        try:
            res = ctx.kube.resource(obj["apiVersion"], obj["kind"])
        except NoSuchKind:
            continue      # its CRD is gone, and the object with it
        ns = meta.get("namespace") or ("default" if res.namespaced else None)
        if ns and ns in ns_names:
            continue      # goes with its namespace
        deleted += ctx.kube.delete(obj["apiVersion"], obj["kind"], meta["name"], ns)
    for crd in reversed(crds):
        deleted += ctx.kube.delete(CRD_API, CRD_KIND, crd["metadata"]["name"])
    for ns in reversed(ns_names):
        deleted += ctx.kube.delete("v1", "Namespace", ns)
    ctx.say(component, f"deleted {deleted} objects of {label}")
    return ns_names, [c["metadata"]["name"] for c in crds]


def delete_manifest(ctx: InstallContext, component: str, manifest: dict) -> tuple[list[str], list[str]]:
    objs, _ = load_manifest(ctx, manifest)
    return delete_objects(ctx, component, objs, manifest_label(manifest), manifest.get("namespace_first"))
