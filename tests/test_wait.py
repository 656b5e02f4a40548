"""The wait helper against a real HTTP API (the twin's): watch-driven, no watch when the first list suffices, fail-fast
on terminal states and on the deletion of the awaited object, image pulls terminal only when they persist through the
kubelet's back-off, the last observed state in timeout errors, recovery from dropped and expired watches with bounded
requests, and retries recorded per Kube.

State is changed at known instants through the official kubernetes client (a custom resource no controller touches,
its status subresource patched), and requests are counted from the twin's request log. The image-pull waits write
Deployment and Pod statuses the way the kubelet would, at known instants, into the twin's API server alone (no
controllers, which would write statuses of their own)."""
from __future__ import annotations

import threading
import time
from typing import Callable

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from stack.checks import ISVC_API, ISVC_KIND, Check, inference_service, workloads
from stack.failures import Category
from stack.kube import API_ATTEMPTS, Kube, KubeError
from stack.profile import Profile, WorkloadRef
from stack.readiness import condition_true
from stack.snapshot import Source, Status
from stack.deadline import Deadline
from stack.wait import WATCH_BACKOFF_CAP, TerminalState, WaitTimeout, wait_for

pytestmark = [pytest.mark.twin, pytest.mark.xdist_group("wait-twin")]   # one worker: its twins

NS = "default"
GROUP, VERSION, PLURAL, KIND = "waits.kstack.test", "v1", "widgets", "Widget"
API = f"{GROUP}/{VERSION}"


