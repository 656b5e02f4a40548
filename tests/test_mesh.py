"""Istio's peer authentication precedence as AC-MESH-MTLS computes it (stack/mesh.py), the AuthorizationPolicy
AC-MESH-AUTHZ writes, and how a plaintext request through the API server's pod proxy is judged: refused when the API
server answers for a Pod that did not, denied when the Pod's side answers 403 itself."""
from __future__ import annotations

import json

from stack.mesh import PlaintextAnswer, effective_mode, has_sidecar, model_policy, rules_without_a_principal

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


def test_a_403_from_the_pods_side_is_a_denial_and_the_api_servers_own_403_is_not():
    envoy = PlaintextAnswer.of(403, "RBAC: access denied")
    assert envoy.denied and envoy.kept_out and not envoy.refused and str(envoy) == "403 denied: RBAC: access denied"
    forbidden = PlaintextAnswer.of(403, status(403, 'pods "x" is forbidden: cannot create resource "pods/proxy"'))
    assert not forbidden.kept_out


def test_only_rules_that_require_a_principal_or_a_namespace_keep_out_a_request_without_one():
    rules = [{"from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"]}}]},
             {"from": [{"source": {"namespaces": ["knative-serving"]}}], "to": [{"operation": {"paths": ["/"]}}]},
             {"to": [{"operation": {"methods": ["GET"]}}]},                   # anyone's GET
             {"from": [{"source": {"principals": ["a"]}}, {"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]
    assert rules_without_a_principal(rules) == [2, 3]


def test_the_policy_allows_the_profiles_rules_on_the_models_pods_only():
    rules = [{"from": [{"source": {"namespaces": ["istio-system"]}}]}]
    policy = model_policy("models", "sklearn-iris", rules)
    assert policy["spec"] == {"action": "ALLOW", "rules": rules,
                              "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "sklearn-iris"}}}
    assert (policy["kind"], policy["metadata"]["namespace"]) == ("AuthorizationPolicy", "models")
