"""Failure categories as structured facts: each check names the category its failures belong to, and the exceptions a
check raises carry it, so reports file a failure by the check that failed, never by reading its message.

`category_of(error)` answers for any exception: a check's failure by its field, an API error by its status and type;
None for a foreign exception (then, and only then, reports fall back to matching its text).
"""
from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    """Why a check failed. The value is the short tag carried in failure messages (see `tag`)."""

    INFRASTRUCTURE = "infrastructure"   # the API server, Docker or the cluster itself
    IMAGE_PULL = "image-pull"           # a container image cannot be pulled
    CRASH_LOOP = "crash-loop"           # a container exits and restarts in a loop, or an init container failed
    WEBHOOK_TLS = "webhook-tls"         # a webhook without endpoints, CA bundle or a trusted certificate
    CRD = "crd"                         # a CRD absent, not Established or not serving a version
    CERTIFICATE = "certificate"         # cert-manager issuance: not Ready, wrong content
    PREDICT = "predict"                 # the InferenceService does not become Ready or answers wrongly
    INSTALL = "install"                 # the install of the stack failed, so the check could not run
    NOT_READY = "not-ready"             # a component still pending (no terminal state) when its deadline passed
    PERMISSION = "permission"           # the identity may not do what the check needs (HTTP 403; stack/rbac.py)
    SECURITY = "security"               # a security policy does not hold: a Secret readable, a certificate expiring
    MONITORING = "monitoring"           # the model's metrics do not count what was served, or Prometheus lacks them
    AUTOSCALING = "autoscaling"         # the autoscaler does not hold the InferenceService's bounds and target
    AVAILABILITY = "availability"       # the stack is not highly available: one replica, one node, no PDB, a stale Lease

    @property
    def title(self) -> str:
        return TITLES[self]

    @property
    def tag(self) -> str:
        """The token that starts a check failure's message: "[image-pull] ..."."""
        return f"[{self.value}]"


TITLES = {
    Category.INFRASTRUCTURE: "Infrastructure",
    Category.IMAGE_PULL: "Image pull",
    Category.CRASH_LOOP: "Crash loop",
    Category.WEBHOOK_TLS: "Webhook/TLS not ready",
    Category.CRD: "CRD missing or not Established",
    Category.CERTIFICATE: "Certificate issuance",
    Category.PREDICT: "InferenceService or prediction",
    Category.INSTALL: "Install failure",
    Category.NOT_READY: "Component not ready",
    Category.PERMISSION: "Permission denied (RBAC)",
    Category.SECURITY: "Security policy",
    Category.MONITORING: "Monitoring",
    Category.AUTOSCALING: "Autoscaling",
    Category.AVAILABILITY: "High availability",
}


class CheckFailure(AssertionError):
    """A check that failed, with the category of the check. An AssertionError: retries never repeat it."""

    def __init__(self, message: str, category: Category):
        self.category = category
        self.text = message
        super().__init__(f"{category.tag} {message}")


class Unanswered(CheckFailure):
    """A check that got no answer at all (a connection refused or reset, a gateway answering 503 until the deadline),
    as opposed to a wrong answer: a component it needs that is not running may be the cause (stack/blocking.py)."""


def expect(condition: object, category: Category, message: str) -> None:
    """An assertion of a check, failing with its category: `expect(sans == wanted, Category.CERTIFICATE, "...")`."""
    if not condition:
        raise CheckFailure(message, category)


# Waiting reasons of containers (kubelet) and the category they stand for.
WAITING_REASON_CATEGORY = {
    "ImagePullBackOff": Category.IMAGE_PULL,
    "ErrImagePull": Category.IMAGE_PULL,
    "InvalidImageName": Category.IMAGE_PULL,
    "ErrImageNeverPull": Category.IMAGE_PULL,
    "CrashLoopBackOff": Category.CRASH_LOOP,
    "RunContainerError": Category.CRASH_LOOP,
}



def category_of(error: BaseException) -> Category | None:
    """The structured category of an exception (its `category` field: a check's failure, an install error, an API
    error as stack.kube.KubeError files it), or None for one that carries none (a foreign exception)."""
    category = getattr(error, "category", None)
    return category if isinstance(category, Category) else None
