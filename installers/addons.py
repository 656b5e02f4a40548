"""Per-component behaviour that data alone does not express.

- cert-manager: ready() also passes the `cmctl check api` test (admission_probes: dry-run create of `admit` succeeds,
  `deny` is denied with `deny_pattern`), with cmctl's error translations.
- Istio: istiod (deployment + webhook Endpoints) before the gateway release: the sidecar injector that the gateway
  pod needs has failurePolicy Fail.
- Knative: the webhook Endpoints before the config-domain patch.
- KServe: serving-cert Ready, caBundle injected and webhook Endpoints before the runtimes file (and, through the
  Plan's readiness gate, before any InferenceService).
"""
from __future__ import annotations

import copy
import re

from installers.base import Addon, InstallContext, InstallError
from installers import helm
from stack import readiness, retry
from stack.kube import KubeError, NoSuchKind
from stack.profile import Component
from stack.wait import Deadline, Snapshot, Source, Status, TerminalState, WaitTimeout, wait_for

CMCTL_TRANSLATIONS = [
    (re.compile(r"x509: certificate signed by unknown authority|unable to load root certificates|"
                r"unable to parse bytes as PEM", re.I), "the cert-manager webhook CA bundle is not injected yet"),
    (re.compile(r"connection refused", re.I), "the cert-manager webhook deployment is not ready yet"),
    (re.compile(r'no endpoints available|service[s]? "[^"]*" not found', re.I),
     "the cert-manager webhook service is not created yet"),
    (re.compile(r"no matches for kind|could not find the requested resource|is not served", re.I),
     "the cert-manager CRDs are not yet installed on the Kubernetes API server"),
]


def wait_endpoints(ctx: InstallContext, component: str, refs: list[str], deadline: Deadline, why: str) -> None:
    if not refs:
        return

    def check(snap: Snapshot) -> Status:
        eps = {f"{o['metadata'].get('namespace')}/{o['metadata']['name']}": o for o in snap.items(0)}
        statuses = [readiness.endpoints_status(eps.get(r), r) for r in refs]
        pending = [s.observed for s in statuses if not s.done]
        return Status(not pending, "; ".join(pending or [s.observed for s in statuses]))

    ctx.say(component, f"waiting for endpoints {', '.join(refs)} before {why}")
    try:
        wait_for(ctx.kube, [Source("v1", "Endpoints")], check, deadline=deadline, describe=f"{component}: endpoints")
    except (WaitTimeout, TerminalState) as e:
        raise InstallError(str(e)) from None


class _NotYet(Exception):
    pass


class CertManagerAddon(Addon):
    def _probe_namespace(self, ctx: InstallContext) -> str:
        if ctx.kube.get("v1", "Namespace", "default") is not None:
            return "default"
        return self.namespaces[0]

    @staticmethod
    def translate(error: BaseException) -> str:
        text = str(error)
        for pattern, sentence in CMCTL_TRANSLATIONS:
            if pattern.search(text):
                return f"{sentence} ({text[:200]})"
        return text

    def _prepared(self, ctx: InstallContext, obj: dict, namespace: str) -> dict:
        obj = copy.deepcopy(obj)
        if ctx.kube.resource(obj["apiVersion"], obj["kind"]).namespaced:
            obj.setdefault("metadata", {})["namespace"] = namespace
        return obj

    def functional_check(self, ctx: InstallContext) -> list[str]:
        problems: list[str] = []
        if not self.component.admission_probes:
            return problems
        ns = self._probe_namespace(ctx)
        for probe in self.component.admission_probes:
            try:
                ctx.kube.create(self._prepared(ctx, probe["admit"], ns), dry_run=True)
            except (KubeError, NoSuchKind) as e:
                problems.append(f"{probe['webhook']}: dry-run create of {probe['admit']['kind']} failed: "
                                f"{self.translate(e)}")
                continue
            try:
                ctx.kube.create(self._prepared(ctx, probe["deny"], ns), dry_run=True)
                problems.append(f"{probe['webhook']}: the invalid {probe['deny']['kind']} was admitted "
                                "(the webhook is not serving yet)")
            except KubeError as e:
                if not re.search(probe["deny_pattern"], e.message or str(e)):
                    problems.append(f"{probe['webhook']}: the invalid {probe['deny']['kind']} was rejected, but not "
                                    f"by the webhook: {self.translate(e)}")
        return problems

    def wait_functional(self, ctx: InstallContext, deadline: Deadline) -> None:
        if not self.component.admission_probes:
            return
        ctx.say(self.name, "checking the cert-manager API (cmctl check api)")

        def attempt():
            problems = self.functional_check(ctx)
            if problems:
                raise _NotYet("; ".join(problems))

        try:
            retry.call(attempt, what="cert-manager API check", is_transient=lambda e: "not ready" if
                       isinstance(e, _NotYet) else None, attempts=10, deadline=deadline)
        except _NotYet as e:
            raise InstallError(f"cert-manager API check failed: {e}") from None
        ctx.say(self.name, "The cert-manager API is ready")


class IstioAddon(Addon):
    def before_release(self, ctx: InstallContext, release: dict, deadline: Deadline) -> None:
        if not (release["chart"].rstrip("/").endswith("gateway") or "gateway" in release["release"]):
            return
        istiod = [f"{d['namespace']}/{d['name']}" for d in self.component.inventory.get("deployments", [])
                  if d["name"] == "istiod" or d["name"].startswith("istiod-")]
        if istiod:
            helm.wait_ready_after(ctx, self.name, istiod, deadline)
        wait_endpoints(ctx, self.name, self.component.readiness_gates.get("endpoints", []), deadline,
                       f"the {release['release']} release (its pods need the sidecar injector)")


class KnativeAddon(Addon):
    def before_patches(self, ctx: InstallContext, deadline: Deadline) -> None:
        wait_endpoints(ctx, self.name, self.component.readiness_gates.get("endpoints", []), deadline, "patching")


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

