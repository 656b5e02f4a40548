"""AC-MESH-MTLS and AC-MESH-AUTHZ: Istio's peer authentication as it applies to one Pod's port, the
AuthorizationPolicy a profile declares for a model, and what a plaintext request from outside the mesh (so without a
principal) gets from a Pod.

The mode in force is Istio's precedence over the live PeerAuthentications (istio.io reference
config/security/peer_authentication, v1.19 to v1.30): a workload policy (spec.selector matching the Pod's labels) in
the Pod's namespace, then the namespace's policy (no selector), then the mesh's (no selector, in the root namespace,
istio-system by default; one with a selector there is ignored); UNSET inherits from the level above, a portLevelMtls
entry of the workload policy overrides its mode for that port, and with no policy at all Istio's default is
PERMISSIVE. Where one level holds several, the oldest applies (Istio's documented rule for conflicting policies).

STRICT is enforced by the Pod's Envoy sidecar: a Pod without one accepts plaintext whatever the policy says. The
client outside the mesh is the API server itself, through its pod proxy: under STRICT the sidecar resets the
plaintext connection (curl's exit 56 in Istio's mTLS migration task), so the API server answers with a Status of its
own instead of the model server's answer. An ALLOW AuthorizationPolicy whose every rule requires a principal (or a
source namespace, which is read from the principal) denies a request that has none: the sidecar answers 403 itself
("RBAC: access denied"), which the pod proxy passes on as the Pod's answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

SECURITY_API = "security.istio.io/v1beta1"   # served by Istio 1.19 (the seed) and still by 1.30 (beside v1)
PA_KIND = "PeerAuthentication"
AUTHZ_KIND = "AuthorizationPolicy"
AUTHZ_NAME = "kstack-model-access"
ROOT_NAMESPACE = "istio-system"
SIDECAR = "istio-proxy"
DEFAULT_MODE = "PERMISSIVE"


@dataclass(frozen=True)
class MtlsMode:
    mode: str              # STRICT | PERMISSIVE | DISABLE
    source: str            # which policy set it, or Istio's default

    def __str__(self) -> str:
        return f"{self.mode} ({self.source})"


def _oldest(policies: list[dict]) -> dict | None:
    return min(policies, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
               default=None)


def _match_labels(policy: dict) -> dict:
    return ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _selects(policy: dict, labels: dict) -> bool:
    wanted = _match_labels(policy)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _mode(policy: dict | None, port: int | None = None) -> str | None:
    """The mode a policy sets for the port (None: it sets none, so the level above applies)."""
    if policy is None:
        return None
    spec = policy.get("spec") or {}
    if port is not None:
        by_port = spec.get("portLevelMtls") or {}
        per_port = by_port.get(str(port)) or by_port.get(port)
        if per_port and per_port.get("mode", "UNSET") != "UNSET":
            return per_port["mode"]
    mode = (spec.get("mtls") or {}).get("mode", "UNSET")
    return None if mode == "UNSET" else mode


def effective_mode(policies: list[dict], namespace: str, labels: dict, port: int | None = None,
                   root_namespace: str = ROOT_NAMESPACE) -> MtlsMode:
    """The peer authentication mode in force for a Pod (its namespace and labels) on a port, from every
    PeerAuthentication of the cluster."""
    own = [p for p in policies if p["metadata"]["namespace"] == namespace]
    levels = [
        ("workload", _oldest([p for p in own if _selects(p, labels)]) if namespace != root_namespace else None),
        ("namespace", _oldest([p for p in own if not _match_labels(p)])),
        ("mesh", _oldest([p for p in policies if p["metadata"]["namespace"] == root_namespace
                          and not _match_labels(p)])),
    ]
    for level, policy in levels:
        # portLevelMtls is honoured on workload policies only (the reference: "only valid with a selector")
        mode = _mode(policy, port if level == "workload" else None)
        if mode is not None:
            meta = policy["metadata"]
            return MtlsMode(mode, f"{level} PeerAuthentication {meta['namespace']}/{meta['name']}")
    return MtlsMode(DEFAULT_MODE, "Istio's default: no PeerAuthentication sets a mode for it")


def has_sidecar(pod: dict) -> bool:
    """An Envoy sidecar is injected: the istio-proxy container (or, with native sidecars, the init container)."""
    spec = pod.get("spec") or {}
    return any(c.get("name") == SIDECAR for c in (spec.get("containers") or []) + (spec.get("initContainers") or []))


@dataclass(frozen=True)
class PlaintextAnswer:
    """What one plaintext request through the API server's pod proxy got."""
    status: int
    refused: bool          # no answer from the Pod: the API server's own Status of a failed proxy connection
    detail: str
    denied: bool = False   # the Pod's side answered 403 itself (a sidecar's authorization), not the API server

    @property
    def kept_out(self) -> bool:
        """The request never reached the model server: refused (mTLS) or denied (authorization)."""
        return self.refused or self.denied

    def __str__(self) -> str:
        return f"{self.status} {'refused' if self.refused else 'denied' if self.denied else 'answered'}: {self.detail}"

    @classmethod
    def of(cls, status: int, text: str) -> "PlaintextAnswer":
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        from_api_server = isinstance(body, dict) and body.get("kind") == "Status" and body.get("status") == "Failure"
        # 429 is the API server's throttling, not the Pod's refusal
        refused = from_api_server and status >= 500
        detail = body.get("message", "") if from_api_server else text[:200]
        return cls(status, refused, detail, denied=status == 403 and not from_api_server)


def rules_without_a_principal(rules: list[dict]) -> list[int]:
    """The ALLOW rules a request without a principal can match (no `from` source naming principals or namespaces),
    by index: with any of them, the policy lets such a request in."""
    out = []
    for index, rule in enumerate(rules):
        sources = [f.get("source") or {} for f in rule.get("from") or []]
        if not sources or any(not (s.get("principals") or s.get("namespaces")) for s in sources):
            out.append(index)
    return out


def model_policy(namespace: str, isvc: str, rules: list[dict]) -> dict:
    """The profile's ALLOW rules as an AuthorizationPolicy on one InferenceService's Pods."""
    return {"apiVersion": SECURITY_API, "kind": AUTHZ_KIND, "metadata": {"name": AUTHZ_NAME, "namespace": namespace},
            "spec": {"action": "ALLOW", "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": isvc}},
                     "rules": rules}}
