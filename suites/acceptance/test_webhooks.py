"""Every expected webhook configuration exists with a valid PEM caBundle, and each component's webhooks really admit:
a dry-run create of a valid object is admitted and an invalid one is denied (the way `cmctl check api` proves
cert-manager). This catches "x509: certificate signed by unknown authority" and "no endpoints" right after an install.
"""
from __future__ import annotations

import copy
import re

import allure
import pytest

from stack import retry
from stack.kube import KubeError
from stack.readiness import webhook_config_status

ADMISSION = "admissionregistration.k8s.io/v1"
# A webhook that is not serving yet is a race worth a few seconds; a stack that stays broken fails after them.
PROBE_ATTEMPTS = 4


@pytest.mark.area("webhooks", story="Webhook configurations with valid CA bundles")
@pytest.mark.criteria("AC-WEBHOOKS")
@pytest.mark.per_component(has="webhooks")
def test_webhook_configurations(component, profile, kube, stack, diagnostics):
    problems = []
    for hook in profile.components[component].inventory["webhooks"]:
        diagnostics.object(ADMISSION, hook["kind"], hook["name"])
        status = webhook_config_status(kube.get(ADMISSION, hook["kind"], hook["name"]),
                                       f"{hook['kind']} {hook['name']}")
        if not status.done:
            problems.append(status.observed)
    assert not problems, f"{component}: " + "; ".join(problems)


def _probe_object(template: dict, namespace: str, kube) -> dict:
    obj = copy.deepcopy(template)
    resource = kube.resource(obj["apiVersion"], obj["kind"])
    if resource.namespaced:
        obj["metadata"]["namespace"] = namespace
    return obj


def _dry_run(kube, obj: dict):
    return retry.call(lambda: kube.create(obj, dry_run=True), what=f"dry-run {obj['kind']}",
                      is_transient=retry.race_signature, attempts=PROBE_ATTEMPTS)


@pytest.mark.area("webhooks", story="Webhooks admit valid and deny invalid objects")
@pytest.mark.criteria("AC-WEBHOOKS")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="admission_probes")
def test_webhooks_admitting(component, profile, kube, stack, test_namespace, diagnostics):
    ns = test_namespace("webhooks")
    inventory = profile.components[component].inventory
    diagnostics.namespace(*inventory.get("namespaces", []))          # the webhook server's pods, events and logs
    for hook in inventory.get("webhooks", []):
        diagnostics.object(ADMISSION, hook["kind"], hook["name"])
    for probe in profile.components[component].admission_probes:
        webhook = probe["webhook"]
        admit = _probe_object(probe["admit"], ns, kube)
        try:
            with allure.step(f"dry-run a valid {admit['kind']}: webhook {webhook} must admit it"):
                _dry_run(kube, admit)
        except KubeError as e:
            pytest.fail(f"{component}: webhook {webhook} not admitting a valid {admit['kind']}: {e.message}",
                        pytrace=False)
        deny = _probe_object(probe["deny"], ns, kube)
        try:
            with allure.step(f"dry-run an invalid {deny['kind']}: webhook {webhook} must deny it"):
                _dry_run(kube, deny)
        except KubeError as e:
            assert re.search(probe["deny_pattern"], e.message), (
                f"{component}: an invalid {deny['kind']} was refused, but not by webhook {webhook}: {e.message}")
        else:
            pytest.fail(f"{component}: webhook {webhook} admitted an invalid {deny['kind']} "
                        f"(expected a denial matching /{probe['deny_pattern']}/)", pytrace=False)
