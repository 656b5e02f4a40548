"""The twin on its real control plane, tried as a user would: with kubectl from PyPI, the official client and the
KServe controller's own answers. Each test here is a way the old fake API server was more permissive than a cluster."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from stack.profile import Profile
from tests.helpers import ROOT
from twin import Twin, toolchain

pytestmark = [pytest.mark.slow, pytest.mark.twin, pytest.mark.xdist_group("twin-seed")]   # one worker: its twin

UPSTREAM = ROOT.parent / "shared" / "upstream"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture(scope="module")
def seed(shared_twins):
    """The worker's shared seed twin, as handed over (what a test here creates, it deletes: the health gate after
    the module says whether the next user gets this twin)."""
    with shared_twins("seed").struck([]) as twin:
        yield twin


def kubectl(twin, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (pip install -r requirements-twin.txt)")
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(twin.kubeconfig_path), *args], capture_output=True, text=True,
                          input=stdin, timeout=120)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def api(twin):
    return config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)


def test_the_api_server_is_the_real_one_at_its_real_version(seed):
    built = toolchain.load_builds()["kubernetes"].version
    version = json.loads(kubectl(seed, "version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == built and version["minor"] == built.split(".")[1]
    assert "v0.0.0-master" not in kubectl(seed, "version").stdout


def test_kubectl_from_pypi_works_unmodified(seed):
    """create namespace, auth can-i, get pods -o wide, explain, wait: each needs what a fake lacked (OpenAPI,
    SelfSubjectAccessReview, table printing, watch-list streaming)."""
    assert "1.37" in json.loads(kubectl(seed, "version", "--client", "-o", "json").stdout)["clientVersion"][
        "gitVersion"]
    kubectl(seed, "create", "namespace", "kubectl-probe")
    assert kubectl(seed, "auth", "can-i", "create", "pods", "-n", "kubectl-probe").stdout.strip() == "yes"
    wide = kubectl(seed, "get", "pods", "-n", "kserve", "-o", "wide").stdout
    assert "kserve-controller-manager" in wide and "twin-control-plane" in wide and "10.244." in wide
    explained = kubectl(seed, "explain", "inferenceservice.spec.predictor").stdout
    assert "KIND:" in explained and "InferenceService" in explained
    kubectl(seed, "wait", "--for=condition=Ready", "node/twin-control-plane", "--timeout=30s")
    kubectl(seed, "wait", "--for=condition=Available", "deployment/kserve-controller-manager", "-n", "kserve",
            "--timeout=60s")
    kubectl(seed, "delete", "namespace", "kubectl-probe", "--wait=false")


def test_kubectl_apply_validates_the_upstream_kserve_manifest(seed):
    path = UPSTREAM / "kserve-v0.11.0" / "kserve.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is not at hand (the upstream copies live beside the project in ../shared)")
    proc = kubectl(seed, "apply", "--dry-run=server", "--validate=strict", "-f", str(path), check=False)
    assert "customresourcedefinition.apiextensions.k8s.io/trainedmodels.serving.kserve.io configured (server dry run)" \
        in proc.stdout
    assert "deployment.apps/kserve-controller-manager configured (server dry run)" in proc.stdout
    # A real finding: Kubernetes 1.34 validates a CRD's conversion caBundle when it changes, so re-applying the
    # release's placeholder `Cg==` over the CA that cert-manager injected is refused. The installers keep the
    # injected one (installers/manifests.py); a plain `kubectl apply` over an installed KServe 0.11 cannot.
    errors = [line for line in proc.stderr.splitlines() if line and not line.startswith("Warning:")]
    assert errors == ['The CustomResourceDefinition "inferenceservices.serving.kserve.io" is invalid: '
                      'spec.conversion.webhookClientConfig.caBundle: Invalid value: "Cg==": unable to load root '
                      'certificates: unable to parse bytes as PEM block'], proc.stderr[-3000:]


def test_custom_objects_are_validated_against_the_crd_schema(seed):
    """minReplicas: "abc" is refused (the fake stored it)."""
    if not (UPSTREAM / "kserve-v0.11.0" / "kserve.yaml").is_file():
        pytest.skip("the seed twin's CRDs are upstream's only where ../shared/upstream is at hand")
    body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "bad-replicas"},
            "spec": {"predictor": {"minReplicas": "abc", "sklearn": {"storageUri": "gs://x/y"}}}}
    proc = kubectl(seed, "apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(body), check=False)
    # KServe's real defaulting webhook meets it first and cannot decode it; without the webhook the CRD's schema
    # would refuse it ("must be of type integer"): either way, as on a cluster, it is not stored.
    assert proc.returncode != 0 and "minReplicas" in proc.stderr, proc.stderr
    assert "of type int" in proc.stderr or "must be of type integer" in proc.stderr, proc.stderr


def test_label_values_are_validated(seed):
    """A label value ending in "_" is refused, as the run label of issue 10 was on a real cluster."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bad-label", "labels": {"kstack.io/run": "x_"}}}
    with pytest.raises(client.ApiException) as e:
        client.CoreV1Api(api(seed)).create_namespace(ns)
    assert e.value.status == 422 and "a valid label must be" in e.value.body


