"""Per-component behaviour that data alone does not express.

- cert-manager: ready() also passes the `cmctl check api` test (admission_probes: dry-run create of `admit` succeeds,
  `deny` is denied with `deny_pattern`): the same admission_probe check the webhook suite runs.
- Istio: istiod (deployment + webhook Endpoints) before the gateway release: the sidecar injector that the gateway
  pod needs has failurePolicy Fail.
- Knative: the webhook Endpoints before the config-domain patch.
- KServe: serving-cert Ready, caBundle injected and webhook Endpoints before the runtimes file (and, through the
  Plan's readiness gate, before any InferenceService).
"""
from __future__ import annotations

from installers import helm
from installers.base import Addon
from installers.context import InstallContext, gate
from stack import checks
from stack.checks import Check, all_of
from stack.profile import Component
from stack.deadline import Deadline


class CertManagerAddon(Addon):
    def functional_checks(self, ctx: InstallContext) -> list[Check]:
        """`cmctl check api`: the admission probes of the profile, in "default" (or the component's namespace)."""
        ns = "default" if ctx.kube.get("v1", "Namespace", "default") is not None else self.namespaces[0]
        return [checks.admission_probe(probe, ns) for probe in self.component.admission_probes]


class IstioAddon(Addon):
    def before_release(self, ctx: InstallContext, release: dict, deadline: Deadline) -> None:
        if not (release["chart"].rstrip("/").endswith("gateway") or "gateway" in release["release"]):
            return
        istiod = [f"{w.namespace}/{w.name}" for w in self.component.workloads
                  if w.name == "istiod" or w.name.startswith("istiod-")]
        endpoints = self.component.readiness_gates.get("endpoints", [])
        parts = [helm.ready_after_check(self.name, istiod) if istiod else None,
                 checks.endpoints(endpoints) if endpoints else None]
        if any(parts):
            ctx.say(self.name, f"waiting for {', '.join(istiod + endpoints)} before the {release['release']} release "
                               "(its pods need the sidecar injector)")
            gate(ctx, all_of(*parts, name=f"{self.name}: istiod before {release['release']}"), deadline)


class KnativeAddon(Addon):
    def before_patches(self, ctx: InstallContext, deadline: Deadline) -> None:
        endpoints = self.component.readiness_gates.get("endpoints", [])
        if endpoints:
            ctx.say(self.name, f"waiting for endpoints {', '.join(endpoints)} before patching")
            gate(ctx, checks.endpoints(endpoints, name=f"{self.name}: endpoints"), deadline)


class KServeAddon(Addon):
    def before_manifest(self, ctx: InstallContext, index: int, manifest: dict, deadline: Deadline) -> None:
        if index == 0:
            return
        probe = self.component.version_probe
        if ctx.kube.get("apps/v1", "Deployment", probe["deployment"], probe["namespace"]) is None:
            return      # the controller comes with this file
        ctx.say(self.name, "waiting for the controller, serving-cert, caBundle and webhook Endpoints before "
                           f"{manifest['url'].rsplit('/', 1)[-1]}")
        self.wait_ready(ctx, deadline, functional=False)


ADDONS: dict[str, type[Addon]] = {
    "cert-manager": CertManagerAddon,
    "istio": IstioAddon,
    "knative": KnativeAddon,
    "kserve": KServeAddon,
}


def addon_for(component: Component) -> Addon:
    return ADDONS.get(component.name, Addon)(component)

