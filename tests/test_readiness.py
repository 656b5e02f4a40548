"""Failure messages read as sentences about the stack, and terminal states are recognised."""
from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack import checks
from stack.failures import Category
from stack.profile import WorkloadRef
from stack.readiness import (
    RECENT_TERMINATION_SECONDS,
    ca_bundle_problem,
    crd_status,
    daemonset_status,
    deployment_status,
    image_matches,
    pod_problems,
)


def _deployment(ready=0, want=1, generation=1, observed=1, available=False):
    return {"metadata": {"name": "kserve-controller-manager", "namespace": "kserve", "generation": generation},
            "spec": {"replicas": want},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "availableReplicas": ready,
                       "updatedReplicas": ready, "replicas": want,
                       "conditions": [{"type": "Available", "status": "True" if available else "False"}]}}


def _pod(waiting: dict[str, str] | None = None, init_exit: int | None = None):
    statuses = [{"name": name, "ready": False, "restartCount": 0, "image": image,
                 "state": {"waiting": {"reason": reason}}} for name, (reason, image) in (waiting or {}).items()]
    init = [{"name": "storage-initializer", "image": "kserve/storage-initializer:v0.11.0", "restartCount": 0,
             "state": {"terminated": {"exitCode": init_exit, "reason": "Error"}}}] if init_exit is not None else []
    return {"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"phase": "Pending", "containerStatuses": statuses, "initContainerStatuses": init}}


def test_image_pull_backoff_reads_as_the_issue_example_and_is_terminal_only_if_it_persists():
    pod = _pod({"kube-rbac-proxy": ("ImagePullBackOff", "gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1")})
    pod["status"]["containerStatuses"].insert(0, {"name": "manager", "ready": True, "restartCount": 0,
                                                  "state": {"running": {}}})
    status = deployment_status(_deployment(), [pod], "kserve/kserve-controller-manager")
    assert not status.done
    assert status.observed == ("deployment kserve/kserve-controller-manager: 0/1 ready; container kube-rbac-proxy "
                               "ImagePullBackOff (gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1)")
    # the kubelet retries a failed pull after its back-off: one look is not final (stack-facts-2.md §3); it is an
    # image pull problem all the same, so a timeout in that state is filed as one
    assert status.terminal is None
    assert status.category is Category.IMAGE_PULL
    (pull,) = status.persisting
    assert pull.what == "image pull of container kube-rbac-proxy"
    assert not pull.failed_attempt and pull.attempts >= 3 and pull.seconds > 30
    assert pull.category is Category.IMAGE_PULL


def test_err_image_pull_is_a_failed_attempt_and_invalid_image_name_terminal_at_once():
    (pull,) = pod_problems(_pod({"c": ("ErrImagePull", "i:1")})).persisting
    assert pull.failed_attempt and pull.category is Category.IMAGE_PULL
    assert pod_problems(_pod({"c": ("ErrImagePull", "i:1")})).terminal is None
    invalid = pod_problems(_pod({"c": ("InvalidImageName", "i:1")}))
    assert invalid.terminal == "container c InvalidImageName (i:1)"
    assert invalid.category is Category.IMAGE_PULL


def test_crash_loop_is_terminal_and_a_creating_container_is_not():
    crash = pod_problems(_pod({"c": ("CrashLoopBackOff", "i:1")}))
    assert crash.terminal and crash.category is Category.CRASH_LOOP and crash.looping
    assert pod_problems(_pod({"c": ("ContainerCreating", "i:1")})).terminal is None


def test_storage_initializer_failure_is_terminal():
    health = pod_problems(_pod(init_exit=1))
    assert health.category is Category.CRASH_LOOP
    assert health.terminal == "init container storage-initializer failed: Error exit 1 (kserve/storage-initializer:v0.11.0)"


NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.timezone.utc)


