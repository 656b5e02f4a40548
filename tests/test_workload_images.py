"""The workload-image check reads what the Pods run: Istio's gateway chart writes `image: auto` into its Deployment's
pod template and istiod's sidecar injector sets the proxy image on the Pods only (the twin does the same)."""
from __future__ import annotations

import pytest

from stack.kube import Kube
from stack.readiness import ContainerImage, workload_images
from tests.helpers import run_pytest

GATEWAY = ("istio-system", "istio-ingressgateway")


def _deployment(image: str) -> dict:
    return {"kind": "Deployment", "metadata": {"name": "gw", "namespace": "istio-system"},
            "spec": {"selector": {"matchLabels": {"app": "gw"}},
                     "template": {"spec": {"containers": [{"name": "istio-proxy", "image": image}]}}}}


def _pod(name: str, image: str, image_id: str = "", labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {"app": "gw"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": image}]},
            "status": {"containerStatuses": [{"name": "istio-proxy", "image": "docker.io/" + image,
                                              "imageID": image_id}]}}


def test_pods_are_the_truth_for_images_and_the_template_only_without_pods():
    proxy = "istio/proxyv2:1.19.0"
    digest = "sha256:" + "ab" * 32
    got = workload_images(_deployment("auto"), [_pod("gw-1", proxy, f"docker.io/istio/proxyv2@{digest}"),
                                                 _pod("other", "nginx", labels={"app": "other"})])
    # the Pod's spec image (what was asked for, after admission), not the runtime's normalised status image
    assert got == [ContainerImage("istio-proxy", [proxy], [digest], "pods")]
    assert workload_images(_deployment("auto"), []) == [ContainerImage("istio-proxy", ["auto"], [], "template")]
    rollout = workload_images(_deployment("auto"), [_pod("a", proxy), _pod("b", "istio/proxyv2:1.18.0")])
    assert rollout[0].images == [proxy, "istio/proxyv2:1.18.0"]


@pytest.fixture(scope="module")
def twin(shared_twins):
    """The worker's shared seed twin (a test that changes a Pod replaces it afterwards, as it was handed over)."""
    with shared_twins("seed").struck([]) as t:
        yield t


@pytest.mark.twin
@pytest.mark.xdist_group("workload-images-twin")
def test_the_twin_has_the_charts_image_auto_and_the_injected_proxy_image_on_the_pods(twin):
    kube = Kube(twin.kubeconfig_path, twin.context)
    dep = kube.get("apps/v1", "Deployment", GATEWAY[1], GATEWAY[0])
    assert [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["auto"]
    pods, _ = kube.list("v1", "Pod", GATEWAY[0], label_selector="app=istio-ingressgateway")
    assert pods and all(c["image"] == "docker.io/istio/proxyv2:1.19.0" for p in pods for c in p["spec"]["containers"])


def _images_check(twin, tmp_path):
    return run_pytest("suites/acceptance", "--cluster", "existing", "--kubeconfig", str(twin.kubeconfig_path),
                      "--install", "never", "-k", "test_workload_images", "--alluredir", str(tmp_path / "results"),
                      "--signoff-dir", str(tmp_path / "out"), "-p", "no:randomly", timeout=180)


@pytest.mark.slow
@pytest.mark.twin
@pytest.mark.xdist_group("workload-images-twin")
def test_workload_images_pass_where_the_gateway_template_says_auto(twin, tmp_path):
    proc = _images_check(twin, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "test_workload_images[istio] PASSED" in proc.stdout


@pytest.mark.slow
@pytest.mark.twin
@pytest.mark.xdist_group("workload-images-twin")
def test_workload_images_catch_a_pod_that_runs_another_image(twin, tmp_path):
    kube = Kube(twin.kubeconfig_path, twin.context)
    pods, _ = kube.list("v1", "Pod", "kserve", label_selector="control-plane=kserve-controller-manager")
    pod = pods[0]
    containers = [dict(c, image="kserve/kserve-controller:v0.0.1") if c["name"] == "manager" else c
                  for c in pod["spec"]["containers"]]
    kube.merge_patch("v1", "Pod", pod["metadata"]["name"], "kserve", {"spec": {"containers": containers}})
    try:
        proc = _images_check(twin, tmp_path)
    finally:     # its ReplicaSet makes a new one from the template: the controller as the twin handed it over
        kube.delete("v1", "Pod", pod["metadata"]["name"], "kserve")
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert ("kserve/kserve-controller-manager container manager: runs kserve/kserve-controller:v0.0.1, "
            "profile pins kserve/kserve-controller:v0.11.0") in proc.stdout
    assert "test_workload_images[istio] PASSED" in proc.stdout
