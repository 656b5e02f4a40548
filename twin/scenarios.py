"""Scenarios: a cluster as someone really left it, made from a twin's freshly installed stack.

A fault (twin/strikes.py) breaks one thing of a verified cluster and is undone after a run. A scenario is the whole
history of a cluster the suite meets for the first time: how it was installed, what was left out, what months of
service left in its Pods' status. It is applied once, after the twin hands its stack over, and never undone (a twin
with a scenario is not shared).

    first-user   the HA cluster of ../shared/reference/seed-report.md (July 2025, stack-facts-3.md §3), as it runs
                 today: the seed stack installed by hand (cert-manager and Istio with Helm, Knative and KServe with
                 `kubectl apply`), Istio without its ingress gateway, KServe's kube-rbac-proxy from the registry
                 its release names (gcr.io/kubebuilder, since deleted), three control-plane nodes and a cordoned
                 worker beside the twin's node, and the restarts of months of service, long past.

Each change says where it comes from. Where the twin cannot be what the cluster is (months cannot pass; its extra
nodes run nothing; it pulls no image), the scenario says so in the twin's report (`limitations`), so a run on it is
never read as the cluster itself.
"""
from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from stack.record import Limitation
from twin.waits import wait_object

log = logging.getLogger("twin.scenarios")

HELM_RELEASE_NAME, HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-name", "meta.helm.sh/release-namespace"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# KServe v0.11.0's kserve.yaml, as released (config/default/manager_auth_proxy_patch.yaml @v0.11.0): the seed
# profile overrides it (image_overrides) because the registry is gone (stack-facts-3.md §3, item 4).
RETIRED_RBAC_PROXY = "gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1"
ROLLOUT_SECONDS = 120.0


@dataclass(frozen=True)
class PastRestarts:
    """What months of service left in one container's status: how many restarts, the last one's end, and why."""
    namespace: str
    deployment: str
    container: str
    count: int
    days_ago: float
    reason: str
    exit_code: int


# The seed report shows RESTARTS 0 on 30 Jul 2025; these are what a cluster running since then plausibly shows
# (leader-election exits, an OOM kill), all of them ended days ago: none is a loop now.
FIRST_USER_RESTARTS = (
    PastRestarts("kserve", "kserve-controller-manager", "manager", 14, 23, "Error", 1),
    PastRestarts("knative-serving", "controller", "controller", 41, 12, "Error", 1),
    PastRestarts("istio-system", "istiod", "discovery", 3, 61, "OOMKilled", 137),
    PastRestarts("cert-manager", "cert-manager-cainjector", "cert-manager-cainjector", 6, 4, "Error", 1),
)
CONTROL_PLANE_NODES = ("ha-control-plane-1", "ha-control-plane-2", "ha-control-plane-3")
CORDONED_WORKER = "ha-worker-2"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Callable[..., None], ...]
    limitations: tuple[Limitation, ...] = field(default_factory=tuple)

    def apply(self, twin) -> None:
        for step in self.steps:
            log.info("scenario %s: %s", self.name, step.__name__)
            step(twin)


# -- the steps ----------------------------------------------------------------------------------------------------------

def without_ingress_gateway(twin) -> None:
    """The seed report lists istiod only in istio-system (stack-facts-3.md §3, item 1): the gateway chart's release
    was never installed. `helm uninstall` (the twin's helm, with the release's objects) leaves what never was."""
    env = {**twin.install_env, "KUBECONFIG": str(twin.workdir / "internal.kubeconfig")}
    done = subprocess.run([sys.executable, "-m", "twin.helm_stub", "uninstall", "istio-ingressgateway",
                           "--namespace", "istio-system"], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"scenario: helm uninstall istio-ingressgateway failed: {done.stderr.strip()}")
    wait_object(twin.admin, "apps/v1", "Deployment", "istio-ingressgateway", "istio-system", lambda o: o is None,
                60.0, "the ingress gateway's Deployment gone")
    twin.close_gateway()


def kserve_as_released(twin) -> None:
    """`kubectl apply -f kserve.yaml` of v0.11.0 as released: kube-rbac-proxy from gcr.io/kubebuilder. The Pod
    started while the registry served it; the twin pulls no image, so the rolled-out Pod runs it as that one does
    from its node's cache."""
    ns, name = "kserve", "kserve-controller-manager"
    dep = twin.admin.get("apps/v1", "Deployment", name, ns)
    containers = dep["spec"]["template"]["spec"]["containers"]
    proxy = next((c for c in containers if c["name"] == "kube-rbac-proxy"), None)
    if proxy is None:
        raise RuntimeError(f"scenario: deployment {ns}/{name} has no kube-rbac-proxy container")
    proxy["image"] = RETIRED_RBAC_PROXY      # a merge patch replaces the list: the whole list, one image changed
    generation = twin.admin.patch("apps/v1", "Deployment", name, ns,
                                  {"spec": {"template": {"spec": {"containers": containers}}}})["metadata"]["generation"]
    twin.wait_deployment_ready(ns, name, ROLLOUT_SECONDS, generation)
    _wait_one_pod_per_replica(twin, ns, dep)


