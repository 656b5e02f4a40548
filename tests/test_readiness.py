"""Failure messages read as sentences about the stack, and terminal states are recognised."""
from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.failures import Category
from stack.readiness import ca_bundle_problem, crd_status, deployment_status, image_matches, pod_problems


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
    from stack import checks
    from stack.profile import WorkloadRef
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
