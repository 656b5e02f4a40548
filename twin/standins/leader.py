"""Leader election for the stand-ins, as their upstream components do it: a coordination.k8s.io/v1 Lease per
election, taken and renewed the way client-go's leader elector does (k8s.io/client-go tools/leaderelection
leaderelection.go: tryAcquireOrRenew; the Lease lock in resourcelock/leaselock.go), with each component's own Lease
names, identities and timings (`ELECTIONS`, cited per component).

- A candidate takes a Lease that does not exist, has no holder, or was not renewed within its leaseDurationSeconds;
  it keeps it by renewing every retry period, and loses it when a renewal has not succeeded for the renew deadline.
  A change of holder counts in leaseTransitions; writes carry the read resourceVersion, so two candidates never both
  win (the API server refuses the second with 409).
- `release_on_cancel` (cert-manager's, Knative's): a leader that stops clears the holder, so another replica takes
  over at once instead of after the Lease duration.
- What a component does as leader or follower: `runtime.run` starts the stand-in's controllers only once it leads
  an election whose `gates` is set (cert-manager's controller and cainjector, Knative's controllers); a webhook
  serves on every replica (only its certificate reconciler elects). A leader that loses its Lease exits, as
  client-go's OnStoppedLeading does in cert-manager (klog.Fatal) and controller-runtime (os.Exit); the kubelet
  restarts it. (Knative demotes a bucket and keeps running; its stand-ins exit instead, the one way they have to
  stop reconciling: a restart where Knative would show none.)

The identity uses the Pod's hostname, which a container runtime sets to the Pod's name (POD_NAME here: the twin's
stand-ins share the host's UTS namespace).
"""
from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

log = logging.getLogger("twin.leader")

LEASE_API = "coordination.k8s.io/v1"
JITTER = 1.2        # client-go's JitterFactor: a candidate retries within retryPeriod * [1, 1.2)


@dataclass(frozen=True)
class Election:
    names: tuple[str, ...]           # the Leases it takes (one elector each, as Knative's buckets)
    identity: str                    # a format of {hostname}, {uuid} and {pod_ip}
    lease_seconds: float
    renew_seconds: float
    retry_seconds: float
    release_on_cancel: bool
    namespace: str | None = None     # None: the Pod's own (--leader-election-namespace wins where given)
    gates: bool = True               # the stand-in's controllers run only while it leads


# Knative's config-leader-election defaults, 60s / 40s / 10s (knative.dev/pkg leaderelection/config.go
# defaultConfig), Lease names <component>.<queue>.NN-of-MM (context.go standardBucketName, one bucket), identity
# <hostname>_<uuid> (config.go UniqueID), ReleaseOnCancel (context.go).
def _knative(component: str, queues: tuple[str, ...], gates: bool = True) -> Election:
    return Election(tuple(f"{component}.{q}.00-of-01".lower() for q in queues), "{hostname}_{uuid}", 60, 40, 10, True,
                    gates=gates)


