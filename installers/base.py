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

from stack import checks, diagnostics
from stack.checks import Check, all_of
from stack.failures import Category, CheckFailure
from stack.kube import Kube
from stack.profile import Component, Profile
from stack.snapshot import Status
from stack.versions import running_version
from stack.wait import Deadline, look, wait_for

MODES = ("auto", "always", "never")
DEFAULT_CACHE_DIR = Path("~/.cache/kstack/manifests")


class InstallError(Exception):
    """An install step that failed, as a sentence naming the component, the step and the cause.

    `category` is the category of the cause (a CRD that never became Established: CRD); the Plan fills in the
    component, the step and the type of the original error."""

    def __init__(self, message: str, *, category: Category | None = None, component: str | None = None,
                 step: str | None = None, error_type: str | None = None):
        super().__init__(message)
        self.category, self.component, self.step, self.error_type = category, component, step, error_type


@dataclass
class Download:
    url: str                 # the URL in the profile
    sha256: str
    pinned: bool             # True when checked against the profile's sha256
    source: str = ""         # where it was fetched from (the mirror URL when a mirror is set)
    cached: bool = False     # served from the cache dir this time


def _print_progress(message: str) -> None:
    print(message, flush=True)


def _no_phase(name: str, seconds: float, budget: float, error: BaseException | None = None) -> None:
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
    # (name, seconds, budget[, error]): a timed phase; with `error`, one that raised it before it finished
    phase: Callable[..., None] = _no_phase
    cache_dir: Path | None = None                       # default: $KSTACK_CACHE_DIR or ~/.cache/kstack/manifests
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    downloads: list[Download] = field(default_factory=list)   # filled by manifest fetches
    fetches: list[str] = field(default_factory=list)          # every network fetch of this install (not cache hits)
    deadline: Deadline | None = None                    # the one install deadline; set by Plan.install
    step: str = ""                                      # the step under way, for the record of a failure

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


def gate(ctx: InstallContext, check: Check | None, deadline: Deadline, describe: str | None = None) -> None:
    """Wait for a check as an install gate: its failure is an InstallError carrying the check's category."""
    if check is None:
        return
    try:
        wait_for(ctx.kube, check, deadline, describe)
    except CheckFailure as e:
        raise InstallError(e.text, category=e.category) from e


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
        out += [w.namespace for w in self.component.workloads]
        out += [r["namespace"] for r in self.component.helm_releases]
        return list(dict.fromkeys(out))

    # -- version ---------------------------------------------------------------------------------------------------
    def installed_version(self, ctx: InstallContext) -> str | None:
        """The running version per the profile's version_probe, normalised ("v1.11.0"); None when absent."""
        return running_version(ctx.kube, self.component.version_probe)

    # -- install ---------------------------------------------------------------------------------------------------
    def install(self, ctx: InstallContext) -> None:
        from installers import helm, manifests   # noqa: PLC0415 - the modules import this one
        deadline = ctx.current_deadline()
        for release in self.component.helm_releases:
            ctx.step = f"helm release {release['release']}"
            self.before_release(ctx, release, deadline)
            helm.install_release(ctx, self.name, release, deadline)
        for index, manifest in enumerate(self.component.manifests):
            ctx.step = f"manifest {manifests.manifest_label(manifest)}"
            self.before_manifest(ctx, index, manifest, deadline)
            manifests.apply_manifest(ctx, self.name, manifest, deadline)
        if self.component.patches:
            ctx.step = "before patches"
            self.before_patches(ctx, deadline)
        for patch in self.component.patches:
            ctx.step = f"patch {patch['kind'].lower()} {patch['name']}"
            manifests.apply_patch(ctx, self.name, patch, deadline)

    # Hooks for per-component ordering (installers/addons.py).
    def before_release(self, ctx: InstallContext, release: dict, deadline: Deadline) -> None:
        pass

    def before_manifest(self, ctx: InstallContext, index: int, manifest: dict, deadline: Deadline) -> None:
        pass

    def before_patches(self, ctx: InstallContext, deadline: Deadline) -> None:
        pass

    # -- readiness -------------------------------------------------------------------------------------------------
    def readiness_check(self, ctx: InstallContext, functional: bool = True) -> Check:
        """The component's readiness from its inventory and readiness gates (the builders the suites use too), and
        with `functional` the component's functional probes."""
        comp, gates = self.component, self.component.readiness_gates
        parts = [checks.workloads(comp.workloads, name=f"{self.name} workloads") if comp.workloads else None,
                 checks.crds(comp.inventory["crds"], name=f"{self.name} CRDs") if comp.inventory.get("crds") else None,
                 checks.certificates(gates["certificates"]) if gates.get("certificates") else None,
                 checks.webhook_ca_bundles([(None, n) for n in gates["ca_bundles"]]) if gates.get("ca_bundles") else None,
                 checks.endpoints(gates["endpoints"]) if gates.get("endpoints") else None]
        if functional:
            parts += self.functional_checks(ctx)
        if not any(parts):
            return Check(f"{self.name} ready", Category.NOT_READY)
        return all_of(*parts, name=f"{self.name} ready")

    def functional_checks(self, ctx: InstallContext) -> list[Check]:
        """Checks beyond object state (cert-manager's API check)."""
        return []

    def ready(self, ctx: InstallContext) -> Status:
        """One look at the cluster (non-blocking): done, or what is still pending and how it looks now."""
        status, _ = look(ctx.kube, self.readiness_check(ctx), ctx.current_deadline())
        return status

    def wait_ready(self, ctx: InstallContext, deadline: Deadline, functional: bool = True) -> None:
        """Block until ready() would be true, watching the objects it looks at, under the shared deadline."""
        ctx.step = "readiness"
        try:
            wait_for(ctx.kube, self.readiness_check(ctx, functional), deadline, f"{self.name} ready")
        except CheckFailure as e:
            raise InstallError(f"{self.name} did not become ready: {e.text}", category=e.category) from e

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
        refs = [("v1", "Namespace", n) for n in namespaces] + [(checks.CRD_API, checks.CRD_KIND, c) for c in crds]
        gate(ctx, checks.absent(refs, name=f"{self.name} deleted"), Deadline(ctx.install_budget(), f"delete {self.name}"))

    # -- diagnostics -----------------------------------------------------------------------------------------------
    def diagnostics(self, ctx: InstallContext) -> list[diagnostics.Attachment]:
        return diagnostics.collect(ctx.kube, namespaces=self.namespaces)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.component.version}>"

