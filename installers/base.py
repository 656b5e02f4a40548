"""The Addon contract (one per component, Kong KTF shape), the InstallContext every step receives, and the generic
profile-driven Addon that installs a component from its helm releases, release manifests and patches.

Components differ by data (profile `install`, `inventory`, `readiness_gates`, `version_probe`); the few behaviours
that really differ live in installers/addons.py.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from stack import diagnostics, readiness
from stack.kube import Kube, NoSuchKind
from stack.profile import Component, Profile
from stack.versions import running_version
from stack.wait import Deadline, Snapshot, Source, Status, TerminalState, WaitTimeout, wait_for

MODES = ("auto", "always", "never")
DEFAULT_CACHE_DIR = Path("~/.cache/kstack/manifests")


class InstallError(Exception):
    """An install step that failed, as a sentence naming the component, the step and the cause."""


@dataclass
class Readiness:
    ready: bool
    pending: list[str] = field(default_factory=list)   # last observed state of each pending object
    terminal: str | None = None                         # a pending state that waiting cannot fix

    def __bool__(self) -> bool:
        return self.ready


@dataclass
class Download:
    url: str                 # the URL in the profile
    sha256: str
    pinned: bool             # True when checked against the profile's sha256
    source: str = ""         # where it was fetched from (the mirror URL when a mirror is set)
    cached: bool = False     # served from the cache dir this time

    def to_dict(self) -> dict:
        return {"url": self.url, "sha256": self.sha256, "pinned": self.pinned}


def _print_progress(message: str) -> None:
    print(message, flush=True)


def _no_phase(name: str, seconds: float, budget: float) -> None:
    pass


@dataclass
class InstallContext:
    kube: Kube
    profile: Profile
    mode: str = "auto"                                  # auto | always | never
    timeout_scale: float = 1.0
    kubeconfig: str | Path | None = None                # for helm; default: the Kube's kubeconfig
    context: str | None = None                          # for helm; default: the Kube's context
    progress: Callable[[str], None] = _print_progress
    phase: Callable[[str, float, float], None] = _no_phase
    cache_dir: Path | None = None                       # default: $KSTACK_CACHE_DIR or ~/.cache/kstack/manifests
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    downloads: list[Download] = field(default_factory=list)   # filled by manifest fetches
    deadline: Deadline | None = None                    # the one install deadline; set by Plan.install

    def __post_init__(self):
        if self.mode not in MODES:
            raise InstallError(f"install mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.kubeconfig is None:
            self.kubeconfig = self.kube.kubeconfig
        if self.context is None:
            self.context = self.kube.context
        if self.cache_dir is None:
            self.cache_dir = Path(self.env.get("KSTACK_CACHE_DIR") or DEFAULT_CACHE_DIR)
        self.cache_dir = Path(self.cache_dir).expanduser()
        self._started = time.monotonic()

    def install_budget(self) -> float:
        return float(self.profile.budgets["install"]) * self.timeout_scale

    def current_deadline(self) -> Deadline:
        if self.deadline is None:
            self.deadline = Deadline(self.install_budget(), "install")
        return self.deadline

    def say(self, component: str, message: str) -> None:
        """Progress line: "[kserve 12.3s] applying kserve.yaml (52 objects)" (seconds since the install started)."""
        self.progress(f"[{component} {time.monotonic() - self._started:.1f}s] {message}")


def split_ref(ref: str) -> tuple[str | None, str]:
    """'NS/NAME' -> (NS, NAME); 'NAME' -> (None, NAME)."""
    ns, _, name = ref.rpartition("/")
    return (ns or None), name


WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
ADMISSION_API = "admissionregistration.k8s.io/v1"


def _items_by_key(snap: Snapshot, index: int) -> dict[str, dict]:
    return {f"{o['metadata'].get('namespace', '') or ''}/{o['metadata']['name']}": o for o in snap.items(index)}


def webhooks_admit_status(configs: list[dict], endpoints: dict[str, dict], names: list[str]) -> Status:
    """Whether the named webhook configurations (validating and/or mutating) admit: they exist, their caBundle is
    injected and valid, and the Endpoints of every backing Service have a ready address."""
    pending, seen = [], []
    for name in names:
        cfgs = [c for c in configs if c["metadata"]["name"] == name]
        if not cfgs:
            pending.append(f"webhook configuration {name} absent")
            continue
        for cfg in cfgs:
            ref = f"{cfg.get('kind', 'webhook configuration')} {name}"
            st = readiness.webhook_config_status(cfg, ref)
            (seen if st.done else pending).append(st.observed)
            for svc_ref in sorted({f"{(h.get('clientConfig') or {}).get('service', {}).get('namespace')}/"
                                   f"{(h.get('clientConfig') or {}).get('service', {}).get('name')}"
                                   for h in cfg.get("webhooks") or [] if (h.get("clientConfig") or {}).get("service")}):
                ep = readiness.endpoints_status(endpoints.get(svc_ref), svc_ref)
                (seen if ep.done else pending).append(ep.observed)
    return Status(not pending, "; ".join(pending or seen) or "no webhooks named")


class Addon:
    """One component of the stack, driven by its profile section."""

    def __init__(self, component: Component):
        self.component = component
        self.name = component.name

    # -- data ------------------------------------------------------------------------------------------------------
    @property
    def namespaces(self) -> list[str]:
        inv = self.component.inventory
        out = list(inv.get("namespaces", []))
        for key in ("deployments", "daemonsets"):
            out += [w["namespace"] for w in inv.get(key, [])]
        out += [r["namespace"] for r in self.component.helm_releases]
        return list(dict.fromkeys(out))

    def _workloads(self) -> list[tuple[str, str, str]]:
        inv = self.component.inventory
        return [("Deployment", w["namespace"], w["name"]) for w in inv.get("deployments", [])] + \
               [("DaemonSet", w["namespace"], w["name"]) for w in inv.get("daemonsets", [])]

    # -- version ---------------------------------------------------------------------------------------------------
    def installed_version(self, ctx: InstallContext) -> str | None:
        """The running version per the profile's version_probe, normalised ("v1.11.0"); None when absent."""
        return running_version(ctx.kube, self.component.version_probe)

    # -- install ---------------------------------------------------------------------------------------------------
    def install(self, ctx: InstallContext) -> None:
        from installers import helm, manifests   # noqa: PLC0415 - the modules import this one
        deadline = ctx.current_deadline()
        for release in self.component.helm_releases:
            self.before_release(ctx, release, deadline)
            helm.install_release(ctx, self.name, release, deadline)
        for index, manifest in enumerate(self.component.manifests):
            self.before_manifest(ctx, index, manifest, deadline)
            manifests.apply_manifest(ctx, self.name, manifest, deadline)
        if self.component.patches:
            self.before_patches(ctx, deadline)
        for patch in self.component.patches:
            manifests.apply_patch(ctx, self.name, patch, deadline)

    # Hooks for per-component ordering (installers/addons.py).
    def before_release(self, ctx: InstallContext, release: dict, deadline: Deadline) -> None:
        pass

    def before_manifest(self, ctx: InstallContext, index: int, manifest: dict, deadline: Deadline) -> None:
        pass

    def before_patches(self, ctx: InstallContext, deadline: Deadline) -> None:
        pass

    # -- readiness -------------------------------------------------------------------------------------------------
    def readiness_sources(self, ctx: InstallContext, functional: bool = True) -> list[Source]:
        """What ready() looks at, as wait sources (listed once by ready(), watched by wait_ready())."""
        srcs: list[Source] = []
        ns_list = list(dict.fromkeys(ns for _, ns, _ in self._workloads()))
        for ns in ns_list:
            srcs += readiness.workload_sources(ns)
        srcs.append(Source("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        gates = self.component.readiness_gates
        if gates.get("endpoints"):
            srcs.append(Source("v1", "Endpoints"))
        if gates.get("ca_bundles"):
            srcs += [Source(ADMISSION_API, k) for k in WEBHOOK_KINDS]
        if gates.get("certificates"):
            srcs.append(Source("cert-manager.io/v1", "Certificate"))
        return srcs

    def evaluate(self, snap: Snapshot, sources: list[Source]) -> Readiness:
        """Readiness from a snapshot of readiness_sources()."""
        pending: list[str] = []
        terminal = None
        idx = {}
        for i, s in enumerate(sources):
            idx.setdefault((s.kind, s.namespace), i)
        # workloads, grouped by namespace as readiness.workloads_check expects
        by_ns: dict[str, list[tuple[str, str, str]]] = {}
        for w in self._workloads():
            by_ns.setdefault(w[1], []).append(w)
        for ns, items in by_ns.items():
            start = idx[("Deployment", ns)]
            sub = Snapshot(snap.objects[start:start + 3])
            for w in items:
                st = readiness.workloads_check([w])(sub)
                if not st.done:
                    pending.append(st.observed)
                    terminal = terminal or st.terminal
        crds = _items_by_key(snap, idx[("CustomResourceDefinition", None)])
        for crd in self.component.inventory.get("crds", []):
            st = readiness.crd_status(crds.get(f"/{crd['name']}"), crd["name"], crd.get("versions"))
            if not st.done:
                pending.append(st.observed)
        gates = self.component.readiness_gates
        if gates.get("certificates"):
            certs = _items_by_key(snap, idx[("Certificate", None)])
            for ref in gates["certificates"]:
                st = readiness.certificate_status(certs.get(ref), ref)
                if not st.done:
                    pending.append(st.observed)
        if gates.get("ca_bundles"):
            configs = snap.items(idx[(WEBHOOK_KINDS[0], None)]) + snap.items(idx[(WEBHOOK_KINDS[1], None)])
            for name in gates["ca_bundles"]:
                cfgs = [c for c in configs if c["metadata"]["name"] == name]
                if not cfgs:
                    pending.append(f"webhook configuration {name} absent")
                for c in cfgs:
                    st = readiness.webhook_config_status(c, f"{c.get('kind', '')} {name}".strip())
                    if not st.done:
                        pending.append(st.observed)
        if gates.get("endpoints"):
            eps = _items_by_key(snap, idx[("Endpoints", None)])
            for ref in gates["endpoints"]:
                st = readiness.endpoints_status(eps.get(ref), ref)
                if not st.done:
                    pending.append(st.observed)
        return Readiness(not pending, pending, terminal)

    def functional_check(self, ctx: InstallContext) -> list[str]:
        """Checks beyond object state (cert-manager's API check); sentences of what fails. One attempt."""
        return []

    def wait_functional(self, ctx: InstallContext, deadline: Deadline) -> None:
        """Wait until functional_check passes (bounded retries on known race signatures)."""

    def _snapshot_once(self, ctx: InstallContext, sources: list[Source]) -> tuple[Snapshot, list[str]]:
        snap, missing = Snapshot([]), []
        for s in sources:
            try:
                items, _ = ctx.kube.list(s.api_version, s.kind, s.namespace)
            except NoSuchKind:
                items = []
                missing.append(f"{s.kind} ({s.api_version}) is not served: its CRD is not installed")
            snap.objects.append({f"{o['metadata'].get('namespace', '') or ''}/{o['metadata']['name']}": o
                                 for o in items})
        return snap, missing

    def ready(self, ctx: InstallContext) -> Readiness:
        """One look at the cluster (non-blocking)."""
        sources = self.readiness_sources(ctx)
        snap, missing = self._snapshot_once(ctx, sources)
        r = self.evaluate(snap, sources)
        r.pending = list(dict.fromkeys(missing + r.pending))
        r.ready = not r.pending
        if r.ready:
            problems = self.functional_check(ctx)
            if problems:
                return Readiness(False, problems)
        return r

    def wait_ready(self, ctx: InstallContext, deadline: Deadline, functional: bool = True) -> None:
        """Block until ready() would be true, watching the objects it looks at, under the shared deadline."""
        sources = self.readiness_sources(ctx)
        unserved = [s for s in sources if not ctx.kube.serves(s.api_version, s.kind)]
        if unserved:
            raise InstallError(f"{self.name}: cannot check readiness: "
                               + "; ".join(f"{s.kind} ({s.api_version}) is not served" for s in unserved))

        def check(snap: Snapshot) -> Status:
            r = self.evaluate(snap, sources)
            return Status(r.ready, "; ".join(r.pending) or "ready", r.terminal)

        try:
            wait_for(ctx.kube, sources, check, deadline=deadline, describe=f"{self.name} ready")
        except (WaitTimeout, TerminalState) as e:
            raise InstallError(f"{self.name} did not become ready: {e}") from None
        if functional:
            self.wait_functional(ctx, deadline)

    # -- delete ----------------------------------------------------------------------------------------------------
    def delete(self, ctx: InstallContext) -> None:
        """Remove what install created (the objects of its manifests and releases), nothing else; idempotent."""
        from installers import helm, manifests   # noqa: PLC0415
        gone_namespaces: list[str] = []
        gone_crds: list[str] = []
        for manifest in reversed(self.component.manifests):
            ns, crds = manifests.delete_manifest(ctx, self.name, manifest)
            gone_namespaces += ns
            gone_crds += crds
        for release in reversed(self.component.helm_releases):
            helm.uninstall_release(ctx, self.name, release)
        # helm uninstall leaves the namespaces that --create-namespace made; install created them, so delete removes them.
        for ns in dict.fromkeys(r["namespace"] for r in reversed(self.component.helm_releases)
                                if r.get("create_namespace")):
            if ctx.kube.delete("v1", "Namespace", ns):
                ctx.say(self.name, f"deleted namespace {ns}")
            gone_namespaces.append(ns)
        self._wait_gone(ctx, gone_namespaces, gone_crds)

    def _wait_gone(self, ctx: InstallContext, namespaces: list[str], crds: list[str]) -> None:
        if not namespaces and not crds:
            return
        sources = [Source("v1", "Namespace"), Source("apiextensions.k8s.io/v1", "CustomResourceDefinition")]

        def check(snap: Snapshot) -> Status:
            left = [f"namespace {n}" for n in namespaces if f"/{n}" in snap.objects[0]] + \
                   [f"CRD {c}" for c in crds if f"/{c}" in snap.objects[1]]
            return Status(not left, "still present: " + ", ".join(left) if left else "all gone")

        deadline = Deadline(ctx.install_budget(), f"delete {self.name}")
        try:
            wait_for(ctx.kube, sources, check, deadline=deadline, describe=f"{self.name} deleted")
        except WaitTimeout as e:
            raise InstallError(str(e)) from None

    # -- diagnostics -----------------------------------------------------------------------------------------------
    def diagnostics(self, ctx: InstallContext) -> list[diagnostics.Attachment]:
        return diagnostics.collect(ctx.kube, namespaces=self.namespaces)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.component.version}>"