def test_the_kserve_webhooks_are_the_real_controllers_and_reached_through_their_service(seed):
    """The denial text is KServe's own (the real controller answers), and the configuration names a Service, not a URL
    (the API server reaches the Pod IP behind it, as in a cluster)."""
    webhooks = client.AdmissionregistrationV1Api(api(seed)).read_validating_webhook_configuration(
        "inferenceservice.serving.kserve.io").webhooks
    assert all(w.client_config.service is not None and w.client_config.url is None for w in webhooks)
    body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "0-bad"},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}
    proc = kubectl(seed, "create", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(body), check=False)
    assert 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request' in proc.stderr
    assert "must start with alphabetical character" in proc.stderr
    assert any(r.container == "manager" and "kserve-controller-manager" in seed.kubelet._pod_of[r.pod_uid][
        "metadata"]["name"] for r in seed.kubelet.running.values())


def test_an_inference_service_with_a_missing_model_does_not_become_ready(seed):
    """The storage initializer fails as KServe's does on a missing object; the fake made it Ready regardless."""
    ns = "missing-model"
    kubectl(seed, "create", "namespace", ns)
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "iris"},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/nope",
                                               "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}}}}
    kubectl(seed, "apply", "-n", ns, "-f", "-", stdin=json.dumps(isvc))
    deadline = time.monotonic() + 90
    status = {}
    while time.monotonic() < deadline:    # the initializer's first failure takes a second or two
        pods = json.loads(kubectl(seed, "get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        inits = [s for p in pods for s in (p.get("status") or {}).get("initContainerStatuses") or []]
        status = next((s for s in inits if s["name"] == "storage-initializer"), {})
        if (status.get("lastState") or {}).get("terminated") or (status.get("state") or {}).get("terminated", {}).get(
                "exitCode"):
            break
        time.sleep(1)
    terminated = (status.get("lastState") or {}).get("terminated") or status["state"]["terminated"]
    assert terminated["exitCode"] == 1
    assert "No model found in gs://kfserving-examples/models/sklearn/nope" in terminated.get("message", "")
    ready = json.loads(kubectl(seed, "get", "isvc", "iris", "-n", ns, "-o", "json").stdout)
    assert not any(c["type"] == "Ready" and c["status"] == "True" for c in ready["status"].get("conditions", []))
    kubectl(seed, "delete", "namespace", ns, "--wait=false")


def test_the_sign_off_account_lists_what_is_real_and_what_is_a_stand_in(seed):
    from twin.report import simulation
    sim = simulation(seed)
    assert sim.control_plane["kube-apiserver"] == toolchain.load_builds()["kubernetes"].version
    kinds = {p.name: p.kind for p in sim.parts}
    assert kinds["kserve/kserve-controller-manager"] == "real"
    assert any(k == "stand-in" and "cert-manager" in n for n, k in kinds.items())
    assert any(k == "stand-in" and "ingress gateway" in n for n, k in kinds.items())
    assert {lim.id for lim in sim.limitations} >= {"twin-kubernetes-version", "twin-no-containers"}


def test_every_listener_of_the_twin_on_the_host_is_on_loopback(seed):
    """Everything else listens inside the twin's own network namespaces."""
    own = {seed.api.port, seed._internal.port, seed._gateway.port}
    listening = _host_listeners()
    assert own <= {port for _, port in listening}
    assert all(addr.startswith("127.") for addr, port in listening if port in own)
    holder = seed.netns.pid
    assert os.stat(f"/proc/{holder}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


def _host_listeners() -> set[tuple[str, int]]:
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            hexip, hexport = local.split(":")
            ip = ".".join(str(int(hexip[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out.add((ip, int(hexport, 16)))
    return out


def test_a_twin_restored_from_a_snapshot_says_ready_only_where_a_process_serves(seed, tmp_path, monkeypatch):
    """A snapshot's Pods say Ready as they did when it was taken, before any process runs for them again: a restored
    twin must not hand over a cluster whose webhooks look Ready and refuse connections (the first checks pass, the
    certificate round-trip then fails on "no endpoints available"). The kubelet is slowed down as on a loaded
    machine, where it starts its processes seconds after the control plane is back."""
    from twin.kubelet import KUBELET_ANNOTATION, ProcessKubelet
    start_process = ProcessKubelet._start_process

    def slow_start(self, *args, **kwargs):
        time.sleep(1.0)
        return start_process(self, *args, **kwargs)

    monkeypatch.setattr(ProcessKubelet, "_start_process", slow_start)
    with Twin(Profile.load("seed"), workdir=tmp_path / "twin") as twin:     # the seed fixture saved the snapshot
        assert twin.restored
        pods = client.CoreV1Api(api(twin)).list_pod_for_all_namespaces().items
        served = {key for key, run in list(twin.kubelet.running.items()) if run.ready and run.proc.poll() is None}
        checked = []
        for pod in pods:
            if (pod.metadata.annotations or {}).get(KUBELET_ANNOTATION) != "process":
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            raw = client.ApiClient().sanitize_for_serialization(pod)
            with_process = [c["name"] for c in raw["spec"]["containers"] if twin.kubelet.catalog.process_for(raw, c)]
            unserved = [c for c in with_process if (pod.metadata.uid, c) not in served]
            assert ready and not unserved, f"{pod.metadata.namespace}/{pod.metadata.name}: Ready={ready}, " \
                                           f"containers whose process does not serve: {unserved}"
            checked.append(pod.metadata.name)
        assert len(checked) >= 5, checked       # the stand-ins and the KServe controller
        processes = [r.proc.pid for r in list(twin.kubelet.running.values())]
    left = [str(f) for pid in processes for f in Path(tempfile.gettempdir()).glob(f"kstack-discovery-{pid}-*")]
    assert not left, f"the Pods' processes left their discovery caches behind: {left}"


def test_stop_leaves_no_process_and_no_link_behind(tmp_path):
    twin = Twin(Profile.load("seed"), preinstalled=False, workdir=tmp_path / "twin").start()
    pids = [p.pid for p in twin.controlplane.procs.values()] + [twin.netns.pid]
    twin.stop()
    twin.stop()                                        # idempotent
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} is still running"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"k{os.getpid() % 100000}x" not in links


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_python_m_twin_runs_standalone_and_stops_on_sigint(tmp_path):
    kubeconfig = tmp_path / "twin.kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "twin", "--profile", "seed", "--kubeconfig-out", str(kubeconfig)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("kubeconfig:"):
                break
        assert kubeconfig.exists(), "".join(lines)
        nodes = yaml.safe_load(subprocess.run([KUBECTL or "kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes",
                                               "-o", "yaml"], capture_output=True, text=True).stdout)
        assert nodes["items"][0]["metadata"]["labels"]["kstack.io/simulated"] == "true"
        assert any(line.startswith("gateway: http://127.0.0.1:") for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "twin: stopped" in rest


def test_a_python_without_the_twins_extras_is_one_clear_error(monkeypatch):
    """The standalone twin started with the system Python: the model server would fail silently; it fails loudly."""
    import importlib.util

    from twin.cluster import TwinError, _require_twin_extras
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kserve" else real(name, *a))
    with pytest.raises(TwinError, match=r"lacks kserve .*\.venv/bin/python -m twin"):
        _require_twin_extras()


def test_only_the_newest_snapshots_of_a_profile_are_kept(tmp_path):
    from twin.snapshots import prune
    for i, name in enumerate(["latest-aaa", "latest-bbb", "latest-ccc", "latest-ddd", "latest-standard-eee",
                              ".latest-tmp"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    prune(tmp_path / "latest-aaa", keep=3)      # the current one is the oldest: it stays anyway
    assert sorted(p.name for p in tmp_path.iterdir()) == [".latest-tmp", "latest-aaa", "latest-ccc", "latest-ddd",
                                                          "latest-standard-eee"]


def test_the_control_plane_and_kserves_controller_run_with_the_twins_go_collector_setting(seed):
    from twin.processes import go_env
    wanted = go_env({})["GOGC"]
    kserve = [r.proc.pid for (uid, name), r in seed.kubelet.running.items() if name == "manager"]
    pids = [p.pid for p in seed.controlplane.procs.values()] + kserve
    assert kserve and len(pids) >= 5
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"GOGC={wanted}".encode() in environ, pid