def _wait_one_pod_per_replica(twin, namespace: str, dep: dict) -> None:
    """The rollout's old Pod gone (a check listing Pods must see the cluster's one Pod, not a terminating one)."""
    selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
    want = int(dep["spec"].get("replicas", 1))
    deadline = time.monotonic() + ROLLOUT_SECONDS
    while time.monotonic() < deadline:
        pods = twin.admin.list("v1", "Pod", namespace, label_selector=selector)[0]
        if len(pods) == want:
            return
        time.sleep(0.5)      # a few seconds at most: the ReplicaSet controller deletes the old Pod
    raise RuntimeError(f"scenario: {namespace} still has the rollout's old Pods")


def installed_by_hand(twin) -> None:
    """What the install methods leave on the objects (seed-report.md, "Методы установки"): Helm's ownership labels
    and annotations on cert-manager's and Istio's Deployments, `kubectl apply`'s last-applied configuration on
    Knative's and KServe's."""
    for comp, item in twin.profile.inventory("deployments"):
        if twin.admin.get("apps/v1", "Deployment", item["name"], item["namespace"]) is None:
            continue
        releases = [r["release"] for r in twin.profile.components[comp].helm_releases]
        if releases:   # a Deployment named as a release is that release's (istiod), else the component's first
            release = item["name"] if item["name"] in releases else releases[0]
            patch = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"},
                                  "annotations": {HELM_RELEASE_NAME: release,
                                                  HELM_RELEASE_NAMESPACE: item["namespace"]}}}
        else:
            applied = {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": item["name"], "namespace": item["namespace"]}}
            patch = {"metadata": {"annotations": {LAST_APPLIED: json.dumps(applied)}}}
        twin.admin.patch("apps/v1", "Deployment", item["name"], item["namespace"], patch)


def months_of_restarts(twin) -> None:
    """Each container of FIRST_USER_RESTARTS shows its restarts and its last termination, days ago, in its Pod's
    status (written as its kubelet would have left it; the twin's kubelet keeps restartCount and lastState)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    for past in FIRST_USER_RESTARTS:
        dep = twin.admin.get("apps/v1", "Deployment", past.deployment, past.namespace)
        if dep is None:
            continue
        selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        for pod in twin.admin.list("v1", "Pod", past.namespace, label_selector=selector)[0]:
            statuses = pod["status"].get("containerStatuses") or []
            for cs in statuses:
                if cs["name"] != past.container:
                    continue
                finished = now - datetime.timedelta(days=past.days_ago)
                cs["restartCount"] = past.count
                cs["lastState"] = {"terminated": {
                    "exitCode": past.exit_code, "reason": past.reason,
                    "startedAt": _iso(finished - datetime.timedelta(days=3)), "finishedAt": _iso(finished)}}
            twin.admin.patch("v1", "Pod", pod["metadata"]["name"], past.namespace,
                             {"status": {"containerStatuses": statuses}}, subresource="status")


def ha_nodes(twin) -> None:
    """The report calls it an HA cluster: three control-plane nodes (kubeadm's role label and NoSchedule taint) and
    a second worker, cordoned for maintenance and left so. KWOK keeps them Ready; the twin's node is the worker
    that runs the stack."""
    from twin import bootstrap
    version = twin.controlplane.version.get("gitVersion", "")
    for name in CONTROL_PLANE_NODES + (CORDONED_WORKER,):
        node = bootstrap.node(name, version)          # KWOK's annotation included: KWOK keeps it Ready
        if name in CONTROL_PLANE_NODES:
            node["spec"] = {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}
        else:
            node["metadata"]["labels"].pop("node-role.kubernetes.io/control-plane", None)
            node["spec"] = {"unschedulable": True}
        twin.admin.create(node)
    for name in CONTROL_PLANE_NODES + (CORDONED_WORKER,):
        wait_object(twin.admin, "v1", "Node", name, None,
                    lambda o: any(c.get("type") == "Ready" and c.get("status") == "True"
                                  for c in ((o or {}).get("status") or {}).get("conditions") or []),
                    60.0, f"node {name} Ready")


def _iso(when: datetime.datetime) -> str:
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


SCENARIOS = {
    "first-user": Scenario(
        "first-user",
        "the seed stack as installed by hand in July 2025 (seed-report.md) and run since: no ingress gateway, "
        "kube-rbac-proxy from gcr.io/kubebuilder, HA nodes, old restarts",
        (without_ingress_gateway, kserve_as_released, installed_by_hand, months_of_restarts, ha_nodes),
        (Limitation("twin-scenario-restarts", "scenario first-user: the restarts of months of service are written "
                    "into the Pods' status (restartCount, lastState) as their kubelets would have left them; the "
                    "Pods themselves were created minutes ago"),
         Limitation("twin-scenario-nodes", "scenario first-user: the three control-plane nodes and the cordoned "
                    "worker are KWOK nodes that run nothing (tainted or cordoned: no Pod of the stack lands there)"),
         Limitation("twin-scenario-images", "scenario first-user: the twin pulls no image, so KServe's "
                    f"kube-rbac-proxy runs {RETIRED_RBAC_PROXY} as a Pod started before the registry's deletion "
                    "does from its node's cache; a real cluster could not pull it for a new Pod"))),
}


class ScenarioError(ValueError):
    """An unknown scenario, or one the profile cannot have."""


def scenario(name: str, profile) -> Scenario:
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown twin scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if name == "first-user" and profile.name != "seed":
        raise ScenarioError("twin scenario first-user is the seed stack's cluster: use --profile seed")
    return SCENARIOS[name]