def _running_pod(restarts: int, finished_ago: float | None, reason: str = "Error", exit_code: int = 1):
    last = {} if finished_ago is None else {"terminated": {
        "reason": reason, "exitCode": exit_code,
        "finishedAt": (NOW - datetime.timedelta(seconds=finished_ago)).isoformat().replace("+00:00", "Z")}}
    return {"metadata": {"name": "controller-857d568577-5pfdj", "namespace": "knative-serving"}, "spec": {"containers": []},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "controller", "ready": True, "restartCount": restarts, "image": "i:1",
                 "state": {"running": {}}, "lastState": last}]}}


def test_old_restarts_of_a_long_running_pod_are_evidence_not_a_crash_loop():
    # a controller up for weeks that lost its leader lease 41 times, the last 12 days ago: no loop now
    health = pod_problems(_running_pod(41, 12 * 86400), now=NOW)
    assert not health.looping and not health.problems and health.terminal is None
    assert health.past_restarts == ["container controller restarted 41 times, last Error (exit 1) 12d ago"]


def test_restarts_with_a_recent_termination_are_a_loop_and_a_single_recent_restart_is_not():
    recent = pod_problems(_running_pod(5, RECENT_TERMINATION_SECONDS - 30, reason="OOMKilled", exit_code=137), now=NOW)
    assert recent.looping == ["container controller restarted 5 times, last OOMKilled (exit 137) 10m ago"]
    assert recent.problems == recent.looping and not recent.past_restarts
    # one restart a minute ago (a lost leader election) is not a loop: the kubelet's back-off starts at 10 s
    once = pod_problems(_running_pod(1, 60), now=NOW)
    assert not once.looping and once.past_restarts == ["container controller restarted 1 time, last Error (exit 1) 1m ago"]
    # just outside the kubelet's 10-minute reset: out of the loop
    assert not pod_problems(_running_pod(5, RECENT_TERMINATION_SECONDS + 30), now=NOW).looping


def test_restarts_without_a_reported_termination_are_judged_by_their_count():
    # the kubelet lost the last state (a node restart): nothing says the restarts are old
    assert pod_problems(_running_pod(3, None), now=NOW).looping
    assert not pod_problems(_running_pod(2, None), now=NOW).looping


def test_a_deployment_scaled_to_zero_fails_at_once_saying_what_the_profile_expects():
    scaled = deployment_status(_deployment(0, want=0, available=True), [], "kserve/kserve-controller-manager")
    assert not scaled.done and scaled.terminal == scaled.observed
    assert scaled.observed == ("deployment kserve/kserve-controller-manager: 0/0 ready; scaled to 0 replica(s), the "
                               "profile expects at least 1")
    assert scaled.category is Category.NOT_READY
    assert deployment_status(_deployment(0, want=0, available=True), [], "ns/d", min_replicas=0).done
    ha = deployment_status(_deployment(1, want=1, available=True), [], "istio-system/istiod", min_replicas=2)
    assert not ha.done and "the profile expects at least 2" in ha.terminal


def test_a_daemonset_with_fewer_scheduled_pods_than_expected_is_not_ready():
    ds = {"metadata": {"name": "agent", "namespace": "kserve", "generation": 1},
          "status": {"observedGeneration": 1, "desiredNumberScheduled": 0, "numberReady": 0, "updatedNumberScheduled": 0}}
    assert daemonset_status(ds, [], "kserve/agent", min_replicas=0).done
    none = daemonset_status(ds, [], "kserve/agent")
    assert not none.done and none.observed.endswith("0 scheduled, the profile expects at least 1")


def test_ready_needs_the_current_generation_observed():
    assert deployment_status(_deployment(1, available=True), [], "ns/d").done
    stale = deployment_status(_deployment(1, generation=2, observed=1, available=True), [], "ns/d")
    assert not stale.done and "not yet observed for the current generation" in stale.observed


