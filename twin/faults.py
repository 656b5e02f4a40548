"""Twin faults: `--twin-fault KIND[:TARGET]`, parsed against the profile so a typo fails loudly and early."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# kind -> (target description or None, effect)
KINDS = {
    "crashloop": ("NS/DEPLOYMENT", "the Deployment's pods restart in a loop (CrashLoopBackOff)"),
    "imagepull": ("NS/DEPLOYMENT", "one container of the Deployment's pods waits in ImagePullBackOff"),
    "scaled-down": ("NS/DEPLOYMENT", "the Deployment is scaled to 0 replicas (down for maintenance, never back up)"),
    "crd-missing": ("CRD", "the CRD is deleted, and deleted again whenever something creates it"),
    "cabundle-invalid": ("WEBHOOKCONFIG", "the webhook configuration's caBundle holds a different CA"),
    "cert-stuck": (None, "no Certificate ever becomes Ready"),
    "cert-wrong-san": (None, "issued certificates carry wrong DNS names"),
    "isvc-stuck": (None, "no InferenceService ever becomes Ready"),
    "predict-wrong": (None, "the model server answers with a wrong model"),
    "api-flaky": ("RATE", "that fraction of API requests fails with a transient error"),
    "watch-drop": (None, "API watches are dropped"),
    "no-selfsubjectreview": (None, "the API server serves no SelfSubjectReview, as before Kubernetes 1.27"),
    "default-sa-reads-secrets": (None, "a ClusterRoleBinding lets every ServiceAccount read Secrets"),
    "cert-expiring": (None, "Knative's webhook CA rotation is stuck: its CA expires in 6 hours"),
    "metrics-not-counting": (None, "the model server's /metrics never counts a predict call"),
    "autoscaler-missing": (None, "Knative makes no PodAutoscaler for a Revision"),
    "scale-to-zero-stuck": (None, "Knative's autoscaler never scales a revision below one replica"),
    "mtls-permissive": (None, "the mesh-wide PeerAuthentication is PERMISSIVE: sidecars take plaintext"),
    # The stack's availability (AC-HA), as operators leave it:
    "single-replica": ("NS/DEPLOYMENT", "the Deployment is scaled to 1 replica (`kubectl scale --replicas=1`)"),
    "one-node": ("NS/DEPLOYMENT", "the Deployment's Pods are pinned to one node (a nodeSelector on its hostname)"),
    "pdb-blocks": ("NS/PDB", "the PodDisruptionBudget's minAvailable is raised to 100%: it allows no disruption"),
    "lease-stale": ("NS/LEASE", "the Lease's holder is a Pod that is gone, and no candidate takes it over"),
    # The S3 settings the twin hands over (its S3 store's) as a user could get them wrong:
    "s3-wrong-credentials": (None, "the S3 secret key handed over is not the store's"),
    "s3-no-bucket": (None, "the S3 URI handed over names a bucket the store does not have"),
    "s3-wrong-key": (None, "the S3 URI handed over names a model path the bucket does not hold"),
}


class FaultSpecError(ValueError):
    """A --twin-fault that names an unknown kind or a target the profile does not contain."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str | None = None
    rate: float | None = None

    @property
    def namespace(self) -> str | None:
        return self.target.split("/", 1)[0] if self.target and "/" in self.target else None

    @property
    def name(self) -> str | None:
        return self.target.split("/", 1)[1] if self.target and "/" in self.target else self.target

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def _valid_kinds() -> str:
    return ", ".join(f"{k}:{t}" if t else k for k, (t, _) in KINDS.items())


def parse_fault(spec: str, profile=None) -> Fault:
    if isinstance(spec, Fault):
        return spec
    text = str(spec).strip()
    kind, sep, target = text.partition(":")
    kind, target = kind.strip(), target.strip()
    if kind not in KINDS:
        raise FaultSpecError(f"unknown twin fault kind {kind!r} in {text!r}; valid kinds: {_valid_kinds()}")
    wanted, _ = KINDS[kind]
    if wanted is None:
        if sep:
            raise FaultSpecError(f"twin fault {kind!r} takes no target, got {text!r}")
        if kind in ("cert-expiring", "autoscaler-missing", "scale-to-zero-stuck") and profile is not None and not profile.has("knative"):
            raise FaultSpecError(f"twin fault {kind} breaks a part of Knative: profile {profile.name!r} has no knative")
        if kind == "mtls-permissive" and profile is not None and not profile.has("istio"):
            raise FaultSpecError(f"twin fault {kind} sets an Istio policy: profile {profile.name!r} has no istio")
        return Fault(kind)
    if not target:
        raise FaultSpecError(f"twin fault {kind!r} needs a target: {kind}:{wanted}")
    if kind == "api-flaky":
        try:
            rate = float(target)
        except ValueError:
            rate = -1.0
        if not 0.0 < rate <= 1.0:
            raise FaultSpecError(f"twin fault api-flaky needs a RATE in (0, 1], got {target!r}")
        return Fault(kind, target, rate)
    if profile is not None:
        _check_target(kind, target, profile)
    return Fault(kind, target)


