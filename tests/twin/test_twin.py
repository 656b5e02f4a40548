"""The Twin as a whole: start time, a preinstalled stack that is Ready, clean stop, `python -m twin`."""
from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from kubernetes import client, config, dynamic

from stack.profile import Profile, available_profiles
from twin import Twin, pki
from twin.seed import apply_objects, inventory_objects

REPO = Path(__file__).resolve().parents[2]
SAMPLE = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}


def _api(twin):
    return config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)


def _port_free(port: int) -> bool:
    """Nothing listens there any more and a server could bind it again (SO_REUSEADDR: TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("profile_name", available_profiles())
def test_preinstalled_stack_is_ready(profile_name):
    profile = Profile.load(profile_name)
    began = time.monotonic()
    twin = Twin(profile)
    twin.start()
    try:
        elapsed = time.monotonic() - began
        print(f"\ntwin {profile_name} started in {elapsed:.2f}s (start() reports {twin.start_seconds:.2f}s)")
        assert elapsed < 5.0
        api = _api(twin)
        version = client.VersionApi(api).get_code()
        lo, hi = profile.kubernetes_range
        assert version.git_version.startswith(f"v{hi}.") and version.minor == hi.split(".")[1]
        if profile_name == "seed":
            assert version.git_version == "v1.27.3"
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        for _, item in profile.inventory("deployments"):
            dep = apps.read_namespaced_deployment(item["name"], item["namespace"])
            want = item.get("replicas", 1)
            conds = {c.type: c for c in dep.status.conditions}
            assert conds["Available"].status == "True" and conds["Available"].reason == "MinimumReplicasAvailable"
            assert conds["Progressing"].reason == "NewReplicaSetAvailable"
            assert dep.status.observed_generation == dep.metadata.generation
            assert (dep.status.ready_replicas or 0) == want == (dep.status.available_replicas or 0)
            selector = ",".join(f"{k}={v}" for k, v in dep.spec.selector.match_labels.items())
            pods = core.list_namespaced_pod(item["namespace"], label_selector=selector).items
            assert len(pods) == want
            for pod in pods:
                assert pod.status.phase == "Running" and pod.spec.node_name == "twin-control-plane"
                assert pod.metadata.owner_references[0].kind == "ReplicaSet"
                for st in pod.status.container_statuses:
                    assert st.ready and st.restart_count == 0 and st.state.running
                    assert st.image_id.startswith("docker-pullable://") and "@sha256:" in st.image_id
                    assert st.image == item["containers"][st.name].replace("*", st.image.rsplit(":", 1)[-1])
        for _, item in profile.inventory("daemonsets"):
            ds = apps.read_namespaced_daemon_set(item["name"], item["namespace"])
            assert ds.status.observed_generation == ds.metadata.generation
            if item.get("node_selector"):
                assert ds.status.desired_number_scheduled == 0
        ext = client.ApiextensionsV1Api(api)
        for _, crd in profile.inventory("crds"):
            obj = ext.read_custom_resource_definition(crd["name"])
            assert {c.type: c.status for c in obj.status.conditions}["Established"] == "True"
        for comp in profile.components.values():
            gates = comp.readiness_gates
            for ref in gates.get("endpoints", []):
                ns, name = ref.split("/")
                eps = core.read_namespaced_endpoints(name, ns)
                assert any(s.addresses for s in eps.subsets or []), ref
            for ref in gates.get("certificates", []):
                ns, name = ref.split("/")
                cert = client.CustomObjectsApi(api).get_namespaced_custom_object(
                    "cert-manager.io", "v1", ns, "certificates", name)
                assert any(c["type"] == "Ready" and c["status"] == "True" for c in cert["status"]["conditions"])
            adm = client.AdmissionregistrationV1Api(api)
            for name in gates.get("ca_bundles", []):
                for cfg in _configs(adm, name):
                    for webhook in cfg.webhooks:
                        assert pki.load_certs(base64.b64decode(webhook.client_config.ca_bundle)), name
        # pod logs through the API
        pod = core.list_namespaced_pod("cert-manager", label_selector="app=cert-manager").items[0]
        assert "starting" in core.read_namespaced_pod_log(pod.metadata.name, "cert-manager")
    finally:
        twin.stop()


def _configs(adm, name):
    out = []
    for read in (adm.read_validating_webhook_configuration, adm.read_mutating_webhook_configuration):
        try:
            out.append(read(name))
        except client.ApiException as exc:
            if exc.status != 404:
                raise
    assert out, name
    return out


@pytest.mark.slow
def test_stop_leaves_nothing_behind():
    twin = Twin(Profile.load("seed"))
    twin.start()
    api = _api(twin)
    dyn = dynamic.DynamicClient(api)
    isvcs = dyn.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
    isvcs.create(body={"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                       "metadata": {"name": "sklearn-iris"},
                       "spec": {"predictor": {"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/1.0/"
                                                                        "model"}}}}, namespace="default")
    deadline = time.monotonic() + 40
    while not any(p.ready() for p in twin.model_servers()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (proc,) = twin.model_servers()
    ports = [twin.api.port, int(twin.gateway_url.rsplit(":", 1)[1]), proc.port]
    pid = proc.pid
    kubeconfig = twin.kubeconfig_path
    twin.stop()
    twin.stop()  # idempotent
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for port in ports:
        assert _port_free(port), port
    assert not kubeconfig.exists()  # the twin's own temporary workdir is removed


def test_context_manager_and_workdir(tmp_path):
    with Twin(Profile.load("latest-standard" if "latest-standard" in available_profiles() else "seed"),
              workdir=tmp_path / "twin") as twin:
        assert twin.kubeconfig_path == tmp_path / "twin" / "kubeconfig"
        assert twin.context == "twin"
        assert twin.gateway_url.startswith("http://127.0.0.1:")
        requests.get(twin.gateway_url, headers={"Host": "nothing.example.com"}, timeout=5)
        api_port = twin.api.port
    assert _port_free(api_port)
    assert (tmp_path / "twin" / "kubeconfig").exists()  # a caller's workdir is left alone
    with pytest.raises(RuntimeError):
        twin.start()  # a Twin starts once


def test_bare_twin_then_install_like_the_installers():
    profile = Profile.load("seed")
    with Twin(profile, preinstalled=False) as twin:
        store = twin.store
        assert store.get("v1", "Namespace", "kserve") is None
        assert store.get("apps/v1", "Deployment", "coredns", "kube-system") is not None
        for comp in profile.install_order():
            apply_objects(store, inventory_objects(profile, comp.name), "helm")
            twin.settle()
        dep = store.get("apps/v1", "Deployment", "kserve-controller-manager", "kserve")
        assert dep["status"]["readyReplicas"] == 1
        cert = store.get("cert-manager.io/v1", "Certificate", "serving-cert", "kserve")
        assert cert["status"]["conditions"][0]["status"] == "True"
        cfg = store.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "cert-manager-webhook")
        assert pki.load_certs(base64.b64decode(cfg["webhooks"][0]["clientConfig"]["caBundle"]))
        domain = store.get("v1", "ConfigMap", "config-domain", "knative-serving")
        assert "example.com" not in domain["data"]  # the installer's patch is still to come


def _run_cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "twin", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_errors_exit_2(tmp_path):
    result = _run_cli("--profile", "no-such-profile", "--kubeconfig-out", str(tmp_path / "k"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("twin: error:") and "unknown profile" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _run_cli("--profile", "seed", "--twin-fault", "meltdown", "--kubeconfig-out", str(tmp_path / "k"))
    assert result.returncode == 2 and "unknown twin fault kind 'meltdown'" in result.stderr


def test_cli_runs_until_sigterm(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "twin", "--profile", "seed", "--kubeconfig-out", str(kubeconfig),
                             "--twin-fault", "watch-drop"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = {}
        deadline = time.monotonic() + 20
        while "gateway" not in lines:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, proc.stderr.read()
            key, _, value = line.partition(": ")
            lines[key.strip()] = value.strip()
        assert lines["api"].startswith("http://127.0.0.1:") and lines["gateway"].startswith("http://127.0.0.1:")
        api = config.new_client_from_config(config_file=str(kubeconfig), context="twin")
        assert client.VersionApi(api).get_code().git_version == "v1.27.3"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_spec_changes_roll_pods_and_deleted_pods_come_back():
    with Twin(Profile.load("seed")) as twin:
        apps, core = client.AppsV1Api(_api(twin)), client.CoreV1Api(_api(twin))
        (old,) = core.list_namespaced_pod("istio-system", label_selector="app=istiod").items
        apps.patch_namespaced_deployment("istiod", "istio-system", {"spec": {"template": {"spec": {"containers": [
            {"name": "discovery", "image": "mirror.local/istio/pilot:1.19.0"}]}}}})
        twin.settle()
        (new,) = core.list_namespaced_pod("istio-system", label_selector="app=istiod").items
        assert new.metadata.name != old.metadata.name
        assert new.status.container_statuses[0].image == "mirror.local/istio/pilot:1.19.0"
        dep = apps.read_namespaced_deployment("istiod", "istio-system")
        assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
        assert dep.status.observed_generation == dep.metadata.generation == 2
        assert dep.status.updated_replicas == dep.status.ready_replicas == 1
        # _preload_content=False: the twin's API answers a pod DELETE with a Status, where the real one returns the
        # Pod (graceful deletion) and the generated client expects a V1Pod
        core.delete_namespaced_pod(new.metadata.name, "istio-system", _preload_content=False)
        twin.settle()
        (replaced,) = core.list_namespaced_pod("istio-system", label_selector="app=istiod").items
        assert replaced.metadata.name != new.metadata.name and replaced.status.phase == "Running"
        eps = core.read_namespaced_endpoints("istiod", "istio-system")
        assert [a.ip for a in eps.subsets[0].addresses] == [replaced.status.pod_ip]
