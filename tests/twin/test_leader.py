"""The stand-ins' leader election against client-go's semantics (tools/leaderelection/leaderelection.go
tryAcquireOrRenew): a free Lease is taken, a held and renewed one is not, an expired one is taken over and counts a
transition, a concurrent write loses with 409, and ReleaseOnCancel clears the holder."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from twin.standins import leader


class Conflict(Exception):
    status = 409


class LeaseStore:
    """get / create / replace of Leases with resourceVersion checks, as the API server answers them."""

    def __init__(self):
        self.leases: dict[tuple[str, str], dict] = {}
        self.version = 0

    def get(self, api, kind, name, namespace=None):
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def create(self, obj):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.leases:
            raise Conflict("exists")
        self.version += 1
        self.leases[key] = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        return self.leases[key]

    def replace(self, obj):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if self.leases[key]["metadata"]["resourceVersion"] != obj["metadata"].get("resourceVersion"):
            raise Conflict("the object has been modified")
        self.version += 1
        self.leases[key] = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        return self.leases[key]


ELECTION = leader.ELECTIONS["knative-controller"]


def elector(store, who):
    return leader.Elector(store, "knative-serving", "controller.x.00-of-01", who, ELECTION)


def _renewed(store, seconds_ago):
    lease = store.leases[("knative-serving", "controller.x.00-of-01")]
    lease["spec"]["renewTime"] = (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_free_lease_is_taken_and_a_held_one_is_not():
    store = LeaseStore()
    assert elector(store, "controller-a_1").try_acquire_or_renew()
    spec = store.leases[("knative-serving", "controller.x.00-of-01")]["spec"]
    assert spec["holderIdentity"] == "controller-a_1" and spec["leaseDurationSeconds"] == 60
    assert not elector(store, "controller-b_2").try_acquire_or_renew()         # renewed just now
    assert elector(store, "controller-a_1").try_acquire_or_renew()             # the holder renews


def test_an_expired_lease_is_taken_over_and_counts_a_transition():
    store = LeaseStore()
    elector(store, "controller-a_1").try_acquire_or_renew()
    _renewed(store, 59)
    assert not elector(store, "controller-b_2").try_acquire_or_renew()
    _renewed(store, 61)
    assert elector(store, "controller-b_2").try_acquire_or_renew()
    spec = store.leases[("knative-serving", "controller.x.00-of-01")]["spec"]
    assert spec["holderIdentity"] == "controller-b_2" and spec["leaseTransitions"] == 1


def test_of_two_concurrent_candidates_only_one_wins():
    store = LeaseStore()
    elector(store, "controller-a_1").try_acquire_or_renew()
    _renewed(store, 120)
    stale = store.get(None, None, "controller.x.00-of-01", "knative-serving")
    assert elector(store, "controller-b_2").try_acquire_or_renew()
    store.get = lambda *a, **k: copy.deepcopy(stale)        # c read the Lease before b wrote it
    with pytest.raises(Conflict):
        elector(store, "controller-c_3").try_acquire_or_renew()


def test_release_on_cancel_lets_another_take_over_at_once():
    store = LeaseStore()
    a = elector(store, "controller-a_1")
    a.try_acquire_or_renew()
    a.release()
    spec = store.leases[("knative-serving", "controller.x.00-of-01")]["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert elector(store, "controller-b_2").try_acquire_or_renew()
    assert store.leases[("knative-serving", "controller.x.00-of-01")]["spec"]["leaseTransitions"] == 1


def test_each_component_elects_with_its_own_names_and_identity(monkeypatch):
    monkeypatch.setenv("POD_NAME", "autoscaler-5f6d-q1w2e")
    monkeypatch.setenv("POD_IP", "10.244.0.7")
    assert leader.identity(leader.ELECTIONS["autoscaler"]) == "autoscaler-5f6d-q1w2e_10.244.0.7"
    monkeypatch.setenv("POD_NAME", "cert-manager-7d4b-x2kq9")
    assert leader.identity(leader.ELECTIONS["cert-manager-controller"]) == \
        "cert-manager-7d4b-x2kq9-external-cert-manager-controller"
    assert leader.ELECTIONS["knative-controller"].names[1] == \
        "controller.knative.dev.serving.pkg.reconciler.revision.reconciler.00-of-01"
    assert leader.namespace_arg(["--v=2", "--leader-election-namespace=kube-system"], "cert-manager") == "kube-system"
    assert leader.namespace_arg([], "cert-manager") == "cert-manager"
