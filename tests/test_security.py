"""The security checks' judgement, on the objects a cluster returns: certificate validity against the window or a
component's own rotation, and the effective security context of a predictor's containers. (The live answers, the
API server's SubjectAccessReview and the twin's certificates, are proven by the twin runs and their faults.)"""
from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.profile import Profile
from stack.security import CertificateValidity, container_security, stack_certificates

NOW = datetime.datetime(2026, 12, 3, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def validity(left: datetime.timedelta | None, must_last: datetime.timedelta = 30 * DAY) -> CertificateValidity:
    return CertificateValidity("Certificate kserve/serving-cert", "kserve-webhook-server-service.kserve.svc",
                               None if left is None else NOW + left, must_last, "the 30-day window")


def test_a_certificate_is_judged_against_what_it_must_still_last():
    assert validity(31 * DAY).problem(NOW) is None
    assert "within 30.0 days" in validity(10 * DAY).problem(NOW) and "in 10.0 days" in validity(10 * DAY).problem(NOW)
    assert "expired at" in validity(-DAY).problem(NOW)
    assert "never issued" in validity(None).problem(NOW)
    # a self-rotated CA a week long is fine with 2 days left, not with 6 hours
    assert validity(2 * DAY, datetime.timedelta(hours=12)).problem(NOW) is None
    assert validity(datetime.timedelta(hours=6), datetime.timedelta(hours=12)).problem(NOW) is not None


def _ca_pem(days: float) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook.knative-serving.svc")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - DAY).not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


class RecordedCluster:
    """What a seed cluster's API answers to the reads the check makes (Certificates per namespace, each kind of
    webhook configuration), with every webhook's caBundle holding the same CA."""

    def __init__(self, ca_days: float, cert_not_after: datetime.datetime):
        self.bundle = base64.b64encode(_ca_pem(ca_days)).decode()
        self.not_after = cert_not_after
        self.webhooks = {(w["kind"], w["name"]) for _, w in Profile.load("seed").inventory("webhooks")}

    def list(self, api_version, kind, namespace=None, **_):
        if kind != "Certificate":
            return [{"kind": kind, "metadata": {"name": name}, "webhooks": [{"clientConfig": {"caBundle": self.bundle}}]}
                    for k, name in sorted(self.webhooks) if k == kind], "1"
        if namespace != "kserve":
            return [], "1"
        return [{"metadata": {"name": "serving-cert", "namespace": "kserve"},
                 "spec": {"dnsNames": ["kserve-webhook-server-service.kserve.svc"]},
                 "status": {"notAfter": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}}], "1"


def test_knatives_self_rotated_ca_must_last_its_rotation_and_the_rest_the_window():
    seed = Profile.load("seed")
    now = datetime.datetime.now(datetime.timezone.utc)
    found = stack_certificates(RecordedCluster(ca_days=3, cert_not_after=now + 60 * DAY), seed, 30 * DAY)
    problems = {c.source: c.problem(now) for c in found}
    assert problems["Certificate kserve/serving-cert"] is None
    # a 3-day CA: fine for Knative's webhooks (it renews its one-week CA itself), too short for everyone else's
    knative = {s: p for s, p in problems.items() if "knative" in s}
    others = {s: p for s, p in problems.items() if "knative" not in s and s.startswith("caBundle")}
    assert knative and all(p is None for p in knative.values()), knative
    assert others and all(p and "--cert-window-days" in p for p in others.values()), others


@pytest.mark.parametrize("ctx,pod_ctx,problems", [
    ({"runAsNonRoot": True, "allowPrivilegeEscalation": False}, {}, 0),
    ({"allowPrivilegeEscalation": False}, {"runAsNonRoot": True}, 0),            # the pod's setting is inherited
    ({"allowPrivilegeEscalation": False, "runAsUser": 1000}, {}, 0),             # a non-zero user is non-root
    ({"allowPrivilegeEscalation": False}, {}, 1),                                # may run as the image's root
    ({"runAsNonRoot": True}, {}, 1),                                             # unset escalation is allowed
    ({"runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": True}, {}, 1),
    ({"runAsUser": 0, "allowPrivilegeEscalation": True}, {"runAsNonRoot": False}, 2),
])
def test_a_containers_effective_security_context(ctx, pod_ctx, problems):
    pod = {"spec": {"securityContext": pod_ctx, "containers": [{"name": "kserve-container", "securityContext": ctx}]}}
    [found] = container_security(pod)
    assert len(found.problems()) == problems, found


def test_init_containers_are_judged_too_first():
    """KServe v0.20's pod mutator injects the storage-initializer as an init container with the securityContext of
    the ClusterStorageContainer "default": none in the release YAMLs. A restricted Pod Security admission judges init
    containers as it judges the others, so the check does too."""
    restricted = {"runAsNonRoot": True, "allowPrivilegeEscalation": False}
    pod = {"spec": {"initContainers": [{"name": "storage-initializer"}],
                    "containers": [{"name": "kserve-container", "securityContext": restricted}]}}
    found = container_security(pod)
    assert [c.container for c in found] == ["storage-initializer", "kserve-container"]
    assert len(found[0].problems()) == 2 and found[1].problems() == []
    pod["spec"]["initContainers"][0]["securityContext"] = {**restricted, "capabilities": {"drop": ["ALL"]}}
    assert all(not c.problems() for c in container_security(pod))


def test_the_profiles_requiring_pod_security_give_the_storage_initializer_kserves_chart_default():
    """The release YAMLs leave the storage-initializer without a securityContext; the profiles that require
    AC-POD-SECURITY patch the ClusterStorageContainer as KServe's Helm chart does by default."""
    from stack.profile import Profile
    for name in ("latest", "latest-standard"):
        profile = Profile.load(name)
        assert "AC-POD-SECURITY" in profile.required_criteria
        [patch] = [p for p in profile.components["kserve"].patches if p["kind"] == "ClusterStorageContainer"]
        ctx = patch["merge"]["spec"]["container"]["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["allowPrivilegeEscalation"] is False
