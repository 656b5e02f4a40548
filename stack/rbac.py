"""The suite's own least-privilege identity: the permissions `--cluster existing --install never` needs, read from the
ONE place they are written (deploy/rbac/verifier.yaml), asked of the API server before any check runs, and the
workspace role bound in each test namespace.

    Manifest.load()                      the shipped roles, their rules as Permissions
    needed(manifest, profile)            what the checks of a profile need: cluster-wide, and in each test namespace
    review(kube, profile)                a Review: who this identity is, what it lacks (SelfSubjectAccessReview), and
                                         whether the workspace role must be bound per test namespace
    bind_workspace(kube, ns, grant)      that RoleBinding, once the authorizer honours it
    python -m stack.rbac kubeconfig ...  mint a kubeconfig for the verifier ServiceAccount (TokenRequest API)
    python -m stack.rbac apply ...       apply the shipped manifest (what `kubectl apply -f` does)
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from stack import retry
from stack.kube import Forbidden, KubeError
from stack.record import WorkspaceGrant

from stack.deadline import Deadline

if TYPE_CHECKING:
    from stack.kube import Kube
    from stack.profile import Profile

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "rbac" / "verifier.yaml"
GUARD = ROOT / "deploy" / "rbac" / "verifier-guard.yaml"
VERIFIER_ROLE = "kstack-verifier"
WORKSPACE_ROLE = "kstack-verifier-workspace"
RBAC_API = "rbac.authorization.k8s.io/v1"
ROLEBINDING_NAME = "kstack-verifier-workspace"
# API groups served by Kubernetes itself; a rule on any other group is about a component's CRD and is needed only
# when the profile has that CRD (a profile without Istio needs no Gateway dry-run).
BUILTIN_GROUPS = frozenset({"", "apps", "autoscaling", "apiextensions.k8s.io", "admissionregistration.k8s.io",
                            "rbac.authorization.k8s.io", "authorization.k8s.io", "authentication.k8s.io"})
# Groups only some areas read: AC-MONITORS where the profile declares monitors (their CRDs are no component's), the HA
# posture (stack/ha.py) where the profile lists HA workloads.
AREA_GROUPS = {"monitoring.coreos.com": ("monitors",), "discovery.k8s.io": ("monitors", "ha"),
               "policy": ("ha",), "coordination.k8s.io": ("ha",)}
SSR_VERSIONS = ("authentication.k8s.io/v1", "authentication.k8s.io/v1beta1", "authentication.k8s.io/v1alpha1")
BIND_SECONDS = 10   # a new RoleBinding reaches the authorizer's cache within milliseconds; this bounds the wait


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (RBAC's terms), optionally on one named object."""
    verb: str
    group: str
    resource: str            # plural; "pods/log" for a subresource
    name: str | None = None

    @property
    def resource_ref(self) -> str:
        base = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{base} {self.name}" if self.name else base


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: dict) -> "Rule":
        return cls(tuple(data.get("apiGroups") or ()), tuple(data.get("resources") or ()),
                   tuple(data.get("verbs") or ()), tuple(data.get("resourceNames") or ()))

    def permissions(self) -> list[Permission]:
        return [Permission(v, g, r, n) for g in self.api_groups for r in self.resources for v in self.verbs
                for n in (self.resource_names or (None,))]

    def covers(self, p: Permission) -> bool:
        """Whether this rule grants p, as RBAC's authorizer matches a rule (wildcards included)."""
        sub = p.resource.partition("/")[2]
        # RBAC's ResourceMatches: "*" is every resource and subresource, "*/log" every resource's log
        resource_ok = any(r in ("*", p.resource) or (sub and r == f"*/{sub}") for r in self.resources)
        return ((p.verb in self.verbs or "*" in self.verbs) and (p.group in self.api_groups or "*" in self.api_groups)
                and resource_ok and (not self.resource_names or p.name in self.resource_names))


@dataclass(frozen=True)
class Role:
    name: str
    rules: tuple[Rule, ...]

    def permissions(self) -> list[Permission]:
        return list(dict.fromkeys(p for r in self.rules for p in r.permissions()))

    def covers(self, p: Permission) -> bool:
        return any(r.covers(p) for r in self.rules)


