"""The Addon contract (one per component, Kong KTF shape) and the generic profile-driven Addon that installs a
component from its helm releases, release manifests, the profile's own objects and patches (the InstallContext every step receives is
installers/context.py).

Components differ by data (profile `install`, `inventory`, `readiness_gates`, `version_probe`); the few behaviours
that really differ live in installers/addons.py.
"""
from __future__ import annotations

import copy

from installers import helm, manifests
from installers.context import InstallContext, InstallError, gate
from stack import checks, diagnostics
from stack.checks import Check, all_of
from stack.failures import Category, CheckFailure
from stack.profile import Component
from stack.snapshot import Status
from stack.versions import running_version
from stack.deadline import Deadline
from stack.wait import look, wait_for


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
        deadline = ctx.current_deadline()
        for release in self.component.helm_releases:
            ctx.step = f"helm release {release['release']}"
            self.before_release(ctx, release, deadline)
            helm.install_release(ctx, self.name, release, deadline)
        for index, manifest in enumerate(self.component.manifests):
            ctx.step = f"manifest {manifests.manifest_label(manifest)}"
            self.before_manifest(ctx, index, manifest, deadline)
            manifests.apply_manifest(ctx, self.name, manifest, deadline)
        if self.component.objects:
            ctx.step = "the profile's objects"
            manifests.apply_objects(ctx, self.name, copy.deepcopy(self.component.objects), deadline,
                                    "the profile's objects")
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
        gone_namespaces: list[str] = []
        gone_crds: list[str] = []
        if self.component.objects:
            manifests.delete_objects(ctx, self.name, copy.deepcopy(self.component.objects), "the profile's objects")
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

