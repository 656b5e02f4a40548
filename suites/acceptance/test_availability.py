"""AC-HA: the stack itself is highly available, as upstream describes it for each component (the profile's `ha:`
sections cite it): enough Ready replicas on more than one node, a PodDisruptionBudget that lets a node drain, leader
Leases held and renewed by a Ready Pod of their workload, and no `failurePolicy: Fail` webhook behind a single
endpoint. Read-only: nothing is drained, evicted or restarted. Optional: a profile's `require:` or the run's
`--require AC-HA` makes it count; every run's sign-off shows the posture all the same (fixtures/runmeta.py)."""
from __future__ import annotations

import allure
import pytest

from stack import ha
from stack.failures import Category, expect

pytestmark = [pytest.mark.area("availability", story="high availability", feature="availability"),
              pytest.mark.severity("critical")]


@pytest.mark.criteria("AC-HA")
@allure.title("The stack is highly available: replicas over nodes, drainable budgets, live Leases, redundant webhooks")
def test_the_stack_is_highly_available(kube, profile, evidence):
    posture = ha.read_posture(kube, profile)
    seen = ha.record_of(posture)
    evidence.add("HA posture", {
        **{row.workload: f"{row.replicas} Ready on {row.nodes}; budgets: {row.budgets}; Leases: {row.leases}; "
                         f"age {row.age}" for row in seen.workloads},
        **{hook.webhook: f"failurePolicy {hook.failure_policy}, {hook.ready_endpoints} ready endpoint(s) behind "
                         f"{hook.service or 'a URL'}" for hook in seen.webhooks}})
    expect(seen.workloads, Category.AVAILABILITY, "the profile lists no HA workload (ha: sections)")
    expect(not seen.findings, Category.AVAILABILITY,
           f"{len(seen.findings)} single point(s) of failure: " + "; ".join(seen.findings))
