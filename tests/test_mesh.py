"""Istio's peer authentication precedence as AC-MESH-MTLS computes it (stack/mesh.py), and how a plaintext request
through the API server's pod proxy is judged: refused only when the API server answers for a Pod that did not."""
from __future__ import annotations

import json

from stack.mesh import PlaintextAnswer, effective_mode, has_sidecar

NS = "models"
LABELS = {"app": "iris"}


def pa(namespace: str, name: str, mode: str | None = None, selector: dict | None = None, ports: dict | None = None,
       created: str = "2026-01-01T00:00:00Z") -> dict:
    spec: dict = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created}, "spec": spec}


def test_no_policy_is_istios_default_permissive():
    assert effective_mode([], NS, LABELS).mode == "PERMISSIVE"


def test_the_mesh_policy_applies_to_a_namespace_without_its_own():
    got = effective_mode([pa("istio-system", "default", "STRICT")], NS, LABELS)
    assert (got.mode, got.source) == ("STRICT", "mesh PeerAuthentication istio-system/default")


def test_a_namespace_policy_overrides_the_mesh_and_a_workload_policy_overrides_both():
    policies = [pa("istio-system", "default", "STRICT"), pa(NS, "default", "PERMISSIVE")]
    assert effective_mode(policies, NS, LABELS).mode == "PERMISSIVE"
    policies.append(pa(NS, "iris", "STRICT", selector=LABELS))
    assert effective_mode(policies, NS, LABELS).source == f"workload PeerAuthentication {NS}/iris"
    assert effective_mode(policies, NS, {"app": "other"}).mode == "PERMISSIVE"     # not selected


def test_unset_inherits_and_a_port_level_mode_overrides_for_that_port_only():
    policies = [pa("istio-system", "default", "STRICT"), pa(NS, "iris", "UNSET", selector=LABELS,
                                                             ports={8080: "DISABLE"})]
    assert effective_mode(policies, NS, LABELS, port=8080).mode == "DISABLE"
    assert effective_mode(policies, NS, LABELS, port=9090).mode == "STRICT"       # inherited from the mesh


def test_a_selector_policy_in_the_root_namespace_is_ignored_and_the_oldest_of_a_level_applies():
    policies = [pa("istio-system", "scoped", "DISABLE", selector=LABELS),
                pa("istio-system", "newer", "PERMISSIVE", created="2026-06-01T00:00:00Z"),
                pa("istio-system", "older", "STRICT", created="2026-02-01T00:00:00Z")]
    got = effective_mode(policies, NS, LABELS)
    assert (got.mode, got.source) == ("STRICT", "mesh PeerAuthentication istio-system/older")


def test_the_sidecar_is_the_istio_proxy_container_or_native_sidecar():
    assert has_sidecar({"spec": {"containers": [{"name": "kserve-container"}, {"name": "istio-proxy"}]}})
    assert has_sidecar({"spec": {"containers": [{"name": "kserve-container"}],
                                 "initContainers": [{"name": "istio-proxy", "restartPolicy": "Always"}]}})
    assert not has_sidecar({"spec": {"containers": [{"name": "kserve-container"}]}})


def status(code: int, message: str) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})


def test_a_reset_connection_is_the_api_servers_status_and_counts_as_refused():
    answer = PlaintextAnswer.of(500, status(500, "error trying to reach service: read: connection reset by peer"))
    assert answer.refused and "connection reset" in answer.detail


def test_the_models_own_answer_and_throttling_are_not_refusals():
    assert not PlaintextAnswer.of(200, json.dumps({"predictions": [1, 1]})).refused
    assert not PlaintextAnswer.of(500, json.dumps({"error": "model failed"})).refused    # the Pod answered
    assert not PlaintextAnswer.of(429, status(429, "too many requests")).refused