@dataclass(frozen=True)
class Manifest:
    path: Path
    documents: tuple[dict, ...]
    verifier: Role            # bound cluster-wide
    workspace: Role           # bound in each test namespace, by the suite
    service_account: tuple[str, str]   # (namespace, name)

    @classmethod
    def load(cls, path: Path = MANIFEST) -> "Manifest":
        docs = tuple(d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d)
        roles = {d["metadata"]["name"]: Role(d["metadata"]["name"], tuple(Rule.parse(r) for r in d.get("rules") or ()))
                 for d in docs if d.get("kind") == "ClusterRole"}
        sa = next(d["metadata"] for d in docs if d.get("kind") == "ServiceAccount")
        return cls(Path(path), docs, roles[VERIFIER_ROLE], roles[WORKSPACE_ROLE], (sa["namespace"], sa["name"]))


def _needed_by(profile: Profile, p: Permission) -> bool:
    if p.group in AREA_GROUPS:
        used = {"monitors": bool(profile.monitors), "ha": bool(profile.ha_workloads())}
        return any(used[area] for area in AREA_GROUPS[p.group])
    if p.group in BUILTIN_GROUPS:
        return True
    crds = {c["name"] for _, c in profile.inventory("crds")}
    return f"{p.resource.split('/')[0]}.{p.group}" in crds


def needed(manifest: Manifest, profile: Profile) -> tuple[list[Permission], list[Permission]]:
    """(cluster-wide, in each test namespace): the shipped roles' permissions that the profile's checks use."""
    return ([p for p in manifest.verifier.permissions() if _needed_by(profile, p)],
            [p for p in manifest.workspace.permissions() if _needed_by(profile, p)])


# -- asking the API server -------------------------------------------------------------------------------------------
def allowed(kube: Kube, p: Permission, namespace: str | None = None) -> bool:
    """A SelfSubjectAccessReview: may this identity do p (in `namespace`; None: cluster-wide / every namespace)?"""
    resource, _, sub = p.resource.partition("/")
    attrs = {"verb": p.verb, "group": p.group, "resource": resource}
    attrs.update({k: v for k, v in (("subresource", sub), ("name", p.name), ("namespace", namespace)) if v})
    review = kube.create({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                          "metadata": {}, "spec": {"resourceAttributes": attrs}})
    return bool((review.get("status") or {}).get("allowed"))


@dataclass(frozen=True)
class Identity:
    username: str | None          # None: nothing says who it is (no SelfSubjectReview, opaque credentials, no option)
    groups: tuple[str, ...] = ()
    source: str = "SelfSubjectReview"   # how it was found: the API server, the credentials or --verifier-subject

    def __str__(self) -> str:
        return self.username or "this kubeconfig's identity"

    def subject(self) -> tuple[str, str, str | None]:
        """(kind, name, namespace) of an RBAC subject for this identity."""
        if self.username and self.username.startswith(SA_USER_PREFIX):
            ns, _, name = self.username[len(SA_USER_PREFIX):].partition(":")
            return "ServiceAccount", name, ns
        return "User", self.username or "", None


SA_USER_PREFIX = "system:serviceaccount:"
SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:{namespace}", "system:authenticated")


def _service_account(username: str, source: str) -> Identity:
    namespace = username[len(SA_USER_PREFIX):].partition(":")[0]
    return Identity(username, tuple(g.format(namespace=namespace) for g in SA_GROUPS), source)


class SubjectError(ValueError):
    """A --verifier-subject that names no RBAC subject."""


def parse_subject(text: str) -> Identity:
    """`User:NAME` or `ServiceAccount:NS/NAME` (the subject the shipped role is bound to) as an Identity."""
    kind, _, name = text.partition(":")
    if kind == "User" and name:
        return Identity(name, ("system:authenticated",), "--verifier-subject")
    parts = name.split("/")
    if kind == "ServiceAccount" and len(parts) == 2 and all(parts):
        return _service_account(f"{SA_USER_PREFIX}{parts[0]}:{parts[1]}", "--verifier-subject")
    raise SubjectError(f"{text!r} is not User:NAME or ServiceAccount:NAMESPACE/NAME")