# Knative's reconcilers name their queues by the reconciler's Go type, "/" as "." (pkg/client/injection/reconciler/
# serving/v1/*/controller.go @knative.dev/serving v0.37.1: ctrTypeName); the webhooks' by constants of
# knative.dev/pkg webhook/{certificates,configmaps,resourcesemantics/*}/controller.go.
SERVING = "knative.dev.serving.pkg.reconciler"
WEBHOOK_QUEUES = ("WebhookCertificates", "DefaultingWebhook", "ValidationWebhook", "ConfigMapWebhook")
ELECTIONS = {
    # cert-manager cmd/controller/app/controller.go @v1.13.0: Lease cert-manager-controller in
    # --leader-election-namespace (the chart passes kube-system), identity <hostname>-external-cert-manager-controller,
    # 60s / 40s / 15s (internal/cmd/util/defaults.go), ReleaseOnCancel.
    "cert-manager-controller": Election(("cert-manager-controller",), "{hostname}-external-cert-manager-controller",
                                        60, 40, 15, True, namespace="kube-system"),
    # cmd/cainjector/app/start.go @v1.13.0: controller-runtime's manager, LeaderElectionID
    # cert-manager-cainjector-leader-election, Leases, ReleaseOnCancel; identity <hostname>_<uuid>.
    "cert-manager-cainjector": Election(("cert-manager-cainjector-leader-election",), "{hostname}_{uuid}",
                                        60, 40, 15, True, namespace="kube-system"),
    "knative-controller": _knative("controller", tuple(f"{SERVING}.{r}.Reconciler" for r in
                                                       ("configuration", "revision", "route", "service"))),
    "knative-webhook": _knative("webhook", WEBHOOK_QUEUES, gates=False),
    "net-istio-controller": _knative("net-istio-controller", ("knative.dev.net-istio.pkg.reconciler.ingress.Reconciler",
                                                              "knative.dev.net-istio.pkg.reconciler.serverlessservice"
                                                              ".Reconciler")),
    "net-istio-webhook": _knative("net-istio-webhook", WEBHOOK_QUEUES, gates=False),
    # knative/serving cmd/autoscaler/main.go: its Leases autoscaler-bucket-NN-of-MM (pkg/autoscaler/bucket), identity
    # <pod name>_<pod IP> (bucket.Identity), Knative's 60s / 40s / 10s.
    "autoscaler": Election(("autoscaler-bucket-00-of-01",), "{hostname}_{pod_ip}", 60, 40, 10, True),
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _age(renewed: str | None) -> float:
    if not renewed:
        return float("inf")
    when = datetime.fromisoformat(renewed.replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - when).total_seconds()


def namespace_arg(argv: list[str], default: str | None) -> str | None:
    """--leader-election-namespace=NS (or its two-argument form) from the container's args."""
    for i, arg in enumerate(argv):
        if arg.startswith("--leader-election-namespace="):
            return arg.split("=", 1)[1]
        if arg == "--leader-election-namespace" and i + 1 < len(argv):
            return argv[i + 1]
    return default


class Elector:
    """One Lease: acquire, renew, lose, release (client-go's semantics)."""

    def __init__(self, kube, namespace: str, name: str, identity: str, election: Election,
                 on_lost=None, faults=lambda: set()):
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.election = election
        self.faults = faults        # the twin's active faults: lease-stale:NS/NAME hangs this election
        self.leading = threading.Event()
        self.on_lost = on_lost
        self._last_renew = 0.0

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True while this candidate holds the Lease."""
        e = self.election
        now = _now()
        lease = self.kube.get(LEASE_API, "Lease", self.name, self.namespace)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(e.lease_seconds),
                "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        if lease is None:
            self.kube.create({"apiVersion": LEASE_API, "kind": "Lease",
                              "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec})
            return True
        have = lease.get("spec") or {}
        holder = have.get("holderIdentity") or ""
        if holder and holder != self.identity and _age(have.get("renewTime")) < (have.get("leaseDurationSeconds") or 0):
            return False             # someone else leads, and renewed within its duration
        if holder == self.identity:
            spec.update(acquireTime=have.get("acquireTime") or now, leaseTransitions=have.get("leaseTransitions") or 0)
        else:       # client-go counts a transition whenever the taker is not the recorded holder (a released one too)
            spec["leaseTransitions"] = (have.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**have, **spec}
        self.kube.replace(lease)     # the read resourceVersion: a concurrent winner makes this a 409
        return True

    def run(self, stop: threading.Event) -> None:
        e = self.election
        while not stop.is_set():
            if f"lease-stale:{self.namespace}/{self.name}" in self.faults():
                stop.wait(e.retry_seconds)      # hung: neither renews nor takes over (twin fault lease-stale)
                continue
            try:
                held = self.try_acquire_or_renew()
            except Exception as exc:  # noqa: BLE001 - a conflict or an API error: this attempt failed
                log.debug("lease %s/%s: %s", self.namespace, self.name, exc)
                held = False
            if held:
                self._last_renew = time.monotonic()
                if not self.leading.is_set():
                    log.info("%s became the leader of %s/%s", self.identity, self.namespace, self.name)
                    self.leading.set()
            elif self.leading.is_set() and time.monotonic() - self._last_renew > e.renew_seconds:
                log.error("%s lost the lease %s/%s (no renewal for %.0fs)", self.identity, self.namespace, self.name,
                          e.renew_seconds)
                self.leading.clear()
                if self.on_lost:
                    self.on_lost()
            stop.wait(e.retry_seconds * (1 if self.leading.is_set() else random.uniform(1, JITTER)))
        if self.leading.is_set() and e.release_on_cancel:
            self.release()

    def release(self) -> None:
        """ReleaseOnCancel: the holder cleared, so another candidate takes over at once (client-go's release())."""
        try:
            lease = self.kube.get(LEASE_API, "Lease", self.name, self.namespace)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                now = _now()
                lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
                self.kube.replace(lease)
        except Exception:  # noqa: BLE001 - the Lease then expires on its own
            log.debug("releasing %s/%s failed", self.namespace, self.name, exc_info=True)


def identity(election: Election) -> str:
    hostname = os.environ.get("POD_NAME") or os.uname().nodename
    return election.identity.format(hostname=hostname, uuid=uuid.uuid4(), pod_ip=os.environ.get("POD_IP", ""))


def elect(kube, role: str, stop: threading.Event, argv: list[str] | None = None, faults=lambda: set()) -> list[Elector]:
    """Start the electors of a stand-in role (none where its component does not elect); a leader that loses a Lease
    exits the process. `faults()`: the twin's active faults (lease-stale hangs an election)."""
    election = ELECTIONS.get(role)
    if election is None:
        return []
    namespace = namespace_arg(argv if argv is not None else sys.argv[1:],
                              election.namespace or os.environ.get("POD_NAMESPACE"))
    me = identity(election)
    electors = [Elector(kube, namespace, name, me, election, on_lost=lambda: os._exit(1), faults=faults)
                for name in election.names]
    for elector in electors:
        threading.Thread(target=elector.run, args=(stop,), daemon=True, name=f"lease-{elector.name}").start()
    return electors
