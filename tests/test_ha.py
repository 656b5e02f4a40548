"""AC-HA's judgement (stack/ha.py) on hand-made API objects: an HA stack passes, each way of not being HA fails with
one finding that names it, and the first user's cluster (one replica of everything, one node) fails naming each
single point of failure. Semantics from upstream: Kubernetes' PDB status fields and rounding (configure-pdb.md), the
Lease's holderIdentity and renewTime (coordination/v1 types.go), EndpointConditions' unset `ready` meaning ready."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from stack import ha
from stack.profile import HAWorkload, LeaseRef, Profile

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


class ObjectKube:
    """get and list over a set of objects, as stack.kube.Kube answers them (label selectors of the form k=v)."""

    def __init__(self, objects: list[dict]):
        self.objects = objects

    def _match(self, kind, namespace, obj):
        return obj["kind"] == kind and (namespace is None or obj["metadata"].get("namespace") == namespace)

    def get(self, api_version, kind, name, namespace=None, **kw):
        return next((o for o in self.objects if self._match(kind, namespace, o) and o["metadata"]["name"] == name), None)

    def list(self, api_version, kind, namespace=None, label_selector=None, **kw):
        items = [o for o in self.objects if self._match(kind, namespace, o)]
        if label_selector:
            key, _, value = label_selector.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(key) == value]
        return items, "1"


def deployment(ns, name, labels, spread=None):
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c"}]}}
    if spread:
        template["spec"]["topologySpreadConstraints"] = [{"topologyKey": spread, "maxSkew": 1,
                                                          "whenUnsatisfiable": "DoNotSchedule"}]
    return {"kind": "Deployment", "metadata": {"namespace": ns, "name": name},
            "spec": {"selector": {"matchLabels": labels}, "template": template}}


def pod(ns, name, labels, node, ready=True, phase="Running", age=86400 * 90):
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": labels, "creationTimestamp": ts(age)},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(ns, name, labels, allowed=1, rule=("minAvailable", 1), healthy=2, expected=2):
    return {"kind": "PodDisruptionBudget", "metadata": {"namespace": ns, "name": name},
            "spec": {"selector": {"matchLabels": labels}, rule[0]: rule[1]},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": healthy, "expectedPods": expected}}


def lease(ns, name, holder, renewed_ago=3, duration=15):
    return {"kind": "Lease", "metadata": {"namespace": ns, "name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": ts(renewed_ago)}}


def node(name, zone=None):
    labels = {"kubernetes.io/hostname": name} | ({"topology.kubernetes.io/zone": zone} if zone else {})
    return {"kind": "Node", "metadata": {"name": name, "labels": labels}}


def webhook_config(name, service, policy="Fail"):
    return {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": name},
            "webhooks": [{"name": f"{name}.example.io", "failurePolicy": policy,
                          "clientConfig": {"service": {"namespace": service[0], "name": service[1]}},
                          "rules": [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"]}]}]}


def endpoint_slice(ns, service, pods, ready=True):
    return {"kind": "EndpointSlice", "metadata": {"namespace": ns, "name": f"{service}-x",
                                                  "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [f"10.0.0.{i}"], "targetRef": {"kind": "Pod", "name": p},
                           **({} if ready is None else {"conditions": {"ready": ready}})}
                          for i, p in enumerate(pods)]}


KSERVE = HAWorkload("kserve", "kserve", "kserve-controller-manager", 2,
                       (LeaseRef("kserve", "kserve-controller-manager-leader-lock"),))
CONTROLLER = HAWorkload("knative", "knative-serving", "controller", 2, (LeaseRef("knative-serving", "controller.*"),))
LABELS = {"control-plane": "kserve-controller-manager"}
KN_LABELS = {"app": "controller"}


def ha_cluster() -> list[dict]:
    """Two replicas of each on two nodes, a PDB that allows one disruption, fresh Leases held by a Ready replica, and
    the webhook behind two endpoints."""
    return [
        node("worker-a"), node("worker-b"),
        deployment("kserve", "kserve-controller-manager", LABELS),
        pod("kserve", "kserve-controller-manager-6b9f-abcde", LABELS, "worker-a"),
        pod("kserve", "kserve-controller-manager-6b9f-fghij", LABELS, "worker-b"),
        pdb("kserve", "kserve-controller-manager", LABELS),
        # controller-runtime: <hostname>_<uuid>, the hostname being the Pod's name
        lease("kserve", "kserve-controller-manager-leader-lock", "kserve-controller-manager-6b9f-abcde_4f1c-9a"),
        deployment("knative-serving", "controller", KN_LABELS),
        pod("knative-serving", "controller-7c8d-aaaaa", KN_LABELS, "worker-a"),
        pod("knative-serving", "controller-7c8d-bbbbb", KN_LABELS, "worker-b"),
        pdb("knative-serving", "controller-pdb", KN_LABELS, rule=("minAvailable", "50%")),
        # Knative buckets: <component>.<queue>.NN-of-MM, each led by one replica (knative.dev/pkg UniqueID)
        lease("knative-serving", "controller.knative.dev.serving.pkg.reconciler.route.reconciler.00-of-01",
              "controller-7c8d-aaaaa_1d2e", duration=60),
        lease("knative-serving", "controller.knative.dev.serving.pkg.reconciler.revision.reconciler.00-of-01",
              "controller-7c8d-bbbbb_3f4a", duration=60),
        webhook_config("inferenceservice.serving.kserve.io", ("kserve", "kserve-webhook-server-service")),
        endpoint_slice("kserve", "kserve-webhook-server-service",
                       ["kserve-controller-manager-6b9f-abcde", "kserve-controller-manager-6b9f-fghij"], ready=None),
    ]


class FakeProfile:
    def __init__(self, workloads, webhooks=(("ValidatingWebhookConfiguration", "inferenceservice.serving.kserve.io"),)):
        self.workloads, self.webhooks = list(workloads), webhooks

    def ha_workloads(self):
        return self.workloads

    def inventory(self, key):
        assert key == "webhooks"
        return [("kserve", {"kind": kind, "name": name}) for kind, name in self.webhooks]


def judged(objects, workloads=(KSERVE, CONTROLLER)) -> list[ha.Finding]:
    posture = ha.read_posture(ObjectKube(objects), FakeProfile(workloads))
    return ha.findings(posture, NOW)


def _replace(objects, kind, name, change):
    out = copy.deepcopy(objects)
    for o in out:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            change(o)
    return out


def test_an_ha_stack_has_no_finding_and_its_posture_is_the_evidence_table():
    assert judged(ha_cluster()) == []
    posture = ha.record_of(ha.read_posture(ObjectKube(ha_cluster()), FakeProfile([KSERVE, CONTROLLER])), NOW)
    kserve = posture.workloads[0]
    assert (kserve.workload, kserve.replicas, kserve.nodes) == ("kserve/kserve-controller-manager", "2/2",
                                                                 "worker-a, worker-b")
    assert kserve.budgets == "kserve-controller-manager (minAvailable 1, allows 1)"
    assert kserve.leases == ("kserve/kserve-controller-manager-leader-lock: kserve-controller-manager-6b9f-abcde_4f1c-9a"
                             " (renewed 3 s ago)")
    assert kserve.age == "90d"
    assert posture.workloads[1].leases == ("knative-serving/controller.*: 2 Leases held by controller-7c8d-aaaaa, "
                                           "controller-7c8d-bbbbb (renewed at most 3 s ago)")
    assert posture.webhooks[0].ready_endpoints == 2 and posture.webhooks[0].guards == ["serving.kserve.io/inferenceservices"]
    assert posture.findings == []


def _one(findings, aspect):
    assert len(findings) == 1 and findings[0].aspect == aspect, findings
    return findings[0]


def test_one_ready_replica_fails_replicas_and_spread():
    objects = [o for o in ha_cluster() if o["metadata"]["name"] != "kserve-controller-manager-6b9f-fghij"]
    objects = [o for o in objects if o["kind"] != "EndpointSlice"] + [
        endpoint_slice("kserve", "kserve-webhook-server-service", ["kserve-controller-manager-6b9f-abcde", "x"])]
    found = judged(objects, [KSERVE])
    assert [f.aspect for f in found] == ["replicas", "spread"]
    assert str(found[0]) == "kserve/kserve-controller-manager: 1 Ready replica(s), fewer than the 2 HA needs"


def test_every_replica_on_one_node_fails_the_spread_naming_the_node():
    objects = _replace(ha_cluster(), "Pod", "kserve-controller-manager-6b9f-fghij",
                       lambda p: p["spec"].update(nodeName="worker-a"))
    f = _one(judged(objects, [KSERVE]), "spread")
    assert "1 node (worker-a)" in f.text


def test_a_zone_spread_constraint_needs_two_zones():
    objects = ha_cluster()
    objects[0], objects[1] = node("worker-a", zone="z1"), node("worker-b", zone="z1")
    objects = _replace(objects, "Deployment", "kserve-controller-manager",
                       lambda d: d.update(deployment("kserve", "kserve-controller-manager", LABELS,
                                                     spread="topology.kubernetes.io/zone")))
    f = _one(judged(objects, [KSERVE]), "spread")
    assert "1 value of topology.kubernetes.io/zone" in f.text


def test_a_budget_that_allows_no_disruption_blocks_drains_and_is_named():
    objects = _replace(ha_cluster(), "PodDisruptionBudget", "kserve-controller-manager",
                       lambda b: (b["spec"].update(minAvailable=2), b["status"].update(disruptionsAllowed=0)))
    objects = _replace(objects, "PodDisruptionBudget", "kserve-controller-manager",
                       lambda b: b["spec"].update(minAvailable=2))
    f = _one(judged(objects, [KSERVE]), "budget")
    assert "kserve-controller-manager (minAvailable 2, 2 of 2 Pods healthy) allows no disruption now" in f.text


def test_no_budget_and_two_budgets_are_each_a_finding():
    without = [o for o in ha_cluster() if not (o["kind"] == "PodDisruptionBudget" and o["metadata"]["namespace"] == "kserve")]
    assert "no PodDisruptionBudget covers its Pods" in _one(judged(without, [KSERVE]), "budget").text
    twice = ha_cluster() + [pdb("kserve", "another", {"control-plane": "kserve-controller-manager"})]
    assert "the eviction API refuses such Pods with 500" in _one(judged(twice, [KSERVE]), "budget").text
    # an empty selector covers every Pod of its namespace (policy/v1)
    everything = without + [{**pdb("kserve", "all", {}), "spec": {"selector": {}, "maxUnavailable": 1}}]
    assert judged(everything, [KSERVE]) == []


def test_a_stale_lease_whose_holder_is_gone_is_named_with_both_facts():
    objects = _replace(ha_cluster(), "Lease", "kserve-controller-manager-leader-lock",
                       lambda x: x["spec"].update(holderIdentity="kserve-controller-manager-5d4c-zzzzz_77aa",
                                                  renewTime=ts(600)))
    found = judged(objects, [KSERVE])
    assert [f.aspect for f in found] == ["lease", "lease"]
    assert "is stale: last renewed 600 s ago, longer than its leaseDurationSeconds (15)" in found[0].text
    assert "held by kserve-controller-manager-5d4c-zzzzz_77aa, which is no Pod of kserve/kserve-controller-manager" \
        in found[1].text


def test_a_lease_held_by_a_pod_that_is_not_ready_or_by_no_one():
    objects = _replace(ha_cluster(), "Pod", "kserve-controller-manager-6b9f-abcde",
                       lambda p: p["status"]["conditions"][0].update(status="False"))
    assert [f.aspect for f in judged(objects, [KSERVE])] == ["replicas", "spread", "lease"]
    unheld = _replace(ha_cluster(), "Lease", "kserve-controller-manager-leader-lock",
                      lambda x: x["spec"].update(holderIdentity=""))
    assert "is held by no one" in _one(judged(unheld, [KSERVE]), "lease").text


def test_a_missing_lease_or_bucket_is_named():
    objects = [o for o in ha_cluster() if o["kind"] != "Lease"]
    found = judged(objects)
    assert [f.text for f in found] == [
        "no Lease kserve/kserve-controller-manager-leader-lock: no leader holds it (leader election off, or never led)",
        "no Lease knative-serving/controller.*: no leader holds it (leader election off, or never led)"]


@pytest.mark.parametrize("holder, pod_name", [
    ("cert-manager-7d4b-x2kq9-external-cert-manager-controller", "cert-manager-7d4b-x2kq9"),  # cert-manager's controller
    ("autoscaler-5f6d-q1w2e_10.244.1.7", "autoscaler-5f6d-q1w2e"),                            # Knative's autoscaler
    ("webhook-1-abc_uuid", "webhook-1-abc"),                     # the longest Pod name that starts the identity wins
])
def test_the_holder_is_the_pod_whose_name_starts_its_identity(holder, pod_name):
    pods = tuple(ha.PodSeen(n, "a", True, True, None) for n in ("cert-manager-7d4b-x2kq9", "autoscaler-5f6d-q1w2e",
                                                                 "webhook-1", "webhook-1-abc"))
    assert ha.holder_pod(holder, pods).name == pod_name
    assert ha.holder_pod("other-pod_uuid", pods) is None


def test_a_fail_webhook_behind_one_ready_endpoint_is_a_single_point_of_failure_naming_what_it_guards():
    objects = [o for o in ha_cluster() if o["kind"] != "EndpointSlice"] + [
        endpoint_slice("kserve", "kserve-webhook-server-service", ["kserve-controller-manager-6b9f-abcde"]),
        endpoint_slice("kserve", "kserve-webhook-server-service", ["kserve-controller-manager-6b9f-fghij"], ready=False)]
    f = _one(judged(objects, [KSERVE]), "webhook")
    assert str(f) == ("ValidatingWebhookConfiguration/inferenceservice.serving.kserve.io "
                      "inferenceservice.serving.kserve.io.example.io: failurePolicy Fail with 1 ready endpoint(s) behind "
                      "Service kserve/kserve-webhook-server-service: a single point of failure for admission of "
                      "serving.kserve.io/inferenceservices")
    ignore = _replace(objects, "ValidatingWebhookConfiguration", "inferenceservice.serving.kserve.io",
                      lambda c: c["webhooks"][0].update(failurePolicy="Ignore"))
    assert judged(ignore, [KSERVE]) == []


def test_the_first_users_cluster_fails_naming_each_single_point_of_failure():
    """One replica of everything on one node, the upstream default PDBs (Knative's 80% of one), as the seed report
    shows the cluster: every workload of the seed profile's ha: sections is named, none passes."""
    profile = Profile.load("seed")
    objects = [node("node-1")]
    for w in profile.ha_workloads():
        labels = {"app": w.name}
        objects += [deployment(w.namespace, w.name, labels), pod(w.namespace, f"{w.name}-0-aaaaa", labels, "node-1")]
        if w.name in ("activator", "webhook"):       # config/core/deployments/{activator,webhook}-hpa.yaml
            objects.append(pdb(w.namespace, f"{w.name}-pdb", labels, allowed=0, rule=("minAvailable", "80%"),
                               healthy=1, expected=1))
        for ref in w.leases:
            objects.append(lease(ref.namespace, ref.name.replace("*", "x.00-of-01"), f"{w.name}-0-aaaaa_id"))
    found = ha.findings(ha.read_posture(ObjectKube(objects), FakeProfile(profile.ha_workloads(), webhooks=())), NOW)
    named = {f.subject for f in found}
    assert named == {w.ref for w in profile.ha_workloads()}
    assert not [f for f in found if f.aspect == "lease"]      # the Leases are live: leaders elect on one replica too
    assert {f.aspect for f in found if f.subject == "knative-serving/activator"} == {"replicas", "spread", "budget"}
    assert any("activator-pdb (minAvailable 80%, 1 of 1 Pods healthy) allows no disruption now" in f.text for f in found)
