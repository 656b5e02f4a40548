"""Security facts of a live stack, each read from the API server (never from the profile's claims):

    secret_access(kube, namespace, service_account)   what the authorizer lets that ServiceAccount do with Secrets
                                                      there (SubjectAccessReview, as its token's groups would ask)
    stack_certificates(kube, profile, window)         every stack certificate's validity: cert-manager Certificates
                                                      in the stack's namespaces and the CAs in its webhooks' caBundles
    container_security(pod)                           what each container's securityContext allows (pod-level
                                                      settings inherited, as kubelet applies them)
"""
from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.checks import ADMISSION_API, CM_API, WEBHOOK_KINDS
from stack.durations import parse_time

if TYPE_CHECKING:
    from stack.kube import Kube
    from stack.profile import Profile

SECRET_VERBS = ("get", "list", "watch")


# -- RBAC ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AccessAnswer:
    verb: str
    allowed: bool
    reason: str          # the authorizer's own reason (which binding allowed it), "" when denied without one


def service_account_user(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user and groups the API server authenticates a ServiceAccount token as."""
    return (f"system:serviceaccount:{namespace}:{name}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"])


def secret_access(kube: Kube, namespace: str, service_account: str = "default") -> list[AccessAnswer]:
    """One SubjectAccessReview per verb on Secrets in `namespace`. The groups are sent as the token's would be:
    the authorizer only knows the groups a review names, and a binding to system:serviceaccounts is the usual leak."""
    user, groups = service_account_user(namespace, service_account)
    out = []
    for verb in SECRET_VERBS:
        review = kube.create({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
                              "spec": {"user": user, "groups": groups,
                                       "resourceAttributes": {"verb": verb, "resource": "secrets",
                                                              "namespace": namespace}}})
        status = review.get("status") or {}
        out.append(AccessAnswer(verb, bool(status.get("allowed")), status.get("reason") or ""))
    return out


# -- certificates ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertificateValidity:
    source: str                       # "Certificate kserve/serving-cert", "caBundle of ValidatingWebhookConfiguration x"
    subject: str
    not_after: datetime.datetime | None   # None: never issued
    must_last: datetime.timedelta     # what it must still have left
    why: str                          # where must_last comes from

    def remaining(self, now: datetime.datetime) -> datetime.timedelta | None:
        return None if self.not_after is None else self.not_after - now

    def problem(self, now: datetime.datetime) -> str | None:
        left = self.remaining(now)
        if left is None:
            return f"{self.source}: has no notAfter (never issued)"
        if left <= datetime.timedelta(0):
            return f"{self.source} ({self.subject}): expired at {format_time(self.not_after)}"
        if left < self.must_last:
            return (f"{self.source} ({self.subject}): expires at {format_time(self.not_after)}, in {format_days(left)}, within "
                    f"{format_days(self.must_last)} ({self.why})")
        return None


def format_time(t: datetime.datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


def format_days(d: datetime.timedelta) -> str:
    return f"{d.total_seconds() / 86400:.1f} days"


def stack_certificates(kube: Kube, profile: Profile, window: datetime.timedelta) -> list[CertificateValidity]:
    """cert-manager Certificates in the stack's namespaces (status.notAfter, as cert-manager records the issued
    certificate) and every CA certificate in the caBundles of the profile's webhook configurations (what the API server
    trusts when it calls a webhook). A webhook whose component rotates its own short-lived CA (Knative's, one week)
    must last what the profile says that rotation leaves, not the run's window."""
    window_why = f"the {window.total_seconds() / 86400:g}-day window (--cert-window-days)"
    out: list[CertificateValidity] = []
    if profile.has("cert-manager"):
        for ns in sorted({ns for c in profile.components.values() for ns in c.inventory.get("namespaces", [])}):
            items, _ = kube.list(CM_API, "Certificate", ns)
            for cert in items:
                meta, spec = cert["metadata"], cert.get("spec") or {}
                subject = ", ".join(spec.get("dnsNames") or []) or spec.get("commonName") or meta["name"]
                out.append(CertificateValidity(f"Certificate {ns}/{meta['name']}", subject,
                                               parse_time((cert.get("status") or {}).get("notAfter")), window,
                                               window_why))
    # One list per kind, not one get per configuration.
    configurations = {(kind, o["metadata"]["name"]): o for kind in WEBHOOK_KINDS
                      for o in kube.list(ADMISSION_API, kind)[0]}
    for component, webhook in profile.inventory("webhooks"):
        obj = configurations.get((webhook["kind"], webhook["name"]))
        if obj is None:
            continue    # a missing configuration is AC-WEBHOOKS' failure, not a certificate's
        rotation = profile.components[component].data.get("self_signed_rotation")
        must_last, why = window, window_why
        if rotation and webhook.get("ca") == "self":
            must_last, why = datetime.timedelta(hours=rotation["min_valid_hours"]), rotation["why"]
        bundles = dict.fromkeys((w.get("clientConfig") or {}).get("caBundle") or "" for w in obj.get("webhooks") or [])
        for bundle in bundles:
            for cert in _bundle_certificates(bundle):
                out.append(CertificateValidity(f"caBundle of {webhook['kind']} {webhook['name']}",
                                               cert.subject.rfc4514_string(), cert.not_valid_after_utc, must_last, why))
    return out


def _bundle_certificates(bundle_b64: str) -> list:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificates(base64.b64decode(bundle_b64))
    except ValueError:
        return []      # not PEM: AC-WEBHOOKS' caBundle check names that


# -- predictor pods --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerSecurity:
    container: str
    run_as_non_root: bool
    allow_privilege_escalation: bool
    privileged: bool

    def problems(self) -> list[str]:
        out = []
        if not self.run_as_non_root:
            out.append("may run as root (runAsNonRoot is not true, and runAsUser is unset or 0)")
        if self.allow_privilege_escalation:
            out.append("allows privilege escalation (allowPrivilegeEscalation is not false)")
        if self.privileged:
            out.append("is privileged")
        return out


def container_security(pod: dict) -> list[ContainerSecurity]:
    """Each container's effective settings, init containers first (KServe's storage-initializer is one, and a
    restricted Pod Security admission judges them all): its own securityContext, else the pod's (runAsNonRoot,
    runAsUser). An unset allowPrivilegeEscalation means true for a process that is not PR_SET_NO_NEW_PRIVS
    (Kubernetes' default)."""
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    out = []
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        ctx = c.get("securityContext") or {}
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        out.append(ContainerSecurity(c["name"], bool(non_root) or (user is not None and user != 0),
                                     ctx.get("allowPrivilegeEscalation") is not False, bool(ctx.get("privileged"))))
    return out