def _jwt_claims(token: str) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def identity_from_credentials(configuration) -> Identity | None:
    """Who the kubeconfig's credentials say the identity is, read locally (no API permission needed), where that is
    what the API server would say (stack-facts-3.md §2.1-2.2; kubernetes/website authentication.md):
    - a ServiceAccount token (bound or legacy): its `sub` claim is `system:serviceaccount:NS:NAME` and its groups
      system:serviceaccounts and system:serviceaccounts:NS (kubernetes pkg/serviceaccount/claims.go, MakeUsername);
    - a client certificate: the subject's common name is the user name, its organizations the groups.
    Other tokens (OIDC, webhook, exec plugins) map to a user by the API server's configuration: None, never a guess."""
    # The client keeps the kubeconfig's token as "Bearer ..." under "BearerToken" (older releases: "authorization").
    headers = [v for v in (getattr(configuration, "api_key", None) or {}).values() if isinstance(v, str)]
    token = next((h[len("Bearer "):] for h in headers if h.startswith("Bearer ")), "")
    claims = _jwt_claims(token) if token else None
    if claims and str(claims.get("sub", "")).startswith(SA_USER_PREFIX):
        return _service_account(claims["sub"], "the ServiceAccount token's claims")
    cert_file = getattr(configuration, "cert_file", None)
    if cert_file and not token:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        except (OSError, ValueError):
            return None
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if names:
            return Identity(str(names[0]), (*orgs, "system:authenticated"), "the client certificate's subject")
    return None


def whoami(kube: Kube, subject: str | None = None) -> Identity:
    """The identity the API server sees: its SelfSubjectReview where served (every authenticated user may ask; beta
    in 1.27, GA in 1.28, absent before), else `subject` (--verifier-subject), else what the kubeconfig's credentials
    say (a ServiceAccount token's claims, a client certificate's subject), else unknown."""
    for api_version in SSR_VERSIONS:
        if not kube.serves(api_version, "SelfSubjectReview"):
            continue
        review = kube.create({"apiVersion": api_version, "kind": "SelfSubjectReview", "metadata": {}})
        info = (review.get("status") or {}).get("userInfo") or {}
        return Identity(info.get("username"), tuple(info.get("groups") or ()))
    if subject:
        return parse_subject(subject)
    return identity_from_credentials(kube.api_client.configuration) or Identity(None, (), "nothing")


@dataclass(frozen=True)
class Missing:
    permission: Permission
    scope: str                  # "cluster-wide" | "in each test namespace"
    why: str = ""               # how it would have been granted, when that is what is absent


@dataclass
class Review:
    identity: Identity
    needed: int
    missing: list[Missing] = field(default_factory=list)
    grant: WorkspaceGrant | None = None   # the workspace role to bind per test namespace (None: held everywhere)
    # The workspace role must be bound to this identity, and nothing says who it is (Kubernetes before 1.27 serves no
    # SelfSubjectReview, and the credentials are opaque): --verifier-subject names it.
    unknown_identity: bool = False

    @property
    def blocked(self) -> bool:
        return bool(self.missing) or self.unknown_identity

    def problem(self, profile_name: str) -> str:
        if not self.missing:
            return ("the API server cannot say who this kubeconfig's identity is (it serves no SelfSubjectReview "
                    "before Kubernetes 1.27) and its credentials do not say either; the suite binds the workspace "
                    "role in each test namespace to that identity")
        lines: dict[tuple, list[str]] = {}
        for m in self.missing:
            p = m.permission
            lines.setdefault((p.resource_ref, m.scope, m.why), []).append(p.verb)
        listed = "\n".join(f"    - {', '.join(verbs)} {ref} ({scope}{'; ' + why if why else ''})"
                           for (ref, scope, why), verbs in lines.items())
        return (f"{self.identity} lacks {len(self.missing)} of the {self.needed} permissions the checks of profile "
                f"'{profile_name}' need on an existing cluster (--install never):\n{listed}")

    def remedy(self) -> str:
        if not self.missing:
            return (f"name it: --verifier-subject ServiceAccount:{'/'.join(Manifest.load().service_account)} for "
                    "the shipped verifier's kubeconfig (otherwise User:NAME or ServiceAccount:NAMESPACE/NAME)")
        return ("bind the identity to the suite's shipped role as a cluster admin: `kubectl apply -f "
                "deploy/rbac/verifier.yaml` (and deploy/rbac/verifier-guard.yaml on Kubernetes 1.30+), then run with "
                "the kubeconfig of `python -m stack.rbac kubeconfig --kubeconfig ADMIN --out verifier.kubeconfig` "
                "(README: \"Verifying a cluster without cluster-admin\")")


