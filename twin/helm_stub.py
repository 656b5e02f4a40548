"""A stand-in `helm` CLI for the twin: `python -m twin.helm_stub <helm args>`.

- Every invocation appends {"argv": [...], "values": {file: parsed YAML}} as one JSON line to $KSTACK_HELM_LOG.
- `helm version --short` prints a v3 version.
- `helm upgrade --install RELEASE CHART ... --namespace NS --kubeconfig P --kube-context C` server-side applies (field
  manager "helm") the objects of the release, from the profile at $KSTACK_TWIN_PROFILE: the component owning RELEASE
  contributes `twin.seed.inventory_objects`, split per release: an object goes to a later release whose name equals
  the object's name (istiod, istio-ingressgateway) or the name of the Service its webhooks call; everything else
  (Namespaces, CRDs, ...) to the component's first release. A component with one release gets all its objects.
- `helm uninstall RELEASE` deletes the release's objects except Namespaces (helm leaves those), or fails with
  helm's "release: not found" when none of them exist.

`write_helm_shim(directory)` writes an executable `helm` there; put the directory first on PATH.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSION = "v3.16.3+g0twin00"
FIELD_MANAGER = "helm"


def write_helm_shim(directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "helm"
    path.write_text("#!/bin/sh\n"
                    f'PYTHONPATH="{REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m twin.helm_stub "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _opts(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Positional args and options (flags without a value map to [""])."""
    with_value = {"--repo", "--version", "--namespace", "-n", "--timeout", "--kubeconfig", "--kube-context", "-f",
                  "--values", "--set"}
    pos, opts, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            if "=" in a:
                k, v = a.split("=", 1)
                opts.setdefault(k, []).append(v)
            elif a in with_value and i + 1 < len(args):
                opts.setdefault(a, []).append(args[i + 1])
                i += 1
            else:
                opts.setdefault(a, []).append("")
        else:
            pos.append(a)
        i += 1
    return pos, opts


def _log(argv: list[str], opts: dict[str, list[str]]) -> None:
    target = os.environ.get("KSTACK_HELM_LOG")
    if not target:
        return
    values = {}
    for f in opts.get("-f", []) + opts.get("--values", []):
        try:
            values[f] = yaml.safe_load(Path(f).read_text())
        except (OSError, yaml.YAMLError) as e:
            values[f] = f"(unreadable: {e})"
    with open(target, "a") as out:
        out.write(json.dumps({"argv": argv, "values": values}) + "\n")


def release_objects(profile, release: str) -> tuple[object, list[dict]]:
    from twin.seed import inventory_objects
    from twin.upstream import release_crds
    for comp in profile.install_order():
        releases = [r["release"] for r in comp.helm_releases]
        if release not in releases:
            continue
        objs = inventory_objects(profile, comp.name)
        spec = next(r for r in comp.helm_releases if r["release"] == release)
        real = release_crds(release, str(spec.get("version", "")))
        if real:   # the chart's own CRDs replace the synthesised ones
            objs = [o for o in objs if o["kind"] != "CustomResourceDefinition"] + real
        if len(releases) == 1:
            return comp, objs
        later = releases[1:]

        def owner(obj: dict) -> str:
            name = (obj.get("metadata") or {}).get("name", "")
            if name in later:
                return name
            for hook in obj.get("webhooks") or []:
                svc = ((hook.get("clientConfig") or {}).get("service") or {}).get("name")
                if svc in later:
                    return svc
            return releases[0]

        return comp, [o for o in objs if owner(o) == release]
    raise SystemExit(f"Error: twin helm stub: no component of {os.environ.get('KSTACK_TWIN_PROFILE')} "
                     f"has a release named {release}")


def _client(opts: dict[str, list[str]]):
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient
    kubeconfig = (opts.get("--kubeconfig") or [os.environ.get("KUBECONFIG", "")])[-1] or None
    context = (opts.get("--kube-context") or [None])[-1]
    from twin.standins.runtime import discovery_cache_file
    return DynamicClient(config.new_client_from_config(config_file=kubeconfig, context=context),
                         cache_file=discovery_cache_file("helm"))


def _resource(dyn, obj: dict):
    from stack.kube import find_resource
    return find_resource(dyn, obj["apiVersion"], obj["kind"])


def _profile():
    from stack.profile import Profile
    path = os.environ.get("KSTACK_TWIN_PROFILE")
    if not path:
        raise SystemExit("Error: twin helm stub: KSTACK_TWIN_PROFILE is not set")
    return Profile.load(path)


def upgrade(pos: list[str], opts: dict[str, list[str]]) -> int:
    from kubernetes.client.rest import ApiException
    release, chart = pos[2], pos[3]
    namespace = (opts.get("--namespace") or opts.get("-n") or ["default"])[-1]
    _, objs = release_objects(_profile(), release)
    dyn = _client(opts)
    core = _resource(dyn, {"apiVersion": "v1", "kind": "Namespace"})
    if "--create-namespace" in opts:
        core.server_side_apply(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                               name=namespace, field_manager=FIELD_MANAGER, force_conflicts=True)
    for obj in objs:
        res = _resource(dyn, obj)
        meta = obj["metadata"]
        ns = meta.get("namespace") or (namespace if res.namespaced else None)
        if ns and res.namespaced:
            meta["namespace"] = ns
        try:
            res.server_side_apply(body=obj, name=meta["name"], namespace=ns, field_manager=FIELD_MANAGER,
                                  force_conflicts=True)
        except ApiException as e:
            try:
                message = json.loads(e.body).get("message", e.body)
            except (TypeError, ValueError):
                message = e.body or e.reason
            print(f"Error: UPGRADE FAILED: {obj['kind']} {meta['name']}: {message}", file=sys.stderr)
            return 1
    print(f'Release "{release}" has been upgraded. Happy Helming!\nNAME: {release}\nNAMESPACE: {namespace}\n'
          f"STATUS: deployed\nCHART: {chart}")
    return 0


def uninstall(pos: list[str], opts: dict[str, list[str]]) -> int:
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    release = pos[1]
    namespace = (opts.get("--namespace") or opts.get("-n") or ["default"])[-1]
    _, objs = release_objects(_profile(), release)
    dyn = _client(opts)
    deleted = 0
    for obj in reversed(objs):
        if obj["kind"] == "Namespace":
            continue
        try:
            res = _resource(dyn, obj)
        except ResourceNotFoundError:
            continue
        ns = obj["metadata"].get("namespace") or (namespace if res.namespaced else None)
        try:
            res.delete(name=obj["metadata"]["name"], namespace=ns)
            deleted += 1
        except ApiException as e:
            if e.status != 404:
                print(f"Error: uninstall: {e.reason}", file=sys.stderr)
                return 1
    if not deleted:
        print(f"Error: uninstall: Release not loaded: {release}: release: not found", file=sys.stderr)
        return 1
    print(f'release "{release}" uninstalled')
    return 0


def main(argv: list[str]) -> int:
    pos, opts = _opts(argv)
    _log(argv, opts)
    if pos[:1] == ["version"]:
        print(VERSION if "--short" in opts else f'version.BuildInfo{{Version:"{VERSION.split("+")[0]}"}}')
        return 0
    if pos[:1] == ["upgrade"] and "--install" in opts and len(pos) >= 3:
        return upgrade(["upgrade", "install"] + pos[1:], opts)
    if pos[:1] in (["uninstall"], ["delete"]) and len(pos) >= 2:
        return uninstall(pos, opts)
    print(f"Error: twin helm stub: unsupported command: helm {' '.join(argv)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