def crd(group: str, version: str, plural: str, kind: str) -> dict:
    """A minimal CRD with a status subresource (nothing in the twin reconciles it without the stack)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from twin import Twin
    t = Twin(Profile.load("seed"), preinstalled=False, workdir=tmp_path_factory.mktemp("twin"))
    t.start()
    crds = k8s.ApiextensionsV1Api(_client(t))
    crds.create_custom_resource_definition(crd(GROUP, VERSION, PLURAL, KIND))
    crds.create_custom_resource_definition(crd("serving.kserve.io", "v1beta1", "inferenceservices", ISVC_KIND))
    deadline = time.monotonic() + 10
    kube = Kube(t.kubeconfig_path, t.context)
    while not (kube.serves(API, KIND) and kube.serves(ISVC_API, ISVC_KIND)) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield t
    t.stop()


def _client(twin) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)


@pytest.fixture
def kube(twin):
    return Kube(twin.kubeconfig_path, twin.context)


@pytest.fixture
def objects(twin):
    return k8s.CustomObjectsApi(_client(twin))


def create(objects, name: str) -> None:
    objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
        "apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": NS}, "spec": {}})


def make_ready(objects, name: str) -> None:
    objects.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, {
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})


def widget_ready(name: str) -> Check:
    def evaluate(snap) -> Status:
        obj = snap.get(API, KIND, name, NS)
        if obj is None and snap.was_deleted(API, KIND, name, NS):
            text = f"widget {name} was deleted while it was awaited"
            return Status(False, text, text)
        ready = condition_true(obj, "Ready")
        return Status(ready, f"widget {name}: " + ("absent" if obj is None else "Ready" if ready else "not Ready"))
    return Check(f"widget {name} Ready", Category.NOT_READY,
                 (Source(API, KIND, NS, field_selector=f"metadata.name={name}"),), evaluate)


def widget_requests(twin, since: int) -> list:
    return [e for e in twin.api.request_log.entries()[since:] if e.resource == PLURAL]


def settled_log(twin) -> int:
    time.sleep(0.2)    # the twin logs a request after answering it
    return len(twin.api.request_log.entries())


def test_returns_as_soon_as_the_watched_state_is_reached_with_one_list_and_one_watch(twin, kube, objects):
    create(objects, "soon")
    kube.resource(API, KIND)                  # discovery, once per Kube
    start = settled_log(twin)
    threading.Timer(0.5, make_ready, (objects, "soon")).start()
    began = time.monotonic()
    wait_for(kube, widget_ready("soon"), Deadline(20))
    assert time.monotonic() - began < 5
    settled_log(twin)
    assert [e.verb for e in widget_requests(twin, start)] == ["list", "watch"]


def test_no_watch_when_the_first_list_already_satisfies_the_check(twin, kube, objects):
    create(objects, "already")
    make_ready(objects, "already")
    kube.resource(API, KIND)
    start = settled_log(twin)
    wait_for(kube, widget_ready("already"), Deadline(20))
    settled_log(twin)
    assert [e.verb for e in widget_requests(twin, start)] == ["list"]


def test_timeout_says_what_was_last_observed(twin, kube, objects):
    create(objects, "never")
    with pytest.raises(WaitTimeout) as e:
        wait_for(kube, widget_ready("never"), Deadline(1.5))
    assert "timed out after" in str(e.value)
    assert "last observed: widget never: not Ready" in str(e.value)
    assert e.value.category is Category.NOT_READY and str(e.value).startswith("[not-ready] ")


def test_an_idle_wait_keeps_one_watch_open(twin, kube, objects):
    create(objects, "idle")
    kube.resource(API, KIND)
    start = settled_log(twin)
    with pytest.raises(WaitTimeout):
        wait_for(kube, widget_ready("idle"), Deadline(4))
    settled_log(twin)
    assert [e.verb for e in widget_requests(twin, start)] == ["list", "watch"]


def test_deleting_the_awaited_object_is_terminal_with_a_clear_message(twin, kube, objects):
    objects.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", {
        "apiVersion": ISVC_API, "kind": ISVC_KIND, "metadata": {"name": "doomed", "namespace": NS}, "spec": {}})
    threading.Timer(0.5, objects.delete_namespaced_custom_object,
                    ("serving.kserve.io", "v1beta1", NS, "inferenceservices", "doomed")).start()
    began = time.monotonic()
    with pytest.raises(TerminalState) as e:
        wait_for(kube, inference_service(NS, "doomed"), Deadline(30))
    assert time.monotonic() - began < 5
    assert f"inferenceservice {NS}/doomed was deleted while it was awaited" in str(e.value)
    assert e.value.category is Category.PREDICT


def test_dropped_and_expired_watches_are_resumed_with_bounded_requests(twin, kube, objects):
    create(objects, "drop")
    kube.resource(API, KIND)
    start = settled_log(twin)
    twin.api.faults.watch_drop = True
    try:
        threading.Timer(3.0, make_ready, (objects, "drop")).start()
        wait_for(kube, widget_ready("drop"), Deadline(30))
    finally:
        twin.api.faults.watch_drop = False
    settled_log(twin)
    requests = widget_requests(twin, start)
    # Without backoff this was ~1,100 requests a second; with it a few per second at first, fewer after.
    assert len(requests) <= 20, [e.verb for e in requests]
    assert kube.retries.count("watch") >= 1
    assert all(r.layer == "watch" and r.delay <= WATCH_BACKOFF_CAP for r in kube.retries.entries)


def test_a_failing_api_is_retried_a_few_times_then_reported_as_infrastructure(twin, kube):
    kube.resource(API, KIND)
    twin.api.faults.flaky_rate = 1.0
    try:
        with pytest.raises(KubeError) as e:
            wait_for(kube, widget_ready("anything"), Deadline(30))
    finally:
        twin.api.faults.flaky_rate = 0.0
    from stack.failures import category_of
    assert category_of(e.value) is Category.INFRASTRUCTURE
    assert 1 <= kube.retries.count("api") <= API_ATTEMPTS - 1   # one owner, a few attempts, on this Kube only
    assert Kube(twin.kubeconfig_path, twin.context).retries.count() == 0


def test_a_kind_the_api_does_not_serve_is_terminal(kube):
    with pytest.raises(TerminalState) as e:
        wait_for(kube, Check("gadgets", Category.NOT_READY, (Source("nope.kstack.test/v1", "Gadget"),),
                             lambda snap: Status(False, "no gadget")), Deadline(10))
    assert "Gadget (nope.kstack.test/v1) is not served" in str(e.value) and e.value.category is Category.CRD


def test_a_core_kind_after_a_rediscovery_reads_the_core_group_alone(twin, kube):
    kube.resource("v1", "Namespace")
    kube.dynamic.resources.invalidate_cache()       # as a lookup of a kind not yet served does
    start = settled_log(twin)
    kube.resource("v1", "Namespace")
    settled_log(twin)
    read = [e.path for e in twin.api.request_log.entries()[start:] if e.resource == "discovery"]
    assert read == ["/api/v1"], "a bare v1 must not read every group's v1"


def test_a_kind_established_after_discovery_is_found(twin, kube):
    kube.resource(API, KIND)                        # the group version's kinds, cached
    k8s.ApiextensionsV1Api(_client(twin)).create_custom_resource_definition(crd(GROUP, VERSION, "gizmos", "Gizmo"))
    deadline = time.monotonic() + 10
    while not Kube(twin.kubeconfig_path, twin.context).serves(API, "Gizmo"):   # a fresh Kube: a fresh cache
        assert time.monotonic() < deadline, "the gizmos CRD was not served within 10 s"
        time.sleep(0.1)
    assert kube.resource(API, "Gizmo").kind == "Gizmo"


def test_fails_fast_on_an_image_pull_that_keeps_failing_with_a_sentence_and_its_category(shared_twins):
    """The twin's KWOK Stages cycle ErrImagePull / ImagePullBackOff as kubelet does (its back-off compressed to about
    1.3 s a cycle): the third failed pull seen ends the wait, far before its 60 s deadline and the 60 s window."""
    with shared_twins("seed").struck(["imagepull:kserve/kserve-controller-manager"]) as t:
        began = time.monotonic()
        with pytest.raises(TerminalState) as e:
            wait_for(Kube(t.kubeconfig_path, t.context),
                     workloads([WorkloadRef("Deployment", "kserve", "kserve-controller-manager")]), Deadline(60))
    assert time.monotonic() - began < 20          # three pull cycles and some slack, not the 60 s window
    assert e.value.category is Category.IMAGE_PULL
    assert "deployment kserve/kserve-controller-manager: 0/1 ready; container " in str(e.value)
    assert "container manager ErrImagePull (kserve/kserve-controller:v0.11.0)" in str(e.value)
    assert "(image pull of container manager failed 3 times in " in str(e.value)
    assert str(e.value).endswith(", retried after back-off)")


# -- image pulls: terminal only when they persist (stack-facts-2.md §3) -----------------------------------------------
PULLS_NS = "waits"


@pytest.fixture(scope="module")
def pulls(twin):
    """A namespace whose Pods no node runs (their nodeSelector matches none): their status changes only when a test
    writes it, as the kubelet would. The controller-manager still counts them into their Deployment's status."""
    core = k8s.CoreV1Api(_client(twin))
    core.create_namespace({"metadata": {"name": PULLS_NS}})
    return core


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": PULLS_NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"kstack.io/no-such-node": "true"},
                                           "containers": [{"name": "main", "image": f"example/{name}:1"}]}}}}