def review(kube: Kube, profile: Profile, manifest: Manifest | None = None, subject: str | None = None) -> Review:
    """What this identity lacks of what the profile's checks need, asked of the API server (one SelfSubjectAccessReview
    per permission: authoritative, unlike a rules review, whatever the authorizers are).

    The workspace permissions are asked in a namespace that does not exist: an identity holding them everywhere
    (cluster-admin) needs nothing bound; any other needs to bind the workspace role in each test namespace, so its
    `bind` and the role's rules as the cluster has them count instead."""
    manifest = manifest or Manifest.load()
    cluster, workspace = needed(manifest, profile)
    identity = whoami(kube, subject)
    result = Review(identity, len(cluster) + len(workspace))
    result.missing += [Missing(p, "cluster-wide") for p in cluster if not allowed(kube, p)]
    probe_ns = f"kstack-preflight-{secrets.token_hex(4)}"
    lacking = [p for p in workspace if not allowed(kube, p, probe_ns)]
    if not lacking:
        return result
    kind, name, namespace = identity.subject()
    result.grant = WorkspaceGrant(WORKSPACE_ROLE, kind, name, namespace)
    try:
        role = kube.get(RBAC_API, "ClusterRole", WORKSPACE_ROLE)
    except Forbidden:
        role = None   # reading it is part of the shipped role: its absence is already listed above
    on_cluster = Role(WORKSPACE_ROLE, tuple(Rule.parse(r) for r in (role or {}).get("rules") or ())) if role else None
    why = (f"ClusterRole {WORKSPACE_ROLE} absent or unreadable" if on_cluster is None
           else f"not in ClusterRole {WORKSPACE_ROLE} on the cluster")
    result.missing += [Missing(p, "in each test namespace", why) for p in lacking
                       if on_cluster is None or not on_cluster.covers(p)]
    if not identity.username:
        result.unknown_identity = True
    return result


class NotYetAuthorized(Exception):
    """A RoleBinding just created that the authorizer does not honour yet (its cache lags by milliseconds)."""


def bind_workspace(kube: Kube, namespace: str, grant: WorkspaceGrant, deadline: Deadline | None = None) -> None:
    """Bind the workspace role to the run's identity in one test namespace, and return once the authorizer honours it
    (the first request in the namespace would otherwise meet a 403 that is only the binding's propagation)."""
    subject: dict = {"kind": grant.subject_kind, "name": grant.subject_name}
    if grant.subject_kind == "ServiceAccount":
        subject["namespace"] = grant.subject_namespace
    else:
        subject["apiGroup"] = "rbac.authorization.k8s.io"
    kube.create({"apiVersion": RBAC_API, "kind": "RoleBinding",
                 "metadata": {"name": ROLEBINDING_NAME, "namespace": namespace,
                              "labels": {"app.kubernetes.io/managed-by": "kstack"}},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": grant.role},
                 "subjects": [subject]})
    probe = Manifest.load().workspace.permissions()[0]

    def honoured() -> None:
        if not allowed(kube, probe, namespace):
            raise NotYetAuthorized(f"RoleBinding {namespace}/{ROLEBINDING_NAME} not honoured yet")

    retry.call(honoured, what=f"bind {grant.role} in {namespace}", layer="rbac", retries=kube.retries,
               is_transient=lambda e: "binding not honoured yet" if isinstance(e, NotYetAuthorized) else None,
               deadline=deadline or Deadline(BIND_SECONDS, "rbac"), attempts=12, base=0.05, cap=1.0)


# -- the documented commands -----------------------------------------------------------------------------------------
def _kubeconfig_cluster(path: Path, context: str | None) -> tuple[str, dict]:
    """(cluster name, cluster entry) of the context, with a file CA made absolute (the new file may live elsewhere)."""
    data = yaml.safe_load(path.read_text()) or {}
    name = context or data.get("current-context")
    ctx = next(c["context"] for c in data.get("contexts") or [] if c.get("name") == name)
    cluster = dict(next(c["cluster"] for c in data.get("clusters") or [] if c.get("name") == ctx["cluster"]))
    ca = cluster.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        cluster["certificate-authority"] = str((path.parent / ca).resolve())
    return ctx["cluster"], cluster


