"""The twin's fake API server, exercised only through the official kubernetes client (and kubectl when present)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

from twin.apiserver import AdmissionDenied, ApiServer
from twin.api_store import ApiError

pytestmark = pytest.mark.twin


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ApiServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kubeconfig(server, tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    server.write_kubeconfig(path)
    return path


@pytest.fixture(scope="module")
def api(kubeconfig):
    return config.new_client_from_config(str(kubeconfig))


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core):
    name = "t-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name}})
    return name


def wait_for(predicate, timeout=3.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %.1fs" % timeout)


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def deployment(name, containers=None, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": containers or [{"name": "main", "image": "nginx:1.25"}]}}}}


def crd(group, plural, kind, scope, versions=("v1",), status=True):
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": [kind[:2].lower()]},
                     "versions": [{"name": v, "served": True, "storage": n == 0,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}},
                                   **({"subresources": {"status": {}}} if status else {})}
                                  for n, v in enumerate(versions)]}}


# ---------------------------------------------------------------------------------------------------------------
# discovery, namespaces, built-in objects

def test_discovery_through_typed_and_dynamic_clients(api, server, tmp_path):
    assert client.VersionApi(api).get_code().git_version == "v1.27.3"
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core_resources["pods"].namespaced is True and core_resources["pods"].kind == "Pod"
    assert core_resources["namespaces"].namespaced is False
    assert "ns" in core_resources["namespaces"].short_names
    assert {"pods/status", "pods/log", "services/proxy"} <= set(core_resources)
    apps_resources = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert "deployments/status" in apps_resources and "watch" in apps_resources["deployments"].verbs
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert groups["autoscaling"].preferred_version.version == "v2"
    assert {"apps", "batch", "rbac.authorization.k8s.io", "policy", "coordination.k8s.io"} <= set(groups)
    scope = {(r.name): r.namespaced for r in
             client.RbacAuthorizationV1Api(api).get_api_resources().resources}
    assert scope["roles"] is True and scope["clusterroles"] is False

    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.namespaced and "status" in deployments.subresources
    webhooks = dyn.resources.get(api_version="admissionregistration.k8s.io/v1", kind="ValidatingWebhookConfiguration")
    assert webhooks.namespaced is False
    nodes = dyn.resources.get(api_version="v1", kind="Node").get()
    node = nodes.items[0]
    assert node.metadata.name == "twin-control-plane"
    assert node.status.nodeInfo.kubeletVersion == "v1.27.3"
    assert node.to_dict()["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == "127.0.0.1"
    assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]


def test_namespace_lifecycle_and_cleanup_with_contents(core, apps, api, server):
    name = "life-" + uuid.uuid4().hex[:6]
    created = core.create_namespace({"metadata": {"name": name}})
    assert created.status.phase == "Active"
    assert created.metadata.labels["kubernetes.io/metadata.name"] == name
    assert name in [n.metadata.name for n in core.list_namespace().items]
    core.create_namespaced_config_map(name, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    apps.create_namespaced_deployment(name, deployment("web"))
    core.create_namespaced_config_map(name, {"metadata": {"name": "held", "finalizers": ["test.twin/hold"]}})
    server.store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": name}})

    deleted = core.delete_namespace(name)  # a pending deletion answers the object, not a Status
    deleted = deleted if isinstance(deleted, dict) else deleted.to_dict()
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
    assert err.value.status == 403
    assert status_of(err.value)["message"] == \
        f"unable to create new content in namespace {name} because it is being terminated"
    # Everything but the object held by a finalizer goes quickly; the namespace waits for it.
    wait_for(lambda: [c.metadata.name for c in core.list_namespaced_config_map(name).items] == ["held"], 1.0)
    assert apps.list_namespaced_deployment(name).items == []
    assert core.read_namespace(name).status.phase == "Terminating"
    core.patch_namespaced_config_map("held", name, {"metadata": {"finalizers": None}})
    started = time.monotonic()
    wait_for(lambda: name not in [n.metadata.name for n in core.list_namespace().items], 1.0)
    assert time.monotonic() - started < 1.0

    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(name, {"metadata": {"name": "x"}})
    assert err.value.status == 404 and status_of(err.value)["message"] == f'namespaces "{name}" not found'
    with pytest.raises(ApiException) as err:
        core.delete_namespace("default")
    assert err.value.status == 403


def test_core_apps_and_admissionregistration_objects(core, apps, api, ns):
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "web"},
                                              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    assert svc.spec.cluster_ip.startswith("10.96.") and svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].target_port == 80 and svc.spec.ports[0].protocol == "TCP"
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"},
                                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert pod.status.phase == "Pending" and pod.spec.restart_policy == "Always"
    assert pod.spec.containers[0].image_pull_policy == "Always"
    secret = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert secret.data == {"k": "dg=="} and secret.type == "Opaque"
    dep = apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    assert dep.metadata.generation == 1 and dep.spec.strategy.type == "RollingUpdate"
    assert dep.metadata.uid and int(dep.metadata.resource_version) > 0
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 2
    core.create_namespaced_service_account(ns, {"metadata": {"name": "sa"}})
    core.create_namespaced_endpoints(ns, {"metadata": {"name": "web"}, "subsets": []})

    adm = client.AdmissionregistrationV1Api(api)
    hook = {"metadata": {"name": f"vw-{ns}"},
            "webhooks": [{"name": "validate.twin.example.com", "sideEffects": "None",
                          "admissionReviewVersions": ["v1"],
                          "clientConfig": {"service": {"namespace": ns, "name": "web", "path": "/validate"}},
                          "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                     "resources": ["pods"]}]}]}
    created = adm.create_validating_webhook_configuration(hook)
    assert created.webhooks[0].failure_policy == "Fail"
    assert created.webhooks[0].client_config.service.port == 443
    assert f"vw-{ns}" in [w.metadata.name for w in adm.list_validating_webhook_configuration().items]
    bad = dict(hook, metadata={"name": f"mw-{ns}"})
    bad["webhooks"] = [dict(hook["webhooks"][0], sideEffects="Unknown")]
    with pytest.raises(ApiException) as err:
        adm.create_mutating_webhook_configuration(bad)
    assert err.value.status == 422 and "webhooks[0].sideEffects" in status_of(err.value)["message"]

    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}})
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid" and body["kind"] == "Status"
    assert body["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value')
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", ns)
    body = status_of(err.value)
    assert (err.value.status, body["reason"], body["message"]) == (404, "NotFound", 'configmaps "missing" not found')
    assert body["details"] == {"name": "missing", "group": "", "kind": "configmaps"}
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(ns, dict(deployment("mismatch"), spec=dict(
            deployment("mismatch")["spec"], selector={"matchLabels": {"app": "other"}})))
    assert err.value.status == 422
    assert "`selector` does not match template `labels`" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "web"}})
        core.create_namespaced_config_map(ns, {"metadata": {"name": "web"}})
    assert status_of(err.value)["message"] == 'configmaps "web" already exists'

    # optimistic concurrency on PUT
    cm = core.read_namespaced_config_map("web", ns)
    core.replace_namespaced_config_map("web", ns, {"metadata": {"name": "web", "resourceVersion":
                                                                 cm.metadata.resource_version}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("web", ns, {"metadata": {"name": "web", "resourceVersion":
                                                                     cm.metadata.resource_version}, "data": {"a": "2"}})
    assert err.value.status == 409
    assert "the object has been modified; please apply your changes to the latest version and try again" in \
        status_of(err.value)["message"]


def test_crd_registration_conditions_and_custom_resources(api, server):
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    ns = "crd-" + uuid.uuid4().hex[:6]
    core.create_namespace({"metadata": {"name": ns}})
    ext.create_custom_resource_definition(crd("twin.example.com", "widgets", "Widget", "Namespaced",
                                              versions=("v1", "v1beta1")))
    ext.create_custom_resource_definition(crd("twin.example.com", "gadgets", "Gadget", "Cluster", status=False))
    got = ext.read_custom_resource_definition("widgets.twin.example.com")
    conditions = {c.type: c for c in got.status.conditions}
    assert (conditions["Established"].status, conditions["Established"].reason) == ("True", "InitialNamesAccepted")
    assert (conditions["NamesAccepted"].status, conditions["NamesAccepted"].reason) == ("True", "NoConflicts")
    assert got.status.accepted_names.kind == "Widget" and got.status.accepted_names.list_kind == "WidgetList"
    assert got.status.stored_versions == ["v1"]

    group = next(g for g in client.ApisApi(api).get_api_versions().groups if g.name == "twin.example.com")
    assert group.preferred_version.version == "v1" and len(group.versions) == 2

    widget = custom.create_namespaced_custom_object("twin.example.com", "v1", ns, "widgets", {
        "apiVersion": "twin.example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "labels": {"t": "x"}},
        "spec": {"size": 3}, "status": {"ignored": True}})
    assert widget["metadata"]["generation"] == 1 and "status" not in widget
    beta = custom.get_namespaced_custom_object("twin.example.com", "v1beta1", ns, "widgets", "w1")
    assert beta["apiVersion"] == "twin.example.com/v1beta1" and beta["spec"] == {"size": 3}
    listed = custom.list_namespaced_custom_object("twin.example.com", "v1", ns, "widgets", label_selector="t=x")
    assert listed["kind"] == "WidgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    custom.patch_namespaced_custom_object_status("twin.example.com", "v1", ns, "widgets", "w1",
                                                 {"status": {"ready": True}})
    after = custom.get_namespaced_custom_object("twin.example.com", "v1", ns, "widgets", "w1")
    assert after["status"] == {"ready": True} and after["metadata"]["generation"] == 1

    gadget = custom.create_cluster_custom_object("twin.example.com", "v1", "gadgets", {
        "apiVersion": "twin.example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"on": True}})
    assert "namespace" not in gadget["metadata"]
    assert [g["metadata"]["name"] for g in custom.list_cluster_custom_object("twin.example.com", "v1", "gadgets")[
        "items"]] == ["g1"]
    assert server.store.resource_for("twin.example.com/v1", "Gadget").namespaced is False

    ext.delete_custom_resource_definition("widgets.twin.example.com")
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("twin.example.com", "v1", ns, "widgets")
    assert err.value.status == 404
    assert server.store.resource_for("twin.example.com/v1", "Widget") is None
    ext.create_custom_resource_definition(crd("twin.example.com", "widgets", "Widget", "Namespaced"))
    # the custom resources went with the CRD
    assert custom.list_namespaced_custom_object("twin.example.com", "v1", ns, "widgets")["items"] == []
    ext.delete_custom_resource_definition("widgets.twin.example.com")
    ext.delete_custom_resource_definition("gadgets.twin.example.com")


# ---------------------------------------------------------------------------------------------------------------
# writes: server-side apply, patches, status, dry run

APPLY = "application/apply-patch+yaml"


def test_server_side_apply_create_update_noop_and_conflicts(core, apps, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}}
    obj, code, _ = core.patch_namespaced_config_map_with_http_info("ssa", ns, body, field_manager="mgr-a",
                                                                   _content_type=APPLY)
    assert code == 201 and obj.data == {"a": "1", "b": "2"}
    entry = obj.metadata.managed_fields[0]
    assert (entry.manager, entry.operation, entry.fields_type) == ("mgr-a", "Apply", "FieldsV1")
    assert set(entry.fields_v1["f:data"]) == {"f:a", "f:b"}

    body["data"] = {"a": "10"}  # b is no longer applied by its only owner: removed
    obj, code, _ = core.patch_namespaced_config_map_with_http_info("ssa", ns, body, field_manager="mgr-a",
                                                                   _content_type=APPLY)
    assert code == 200 and obj.data == {"a": "10"}
    rv = obj.metadata.resource_version
    again = core.patch_namespaced_config_map("ssa", ns, body, field_manager="mgr-a", _content_type=APPLY)
    assert again.metadata.resource_version == rv

    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "99"}}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("ssa", ns, other, field_manager="mgr-b", _content_type=APPLY)
    status = status_of(err.value)
    assert err.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "mgr-a": .data.a'
    forced = core.patch_namespaced_config_map("ssa", ns, other, field_manager="mgr-b", force=True,
                                              _content_type=APPLY)
    assert forced.data == {"a": "99"}
    owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
    assert "f:a" in owners["mgr-b"]["f:data"] and "mgr-a" not in owners

    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("ssa", ns, other, _content_type=APPLY)
    assert err.value.status == 400 and "fieldManager is required" in status_of(err.value)["message"]

    dep = deployment("ssa-dep", replicas=2)
    apps.patch_namespaced_deployment("ssa-dep", ns, dep, field_manager="deployer", _content_type=APPLY)
    dep["spec"]["replicas"] = 5
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("ssa-dep", ns, dep, field_manager="autoscaler", _content_type=APPLY)
    assert status_of(err.value)["message"] == \
        'Apply failed with 1 conflict: conflict with "deployer": .spec.replicas'
    # lists keyed by name merge per item: a second manager adds a sidecar without touching main
    sidecar = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa-dep"},
               "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy:1"}]}}}}
    merged = apps.patch_namespaced_deployment("ssa-dep", ns, sidecar, field_manager="injector", _content_type=APPLY)
    assert [c.name for c in merged.spec.template.spec.containers] == ["main", "sidecar"]
    assert merged.spec.replicas == 2 and merged.metadata.generation == 2


def test_merge_json_and_strategic_patches(core, apps, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "p", "labels": {"keep": "1", "drop": "1"}},
                                           "data": {"a": "1"}})
    merged = core.patch_namespaced_config_map("p", ns, {"metadata": {"labels": {"drop": None, "new": "2"}},
                                                        "data": {"b": "2"}},
                                              _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"keep": "1", "new": "2"} and merged.data == {"a": "1", "b": "2"}

    patched = core.patch_namespaced_config_map("p", ns, [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "one"},
        {"op": "add", "path": "/data/c~1d", "value": "3"},
        {"op": "remove", "path": "/data/b"},
        {"op": "copy", "from": "/data/a", "path": "/data/copy"}])
    assert patched.data == {"a": "one", "c/d": "3", "copy": "one"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("p", ns, [{"op": "test", "path": "/data/a", "value": "other"}])
    assert err.value.status == 422

    apps.create_namespaced_deployment(ns, deployment("smp", containers=[{"name": "a", "image": "a:1"},
                                                                        {"name": "b", "image": "b:1"}]))
    smp = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": "b:2"}]}}}})  # dict body -> strategic merge patch
    assert [(c.name, c.image) for c in smp.spec.template.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    assert smp.metadata.generation == 2
    plain = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": "b:3"}]}}}}, _content_type="application/merge-patch+json")
    assert [(c.name, c.image) for c in plain.spec.template.spec.containers] == [("b", "b:3")]


def test_status_subresource_and_generation(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("st"))
    updated = apps.patch_namespaced_deployment_status("st", ns, {"status": {"replicas": 1, "readyReplicas": 1,
                                                                            "observedGeneration": 1}})
    assert updated.status.ready_replicas == 1 and updated.metadata.generation == 1
    ignored = apps.patch_namespaced_deployment("st", ns, {"status": {"readyReplicas": 0}},
                                               _content_type="application/merge-patch+json")
    assert ignored.status.ready_replicas == 1 and ignored.metadata.generation == 1
    current = apps.read_namespaced_deployment_status("st", ns)
    current.spec.replicas = 3  # a status write never changes spec
    current.status.replicas = 3
    replaced = apps.replace_namespaced_deployment_status("st", ns, current)
    assert replaced.spec.replicas == 1 and replaced.status.replicas == 3 and replaced.metadata.generation == 1
    bumped = apps.patch_namespaced_deployment("st", ns, {"spec": {"replicas": 4}})
    assert bumped.metadata.generation == 2 and bumped.status.replicas == 3
    labels_only = apps.patch_namespaced_deployment("st", ns, {"metadata": {"labels": {"x": "y"}}})
    assert labels_only.metadata.generation == 2


def test_dry_run_persists_nothing(core, server, ns):
    rv_before = server.store.resource_version
    obj = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "dry-"}, "data": {"a": "1"}},
                                            dry_run="All")
    assert obj.metadata.name.startswith("dry-") and len(obj.metadata.name) == 9
    assert core.list_namespaced_config_map(ns).items == []
    core.create_namespaced_config_map(ns, {"metadata": {"name": "real"}, "data": {"a": "1"}})
    rv_after_create = server.store.resource_version
    assert int(rv_after_create) == int(rv_before) + 1
    core.patch_namespaced_config_map("real", ns, {"data": {"a": "2"}}, dry_run="All")
    core.patch_namespaced_config_map("real", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "real"}, "data": {"a": "3"}},
                                     field_manager="dry", force=True, dry_run="All", _content_type=APPLY)
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).data == {"a": "1"}
    assert server.store.resource_version == rv_after_create
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad"}}, dry_run="All")
    assert err.value.status == 422


def test_admission_mutates_and_denies_including_dry_run(core, server, ns):
    seen = []

    def admission(req):
        if req.namespace != ns or req.kind != "ConfigMap":
            return None
        seen.append((req.operation, req.name, req.dry_run, req.resource, req.old_object is not None))
        if req.name.startswith("deny"):
            raise AdmissionDenied(f"configmap {req.name} is not welcome here", code=403)
        obj = dict(req.object)
        obj["metadata"] = dict(obj["metadata"], labels={**(obj["metadata"].get("labels") or {}), "admitted": "yes"})
        return obj

    server.add_admission(admission)
    created = core.create_namespaced_config_map(ns, {"metadata": {"name": "ok"}})
    assert created.metadata.labels == {"admitted": "yes"}
    core.patch_namespaced_config_map("ok", ns, {"data": {"a": "1"}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "deny-me"}})
    assert err.value.status == 403
    assert status_of(err.value)["message"] == "configmap deny-me is not welcome here"
    assert status_of(err.value)["reason"] == "Forbidden"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "deny-dry"}}, dry_run="All")
    assert err.value.status == 403
    dry = core.create_namespaced_config_map(ns, {"metadata": {"name": "dry-ok"}}, dry_run="All")
    assert dry.metadata.labels == {"admitted": "yes"}
    assert seen == [("CREATE", "ok", False, "configmaps", False), ("UPDATE", "ok", False, "configmaps", True),
                    ("CREATE", "deny-me", False, "configmaps", False), ("CREATE", "deny-dry", True, "configmaps", False),
                    ("CREATE", "dry-ok", True, "configmaps", False)]
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["ok"]


# ---------------------------------------------------------------------------------------------------------------
# reads: lists, selectors, watches

def test_list_kind_label_and_field_selectors(core, api, ns, tmp_path):
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db", "env": "prod"}),
                         ("c", {"tier": "web"})):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    listed = core.list_namespaced_config_map(ns)
    assert listed.kind == "ConfigMapList" and listed.api_version == "v1" and listed.metadata.resource_version

    def names(**kw):
        return [c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items]
    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier==web,env=prod") == ["a"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="tier in (db, cache)") == ["b"]
    assert names(label_selector="tier notin (db),env") == ["a"]
    assert names(label_selector="!env") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b,metadata.namespace=" + ns) == ["a", "c"]
    with pytest.raises(ApiException) as err:
        names(label_selector="tier in (")
    assert err.value.status == 400

    core.create_namespaced_event(ns, {"metadata": {"name": "ev1"}, "type": "Warning", "reason": "Failed",
                                      "involvedObject": {"kind": "Pod", "name": "p1", "namespace": ns}})
    core.create_namespaced_event(ns, {"metadata": {"name": "ev2"}, "type": "Normal", "reason": "Pulled",
                                      "involvedObject": {"kind": "Pod", "name": "p2", "namespace": ns}})
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=p1,involvedObject.kind=Pod")
    assert [e.metadata.name for e in events.items] == ["ev1"]
    assert [e.metadata.name for e in core.list_namespaced_event(ns, field_selector="type=Normal").items] == ["ev2"]
    assert ns in {c.metadata.namespace for c in core.list_config_map_for_all_namespaces().items}
    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "d.json"))
    assert dyn.resources.get(api_version="v1", kind="ConfigMap").get(namespace=ns).kind == "ConfigMapList"


def test_watch_from_resource_version_and_single_object(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w2"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "1"}})
    core.delete_namespaced_config_map("w2", ns)
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 4:
            w.stop()
    assert seen == [("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w2")]
    assert isinstance(event["object"], client.V1ConfigMap)

    # single-object watch by fieldSelector, live events after the initial ADDED
    results = []

    def consume():
        w2 = watch.Watch()
        for ev in w2.stream(core.list_namespaced_config_map, ns, field_selector="metadata.name=w1",
                            timeout_seconds=3):
            results.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("a")))
            if len(results) == 2:
                w2.stop()
    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.2)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "2"}})
    thread.join(5)
    assert results == [("ADDED", "w1", "1"), ("MODIFIED", "w1", "2")]


def test_watch_bookmarks_and_timeout(core, ns):
    w = watch.Watch()
    started = time.monotonic()
    bookmarks = []
    for event in w.stream(core.list_namespaced_config_map, ns, allow_watch_bookmarks=True, timeout_seconds=3):
        if event["type"] == "BOOKMARK":
            bookmarks.append(event["raw_object"])
            w.stop()
    assert bookmarks and bookmarks[0]["kind"] == "ConfigMap" and bookmarks[0]["metadata"]["resourceVersion"]
    assert 0.5 < time.monotonic() - started < 2.5
    started = time.monotonic()
    assert list(w.stream(core.list_namespaced_config_map, ns, timeout_seconds=1)) == []
    assert 0.8 < time.monotonic() - started < 2.0


def test_watch_gone_after_compact(core, server, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c1"}})
    server.store.compact()
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2))
    assert err.value.status == 410
    assert f"too old resource version: {rv}" in err.value.reason
    # a fresh list-then-watch works again
    rv2 = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c2"}})
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, ns, resource_version=rv2, timeout_seconds=2):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "c2")
        w.stop()


# ---------------------------------------------------------------------------------------------------------------
# proxy, logs, finalizers, garbage collection

def test_service_proxy_and_pod_logs(core, server, ns):
    calls = []

    def proxy(namespace, service, port, method, path, headers, body):
        calls.append((namespace, service, port, method, path, body))
        if service == "down":
            return None
        return 200, {"Content-Type": "application/json", "X-Twin": "1"}, json.dumps({"path": path}).encode()

    server.set_service_proxy(proxy)
    text = core.connect_get_namespaced_service_proxy_with_path("model:8080", ns, "v1/models/m?verbose=1")
    assert "/v1/models/m?verbose=1" in str(text)
    core.connect_post_namespaced_service_proxy_with_path("model", ns, "v1/models/m:predict")
    assert calls[0][:5] == (ns, "model", "8080", "GET", "/v1/models/m?verbose=1")
    assert calls[1][:5] == (ns, "model", None, "POST", "/v1/models/m:predict")
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("down", ns, "x")
    assert err.value.status == 503 and status_of(err.value)["reason"] == "ServiceUnavailable"

    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "main", "image": "x:1"}, {"name": "side", "image": "y:1"}]}})

    def logs(namespace, pod, container, previous):
        if previous:
            return None
        return "".join(f"{pod}/{container} line {n}\n" for n in range(5))
    server.set_pod_log_source(logs)
    assert core.read_namespaced_pod_log("p", ns, container="side", tail_lines=2) == "p/side line 3\np/side line 4\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("p", ns, container="main", previous=True)
    assert err.value.status == 400
    assert status_of(err.value)["message"] == 'previous terminated container "main" in pod "p" not found'
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("p", ns)
    assert "a container name must be specified" in status_of(err.value)["message"]


def test_finalizers_and_owner_garbage_collection(core, apps, ns):
    held = core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["twin.test/x"]}})
    answer = core.delete_namespaced_config_map("held", ns)
    still = core.read_namespaced_config_map("held", ns)
    assert still.metadata.deletion_timestamp is not None and still.metadata.uid == held.metadata.uid
    answer = answer if isinstance(answer, dict) else answer.to_dict()
    assert answer["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": []}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", ns)
    assert err.value.status == 404

    owner = apps.create_namespaced_deployment(ns, deployment("owner"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": owner.metadata.uid,
           "controller": True}
    apps.create_namespaced_replica_set(ns, {"metadata": {"name": "owner-rs", "ownerReferences": [ref],
                                                         "labels": {"app": "owner"}},
                                            "spec": deployment("owner")["spec"]})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    keep = core.create_namespaced_config_map(ns, {"metadata": {"name": "keep"}})
    both = dict(ref, kind="ConfigMap", name="keep", apiVersion="v1", uid=keep.metadata.uid)
    core.create_namespaced_secret(ns, {"metadata": {"name": "two-owners", "ownerReferences": [ref, both]}})
    apps.delete_namespaced_deployment("owner", ns)
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items)
    wait_for(lambda: [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["keep"])
    survivor = wait_for(lambda: (lambda s: s if len(s.metadata.owner_references) == 1 else None)(
        core.read_namespaced_secret("two-owners", ns)))
    assert survivor.metadata.owner_references[0].uid == keep.metadata.uid


# ---------------------------------------------------------------------------------------------------------------
# store API for controllers

def test_store_api_events_noop_and_errors(server, ns):
    store = server.store
    events = []
    store.subscribe(lambda kind, obj: events.append((kind, obj["kind"], obj["metadata"]["name"],
                                                     obj["metadata"]["resourceVersion"]))
                    if obj["metadata"].get("namespace") == ns else None)
    created = store.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": ns, "name": "d"},
                            "spec": deployment("d")["spec"]})
    same = store.update(created)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    status = store.update_status("apps/v1", "Deployment", "d", ns, {"replicas": 1, "availableReplicas": 1})
    assert status["metadata"]["generation"] == 1 and status["status"]["availableReplicas"] == 1
    patched = store.patch("apps/v1", "Deployment", "d", ns, {"spec": {"replicas": 3}})
    assert patched["metadata"]["generation"] == 2
    applied = store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": "cm"},
                           "data": {"a": "1"}})
    assert store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": "cm"},
                        "data": {"a": "1"}})["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
    assert [c["metadata"]["name"] for c in store.list("v1", "ConfigMap", ns, label_selector={})] == ["cm"]
    store.delete("v1", "ConfigMap", "cm", ns)
    assert store.get("v1", "ConfigMap", "cm", ns) is None
    with pytest.raises(ApiError) as err:
        store.delete("v1", "ConfigMap", "cm", ns)
    assert err.value.code == 404
    with pytest.raises(ApiError) as err:
        store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": "d"}})
        store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": "d"}})
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")
    store.delete("v1", "ConfigMap", "d", ns)
    wait_for(lambda: len(events) >= 7)
    assert [(k, kind, name) for k, kind, name, _ in events] == [
        ("ADDED", "Deployment", "d"), ("MODIFIED", "Deployment", "d"), ("MODIFIED", "Deployment", "d"),
        ("ADDED", "ConfigMap", "cm"), ("DELETED", "ConfigMap", "cm"), ("ADDED", "ConfigMap", "d"),
        ("DELETED", "ConfigMap", "d")]
    rvs = [int(rv) for *_, rv in events]
    assert rvs == sorted(rvs)


# ---------------------------------------------------------------------------------------------------------------
# request log, faults, kubectl, lifecycle

def test_request_log_counts(core, server, ns):
    server.request_log.reset()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "logged"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    core.read_namespaced_config_map("logged", ns)
    core.list_namespaced_config_map(ns)
    core.patch_namespaced_config_map("logged", ns, {"data": {"a": "1"}})
    core.patch_namespaced_config_map("logged", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                    "metadata": {"name": "logged"}}, field_manager="log-test",
                                     _content_type=APPLY)
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("absent", ns)
    client.CoreV1Api(core.api_client).get_api_resources()
    counts = server.request_log.counts()
    assert counts[("create", "configmaps")] == 2
    assert counts[("get", "configmaps")] == 2
    assert counts[("list", "configmaps")] == 1
    assert counts[("patch", "configmaps")] == 1 and counts[("apply", "configmaps")] == 1
    assert counts[("get", "discovery")] == 1
    assert server.request_log.writes() == 3
    assert server.request_log.writes(include_dry_run=True) == 4
    apply_entry = next(e for e in server.request_log.entries() if e.verb == "apply")
    assert (apply_entry.namespace, apply_entry.name, apply_entry.field_manager, apply_entry.status) == \
        (ns, "logged", "log-test", 200)
    assert [e.status for e in server.request_log.entries() if e.name == "absent"] == [404]


def test_flaky_fault_answers_500_and_429(server, kubeconfig):
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = False  # urllib3 would otherwise honour Retry-After on 429 and retry
    core = client.CoreV1Api(client.ApiClient(cfg))
    server.faults.flaky_rate = 1.0
    codes, retry_after = set(), set()
    try:
        for _ in range(30):
            with pytest.raises(ApiException) as err:
                core.list_namespace()
            codes.add(err.value.status)
            if err.value.status == 429:
                retry_after.add(err.value.headers.get("Retry-After"))
                assert status_of(err.value)["reason"] == "TooManyRequests"
        with pytest.raises(ApiException):
            client.VersionApi(client.ApiClient(cfg)).get_code()
    finally:
        server.faults.flaky_rate = 0.0
    assert codes == {500, 429} and retry_after == {"1"}
    assert core.list_namespace().items
    server.faults.flaky_rate = 0.5
    try:
        outcomes = set()
        for _ in range(40):
            try:
                core.list_namespace()
                outcomes.add(200)
            except ApiException as exc:
                outcomes.add(exc.status)
    finally:
        server.faults.flaky_rate = 0.0
    assert 200 in outcomes and len(outcomes) > 1


def test_watch_drop_fault(core, server, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "two"}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    server.faults.watch_drop = True
    try:
        started = time.monotonic()
        events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=5))
        assert [e["type"] for e in events] == ["ADDED"] and time.monotonic() - started < 1.0
        with pytest.raises(ApiException) as err:
            list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5))
        assert err.value.status == 410
    finally:
        server.faults.watch_drop = False
    assert len(list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))) == 2


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_get_and_server_side_apply(server, kubeconfig, ns, tmp_path):
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))

    def kubectl(*args):
        return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=30)
    got = kubectl("get", "ns")
    assert got.returncode == 0, got.stderr
    rows = {line.split()[0]: line.split()[1] for line in got.stdout.splitlines()[1:]}
    assert rows["default"] == "Active" and rows[ns] == "Active"
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\n  namespace: {ns}\n"
                        f"data:\n  key: value\n")
    # the twin serves no OpenAPI documents, so kubectl's client-side schema validation must be off
    applied = kubectl("apply", "--server-side", "--validate=false", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "serverside-applied" in applied.stdout
    obj = server.store.get("v1", "ConfigMap", "from-kubectl", ns)
    assert obj["data"] == {"key": "value"}
    assert [(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    again = kubectl("apply", "--server-side", "--validate=false", "-f", str(manifest))
    assert again.returncode == 0, again.stderr
    assert server.store.get("v1", "ConfigMap", "from-kubectl", ns)["metadata"]["resourceVersion"] == \
        obj["metadata"]["resourceVersion"]
    missing = kubectl("get", "frobnicators")
    assert missing.returncode != 0 and "the server doesn't have a resource type" in missing.stderr


def test_stop_frees_port_and_threads():
    before = set(threading.enumerate())
    srv = ApiServer()
    srv.start()
    port = int(srv.url.rsplit(":", 1)[1])
    api = client.ApiClient(client.Configuration(host=srv.url))
    core = client.CoreV1Api(api)
    assert core.list_namespace().items
    results = []

    def hang():  # an open watch must end promptly on stop()
        try:
            results.extend(watch.Watch().stream(core.list_namespace, resource_version=core.list_namespace()
                                                .metadata.resource_version, timeout_seconds=30))
        except Exception as exc:  # connection cut is fine
            results.append(exc)
    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    srv.stop()
    thread.join(3)
    assert not thread.is_alive() and time.monotonic() - started < 1.5
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
