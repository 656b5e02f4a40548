"""The wait helper against a real HTTP API (the twin's): watch-driven, fail-fast on terminal states, the last observed
state in timeout errors, and recovery from expired and dropped watches."""
from __future__ import annotations

import threading
import time

import pytest

from stack.kube import Kube
from stack.readiness import workload_sources, workloads_check
from stack.wait import Deadline, TerminalState, WaitTimeout, wait_for

pytest.importorskip("twin.apiserver")
from twin.apiserver import ApiServer  # noqa: E402

NS = "waits"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = ApiServer()
    server.start()
    server.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kube(api, tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    api.write_kubeconfig(path)
    return Kube(path, "twin")


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": f"example/{name}:1"}]}}}}


def pod(name: str, app: str, ready: bool, waiting: str | None = None) -> dict:
    state = {"waiting": {"reason": waiting, "message": "Back-off"}} if waiting else {"running": {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": f"example/{app}:1"}]},
            "status": {"phase": "Running" if ready else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "main", "image": f"example/{app}:1", "ready": ready,
                                              "restartCount": 0, "state": state}]}}


def make_ready(api, name: str) -> None:
    api.store.create(pod(f"{name}-1", name, True))
    dep = api.store.get("apps/v1", "Deployment", name, NS)
    api.store.update_status("apps/v1", "Deployment", name, NS, {
        "observedGeneration": dep["metadata"]["generation"], "replicas": 1, "readyReplicas": 1,
        "availableReplicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})


def test_returns_as_soon_as_the_watched_state_is_reached(api, kube):
    api.store.create(deployment("soon"))
    threading.Timer(0.5, make_ready, (api, "soon")).start()
    started = time.monotonic()
    wait_for(kube, workload_sources(NS), workloads_check([("Deployment", NS, "soon")]),
             deadline=Deadline(20), describe="soon")
    assert time.monotonic() - started < 5


def test_fails_fast_on_image_pull_backoff_with_a_sentence(api, kube):
    api.store.create(deployment("pull"))
    api.store.update_status("apps/v1", "Deployment", "pull", NS, {"observedGeneration": 1, "replicas": 1,
                                                                  "unavailableReplicas": 1})
    api.store.create(pod("pull-1", "pull", False, waiting="ImagePullBackOff"))
    started = time.monotonic()
    with pytest.raises(TerminalState) as e:
        wait_for(kube, workload_sources(NS), workloads_check([("Deployment", NS, "pull")]),
                 deadline=Deadline(60), describe="pull")
    assert time.monotonic() - started < 5
    assert f"deployment {NS}/pull: 0/1 ready; container main ImagePullBackOff (example/pull:1)" in str(e.value)


def test_timeout_says_what_was_last_observed(api, kube):
    api.store.create(deployment("never"))
    api.store.update_status("apps/v1", "Deployment", "never", NS, {"observedGeneration": 1})
    with pytest.raises(WaitTimeout) as e:
        wait_for(kube, workload_sources(NS), workloads_check([("Deployment", NS, "never")]),
                 deadline=Deadline(1.5), describe="never")
    assert "timed out after" in str(e.value)
    assert f"last observed: deployment {NS}/never: 0/1 ready; no pods yet" in str(e.value)


def test_survives_dropped_and_expired_watches(api, kube):
    api.store.create(deployment("drop"))
    api.faults.watch_drop = True
    try:
        threading.Timer(0.5, api.store.compact).start()
        threading.Timer(1.0, make_ready, (api, "drop")).start()
        wait_for(kube, workload_sources(NS), workloads_check([("Deployment", NS, "drop")]),
                 deadline=Deadline(20), describe="drop")
    finally:
        api.faults.watch_drop = False