def mint_kubeconfig(admin: Kube, out: Path, *, admin_kubeconfig: Path, admin_context: str | None,
                    service_account: tuple[str, str] | None = None, seconds: int = 8 * 3600,
                    context: str = "kstack-verifier") -> datetime:
    """Write a kubeconfig for the verifier ServiceAccount: a bound token from the TokenRequest API (what `kubectl
    create token` does), the admin kubeconfig's server and CA. The file is 0600; the token is never printed.
    Returns when the token expires."""
    ns, name = service_account or Manifest.load().service_account
    from kubernetes import client as k8s_client   # noqa: PLC0415 - only the CLI mints tokens
    core = k8s_client.CoreV1Api(admin.api_client)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": seconds, "audiences": []}}
    try:
        answer = core.create_namespaced_service_account_token(name, ns, request)
    except k8s_client.ApiException as e:
        raise KubeError(e.status or 0, e.reason or "", f"cannot mint a token for serviceaccount {ns}/{name}: "
                        f"{e.reason} (apply deploy/rbac/verifier.yaml first)") from None
    token, expires = answer.status.token, answer.status.expiration_timestamp
    cluster_name, cluster = _kubeconfig_cluster(admin_kubeconfig, admin_context)
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": context,
           "clusters": [{"name": cluster_name, "cluster": cluster}],
           "users": [{"name": f"{ns}:{name}", "user": {"token": token}}],
           "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": f"{ns}:{name}"}}]}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.chmod(out, 0o600)
    return expires or datetime.now(timezone.utc) + timedelta(seconds=seconds)


def apply_manifest(admin: Kube, path: Path = MANIFEST) -> list[str]:
    """Server-side apply every object of a shipped manifest, in order; what was applied."""
    applied = []
    for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")):
        if doc:
            admin.apply(doc)
            applied.append(f"{doc['kind']} {doc['metadata'].get('namespace', '') + '/' if doc['metadata'].get('namespace') else ''}"
                           f"{doc['metadata']['name']}")
    return applied


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 8h, 30m, 3600)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.rbac",
                                     description="The kstack verifier's role (deploy/rbac/verifier.yaml).")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, text in (("kubeconfig", "mint a kubeconfig for the verifier ServiceAccount (TokenRequest API)"),
                      ("apply", "apply deploy/rbac/verifier.yaml (and with --guard verifier-guard.yaml)"),
                      ("permissions", "list the permissions the checks of a profile need")):
        p = sub.add_parser(cmd, help=text, description=text)
        if cmd != "permissions":
            p.add_argument("--kubeconfig", required=True, type=Path, help="a cluster admin's kubeconfig")
            p.add_argument("--context", default=None)
    sub.choices["kubeconfig"].add_argument("--out", required=True, type=Path, help="where to write it (mode 0600)")
    sub.choices["kubeconfig"].add_argument("--duration", type=_duration, default=8 * 3600,
                                           help="token lifetime (default 8h; the API server may cap it)")
    sub.choices["apply"].add_argument("--guard", action="store_true",
                                      help="also the ValidatingAdmissionPolicy (Kubernetes 1.30+)")
    sub.choices["permissions"].add_argument("--profile", default="seed")
    args = parser.parse_args(argv)

    if args.command == "permissions":
        from stack.profile import Profile   # noqa: PLC0415
        cluster, workspace = needed(Manifest.load(), Profile.load(args.profile))
        for scope, perms in (("cluster-wide", cluster), ("in each test namespace", workspace)):
            print(f"{scope}:")
            for p in perms:
                print(f"  {p.verb} {p.resource_ref}")
        return 0

    from stack.kube import Kube   # noqa: PLC0415
    try:
        admin = Kube(args.kubeconfig, args.context)
        if args.command == "apply":
            for path in (MANIFEST, GUARD) if args.guard else (MANIFEST,):
                for line in apply_manifest(admin, path):
                    print(f"applied {line}")
            return 0
        expires = mint_kubeconfig(admin, args.out, admin_kubeconfig=args.kubeconfig, admin_context=args.context,
                                  seconds=args.duration)
    except KubeError as e:
        print(f"stack.rbac: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (context kstack-verifier, ServiceAccount "
          f"{'/'.join(Manifest.load().service_account)}, token valid until {expires:%Y-%m-%d %H:%M} UTC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
