"""Every expected webhook configuration exists with a valid PEM caBundle, and each component's webhooks really admit:
a dry-run create of a valid object is admitted and an invalid one is denied (the way `cmctl check api` proves
cert-manager). This catches "x509: certificate signed by unknown authority" and "no endpoints" right after an install.
"""
from __future__ import annotations

import allure
import pytest

from stack.checks import ADMISSION_API, admission_probe, webhook_ca_bundles
from stack.wait import require, wait_for

# A webhook that is not serving yet is a race worth a few seconds; a stack that stays broken fails after them.
PROBE_SECONDS = 10


@pytest.mark.area("webhooks", story="Webhook configurations with valid CA bundles")
@pytest.mark.criteria("AC-WEBHOOKS")
@pytest.mark.per_component(has="webhooks")
@pytest.mark.needs(component=True)
@allure.title("{component}: webhook configurations carry a valid CA bundle")
def test_webhook_configurations(component, profile, kube, stack, diagnostics, evidence):
    hooks = profile.components[component].inventory["webhooks"]
    for hook in hooks:
        diagnostics.object(ADMISSION_API, hook["kind"], hook["name"])
    evidence.seen(require(kube, webhook_ca_bundles([(h["kind"], h["name"]) for h in hooks],
                                                   name=f"{component} webhook CA bundles")), "webhook CA bundles")


@pytest.mark.area("webhooks", story="Webhooks admit valid and deny invalid objects")
@pytest.mark.criteria("AC-WEBHOOKS")
@pytest.mark.severity("blocker")
@pytest.mark.per_component(has="admission_probes")
@pytest.mark.needs(component=True)
@allure.title("{component}: webhooks admit a valid object and deny an invalid one")
def test_webhooks_admitting(component, profile, kube, stack, dry_run_namespace, deadline, diagnostics, evidence):
    ns = dry_run_namespace
    inventory = profile.components[component].inventory
    diagnostics.namespace(*inventory.get("namespaces", []))          # the webhook server's pods, events and logs
    for hook in inventory.get("webhooks", []):
        diagnostics.object(ADMISSION_API, hook["kind"], hook["name"])
    budget = deadline("workloads")
    budget.seconds = min(budget.seconds, PROBE_SECONDS)
    for probe in profile.components[component].admission_probes:
        with allure.step(f"webhook {probe['webhook']} admits a valid {probe['admit']['kind']} and denies an invalid "
                         f"{probe['deny']['kind']} (dry-run)"):
            snap = wait_for(kube, admission_probe(probe, ns), budget, f"{component}: webhook {probe['webhook']}")
        evidence.add(f"admission probe {probe['webhook']}", {
            "admit (dry-run)": probe["admit"], "deny (dry-run)": probe["deny"], "answers": snap.done.observed})