def pod_status(app: str, ready: bool, waiting: str | None = None) -> dict:
    state = {"waiting": {"reason": waiting, "message": "Back-off"}} if waiting else {"running": {}}
    return {"phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"},
                           {"type": "ContainersReady", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "main", "image": f"example/{app}:1", "imageID": "", "ready": ready,
                                   "restartCount": 0, "state": state}]}


def the_pod(core, app: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:      # the ReplicaSet controller creates it
        pods = core.list_namespaced_pod(PULLS_NS, label_selector=f"app={app}").items
        if pods:
            return pods[0].metadata.name
        time.sleep(0.1)
    raise AssertionError(f"no pod of {app}")


def set_waiting(core, app: str, reason: str | None) -> None:
    """The kubelet's status write for the pod: waiting on an image pull (reason), or running and Ready (None)."""
    core.patch_namespaced_pod_status(the_pod(core, app), PULLS_NS, {"status": pod_status(app, reason is None, reason)})


def pulling_deployment(core, twin, name: str, first_reason: str) -> None:
    k8s.AppsV1Api(_client(twin)).create_namespaced_deployment(PULLS_NS, deployment(name))
    set_waiting(core, name, first_reason)


def deployment_ready(name: str):
    return workloads([WorkloadRef("Deployment", PULLS_NS, name)], name=name)


def later(steps: list[tuple[float, Callable[[], None]]]) -> None:
    for at, fn in steps:
        threading.Timer(at, fn).start()


def test_a_single_image_pull_failure_that_recovers_does_not_fail_the_wait(twin, pulls, kube):
    """A registry blip: the first pull fails (ErrImagePull), the kubelet backs off (ImagePullBackOff), its retry
    succeeds. stack-facts-2.md §3: one ErrImagePull or ImagePullBackOff observation is not final."""
    pulling_deployment(pulls, twin, "blip", "ErrImagePull")
    later([(0.3, lambda: set_waiting(pulls, "blip", "ImagePullBackOff")),
           (0.8, lambda: set_waiting(pulls, "blip", None))])
    wait_for(kube, deployment_ready("blip"), Deadline(30))


def test_a_pull_that_keeps_failing_through_the_back_off_is_terminal_with_a_sentence(twin, pulls, kube):
    """The kubelet's retries after its back-off steps failed again: three failed pulls end the wait at once."""
    pulling_deployment(pulls, twin, "pull", "ErrImagePull")
    cycle = ["ImagePullBackOff", "ErrImagePull", "ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"]
    later([(0.3 * (n + 1), lambda r=reason: set_waiting(pulls, "pull", r)) for n, reason in enumerate(cycle)])
    started = time.monotonic()
    with pytest.raises(TerminalState) as e:
        wait_for(kube, deployment_ready("pull"), Deadline(60))
    assert time.monotonic() - started < 5
    assert f"deployment {PULLS_NS}/pull: 0/1 ready; container main ErrImagePull (example/pull:1)" in str(e.value)
    assert "(image pull of container main failed 3 times in " in str(e.value)
    assert e.value.category is Category.IMAGE_PULL and str(e.value).startswith("[image-pull] ")


def test_an_image_pull_backoff_that_persists_past_the_window_is_terminal(twin, pulls, kube, monkeypatch):
    """Status writes can coalesce, so a pull failure seen without a break for longer than the window (more than one
    back-off step) is terminal too, before the deadline."""
    from stack import readiness
    monkeypatch.setattr(readiness, "PULL_FAILURE_WINDOW_SECONDS", 1.0)
    pulling_deployment(pulls, twin, "stuck", "ImagePullBackOff")
    started = time.monotonic()
    with pytest.raises(TerminalState) as e:
        wait_for(kube, deployment_ready("stuck"), Deadline(60))
    assert 0.9 < time.monotonic() - started < 10
    assert "container main ImagePullBackOff (example/stuck:1) (image pull of container main failing for 1s without " \
           "a break" in str(e.value)
    assert e.value.category is Category.IMAGE_PULL


def test_an_invalid_image_name_fails_at_once(twin, pulls, kube):
    pulling_deployment(pulls, twin, "invalid", "InvalidImageName")
    started = time.monotonic()
    with pytest.raises(TerminalState, match="InvalidImageName") as e:
        wait_for(kube, deployment_ready("invalid"), Deadline(60))
    assert time.monotonic() - started < 5
    assert e.value.category is Category.IMAGE_PULL