def _check_target(kind: str, target: str, profile) -> None:
    if kind in ("crashloop", "imagepull", "scaled-down", "single-replica", "one-node"):
        known = sorted({f"{w['namespace']}/{w['name']}" for _, w in profile.inventory("deployments")})
        if "/" not in target:
            raise FaultSpecError(f"twin fault {kind} needs NS/DEPLOYMENT, got {target!r}")
        if target not in known:
            raise FaultSpecError(f"twin fault {kind}:{target}: profile {profile.name!r} has no Deployment "
                                 f"{target}; it has: {', '.join(known)}")
    elif kind in ("pdb-blocks", "lease-stale"):
        if "/" not in target:
            raise FaultSpecError(f"twin fault {kind} needs {KINDS[kind][0]}, got {target!r}")
        if kind == "lease-stale":
            from twin.standins.leader import ELECTIONS
            held = sorted({name for e in ELECTIONS.values() for name in e.names})
            if target.split("/", 1)[1] not in held:
                raise FaultSpecError(f"twin fault lease-stale:{target}: no stand-in of the twin holds that Lease; "
                                     f"they hold: {', '.join(held)}")
    elif kind == "crd-missing":
        known = sorted({c["name"] for _, c in profile.inventory("crds")})
        if target not in known:
            raise FaultSpecError(f"twin fault crd-missing:{target}: profile {profile.name!r} has no CRD {target}; "
                                 f"it has: {', '.join(known)}")
    elif kind == "cabundle-invalid":
        known = sorted({w["name"] for _, w in profile.inventory("webhooks")})
        if target not in known:
            raise FaultSpecError(f"twin fault cabundle-invalid:{target}: profile {profile.name!r} has no webhook "
                                 f"configuration {target}; it has: {', '.join(known)}")


def parse_faults(specs: Iterable[str] | None, profile=None) -> list[Fault]:
    """Parse every spec; raises FaultSpecError (one clear sentence) on the first bad one. Duplicates collapse."""
    out: list[Fault] = []
    for spec in specs or ():
        fault = parse_fault(spec, profile)
        if fault not in out:
            out.append(fault)
    return out


class FaultSet:
    """Questions controllers ask about the active faults."""

    # Faults that describe how the stack was installed; the others strike a running stack (see activate()).
    INSTALL_TIME = ("api-flaky", "watch-drop")

    def __init__(self, faults: Iterable[Fault] = (), dormant: bool = False):
        self.all = list(faults)
        # A preinstalled twin is seeded healthy first (certificates issued, CA bundles injected), as a real stack
        # was before something broke; then the runtime faults are activated.
        self.faults = [f for f in self.all if f.kind in self.INSTALL_TIME] if dormant else list(self.all)

    def activate(self) -> list[Fault]:
        """Turn every fault on; returns those that were dormant."""
        woken = [f for f in self.all if f not in self.faults]
        self.faults = list(self.all)
        return woken

    def __iter__(self):
        return iter(self.faults)

    def __len__(self):
        return len(self.faults)

    def has(self, kind: str) -> bool:
        return any(f.kind == kind for f in self.faults)

    def has_any(self, kind: str) -> bool:
        """Whether `kind` is among all the faults, dormant or active."""
        return any(f.kind == kind for f in self.all)

    def targets(self, kind: str) -> set[str]:
        return {f.target for f in self.faults if f.kind == kind and f.target}

    def targets_deployment(self, kind: str, namespace: str, name: str) -> bool:
        return f"{namespace}/{name}" in self.targets(kind)

    def rate(self) -> float:
        rates = [f.rate for f in self.faults if f.kind == "api-flaky" and f.rate]
        return max(rates) if rates else 0.0


# -- the faults file: how the twin tells its processes which faults are active now ----------------------------------

def write_fault_file(path, faults) -> None:
    """One `kind[:target]` per line, replaced atomically (processes read it while the twin rewrites it)."""
    import os
    from pathlib import Path
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{f}\n" for f in faults))
    os.replace(tmp, path)


def read_fault_file(path) -> list[str]:
    """The active fault specs; none when the file is absent (no twin, or nothing active)."""
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, TypeError):
        return []


def active(path, kind: str) -> bool:
    return any(spec.partition(":")[0] == kind for spec in read_fault_file(path))