def test_crd_versions_missing():
    crd = {"metadata": {"name": "x.example.com"}, "spec": {"versions": [{"name": "v1", "served": True}]},
           "status": {"conditions": [{"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}]}}
    assert crd_status(crd, "x.example.com", ["v1"]).done
    missing = crd_status(crd, "x.example.com", ["v1", "v2"])
    assert not missing.done and "missing versions ['v2']" in missing.observed
    assert crd_status(None, "x.example.com").observed == "CRD x.example.com absent"


def test_image_pins_with_unpinnable_digests():
    assert image_matches("gcr.io/knative-releases/x@sha256:*", "gcr.io/knative-releases/x@sha256:" + "a" * 64)
    assert not image_matches("gcr.io/knative-releases/x@sha256:*", "gcr.io/other/x@sha256:" + "a" * 64)
    assert not image_matches("kserve/kserve-controller:v0.11.0", "kserve/kserve-controller:v0.11.1")


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_ca_bundle_placeholder_and_garbage_are_problems():
    assert ca_bundle_problem("Cg==") == "caBundle not injected (placeholder)"
    assert "not valid PEM" in ca_bundle_problem(base64.b64encode(b"not a cert").decode())
    assert ca_bundle_problem(base64.b64encode(_ca_pem()).decode()) is None


def _scaling_snapshot(autoscaler_state: dict):
    """A model's two pods, and Knative's autoscaler Deployment with one pod in `autoscaler_state`."""
    from stack.snapshot import Snapshot, Source
    model = [{"metadata": {"name": f"m-{i}", "namespace": "ns", "labels": {"app": "m"}},
              "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}} for i in (1, 2)]
    autoscaler = _deployment(ready=0)
    autoscaler["metadata"].update(name="autoscaler", namespace="knative-serving")
    autoscaler["spec"]["selector"] = {"matchLabels": {"app": "autoscaler"}}
    pod = {"metadata": {"name": "autoscaler-1", "namespace": "knative-serving", "labels": {"app": "autoscaler"}},
           "spec": {"containers": [{"name": "autoscaler"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "autoscaler", "ready": False, "restartCount": 7, "image": "autoscaler:1",
                "state": autoscaler_state}]}}
    snap = Snapshot()
    snap.replace(Source("v1", "Pod", "ns", "app=m"), model)
    snap.replace(Source("apps/v1", "Deployment", "knative-serving"), [autoscaler])
    snap.replace(Source("v1", "Pod", "knative-serving"), [pod])
    return snap


def test_a_scaling_wait_ends_at_once_when_the_autoscaler_crash_loops_and_not_while_it_starts():
    scaled = checks.pods_scaled("ns", "app=m", at_most=0, name="ns/m scaled to zero")
    knative = checks.workloads([WorkloadRef("Deployment", "knative-serving", "autoscaler")], name="Knative Serving")
    check = checks.while_running(scaled, knative)
    assert set(check.sources) == set(scaled.sources) | set(knative.sources)
    looping = check.status(_scaling_snapshot({"waiting": {"reason": "CrashLoopBackOff"}}))
    assert not looping.done and looping.category is Category.CRASH_LOOP
    assert looping.terminal.startswith("ns/m scaled to zero cannot happen: deployment knative-serving/autoscaler")
    assert "2 pod(s), 2 Ready" in looping.observed          # what the wait itself last saw stays in the message
    starting = check.status(_scaling_snapshot({"waiting": {"reason": "ContainerCreating"}}))
    assert not starting.done and starting.terminal is None and starting.category is Category.AUTOSCALING


def _istio_snapshot(*deployments: dict):
    from stack.snapshot import Snapshot, Source
    snap = Snapshot()
    snap.replace(Source("apps/v1", "Deployment", "istio-system"), list(deployments))
    snap.replace(Source("v1", "Pod", "istio-system"), [])
    return snap


def _istiod(replicas: int = 1) -> dict:
    dep = _deployment(ready=replicas, want=replicas, available=True)
    dep["metadata"].update(name="istiod", namespace="istio-system")
    return dep


ISTIO = [WorkloadRef("Deployment", "istio-system", "istiod"),
         WorkloadRef("Deployment", "istio-system", "istio-ingressgateway")]


def test_a_workload_absent_from_an_installed_stack_fails_at_once_and_is_waited_for_during_an_install():
    """The first user's cluster has istiod and no ingress gateway: nothing will install it, so the suite's workloads
    check (absent_is_terminal) says so at once; an installer's gate, whose apply may still be on its way, waits."""
    snap = _istio_snapshot(_istiod())
    suite = checks.workloads(ISTIO, absent_is_terminal=True, name="istio workloads").status(snap)
    assert suite.terminal == "deployment istio-system/istio-ingressgateway absent"
    assert checks.workloads(ISTIO, name="istio workloads").status(snap).terminal is None


def test_deployed_fails_on_absent_and_scaled_down_workloads_only():
    """What a check that serves a model needs before it starts: each workload there, scaled as the profile expects.
    Not its readiness: a pod that is starting is for the workloads check and its budget."""
    starting = _istiod()
    starting["status"].update(readyReplicas=0, availableReplicas=0)
    assert checks.deployed([ISTIO[0]]).status(_istio_snapshot(starting)).done
    missing = checks.deployed(ISTIO).status(_istio_snapshot(_istiod()))
    assert not missing.done and missing.terminal == "deployment istio-system/istio-ingressgateway absent"
    scaled = checks.deployed([ISTIO[0]]).status(_istio_snapshot(_istiod(replicas=0)))
    assert scaled.terminal == "deployment istio-system/istiod scaled to 0 replica(s), the profile expects at least 1"


def test_the_release_image_a_profile_overrides_matches_and_a_retired_registry_is_a_risk():
    """The first user applied kserve.yaml v0.11.0 as released: kube-rbac-proxy from gcr.io/kubebuilder, which the
    seed profile replaces because the registry is gone. That is the release, not drift; its registry is a risk."""
    from fixtures.runmeta import retired_images
    from stack.profile import Profile
    from stack.readiness import ImageJudgement, judge_image
    from stack.record import ImageRow
    seed = Profile.load("seed")
    pinned, released = "quay.io/brancz/kube-rbac-proxy:v0.13.1", "gcr.io/kubebuilder/kube-rbac-proxy:v0.13.1"
    as_released = judge_image(seed, pinned, released)
    assert as_released.matches
    assert as_released.risk.startswith(f"{released}: gcr.io/kubebuilder was deleted")
    assert as_released.risk.endswith(f"a new or rescheduled Pod cannot pull it (the profile pins {pinned})")
    assert judge_image(seed, pinned, pinned) == ImageJudgement(True, None)
    assert not judge_image(seed, pinned, "quay.io/brancz/kube-rbac-proxy:v0.18.0").matches
    row = ImageRow("kserve", "kserve", "kserve-controller-manager", "kube-rbac-proxy", released, None)
    (risk,) = retired_images([row], seed)
    assert risk.id == "image-from-retired-registry"
    assert risk.text.startswith(f"kserve/kserve-controller-manager container kube-rbac-proxy runs {released}")
    assert retired_images([ImageRow("kserve", "kserve", "kserve-controller-manager", "kube-rbac-proxy", pinned,
                                    None)], seed) == []


def test_drift_to_an_image_of_a_retired_registry_says_it_cannot_be_pulled_again():
    """A hand-upgraded kube-rbac-proxy still from gcr.io/kubebuilder: drift, and the line says what the user must act
    on (the registry is gone), not only which image the profile pins."""
    from stack.profile import Profile
    from stack.readiness import image_drift, judge_image
    seed = Profile.load("seed")
    pinned, running = "quay.io/brancz/kube-rbac-proxy:v0.13.1", "gcr.io/kubebuilder/kube-rbac-proxy:v0.14.0"
    judged = [judge_image(seed, pinned, running)]
    line = image_drift("kserve/kserve-controller-manager", "kube-rbac-proxy", running, pinned, judged)
    assert line.startswith(f"kserve/kserve-controller-manager container kube-rbac-proxy: runs {running}, "
                           f"profile pins {pinned}; {running}: gcr.io/kubebuilder was deleted")
    assert "cannot pull it" in line
    other = "quay.io/brancz/kube-rbac-proxy:v0.18.0"
    assert image_drift("w", "c", other, pinned, [judge_image(seed, pinned, other)]) == \
        f"w container c: runs {other}, profile pins {pinned}"
