"""fixtures/runmeta.collect: the RunRecord of a run, on a fake API. The cluster's Nodes (status.nodeInfo), the suite
and the runner are recorded; a read that fails goes to `errors`, and the rest is still read."""
from __future__ import annotations

from pathlib import Path

from fixtures import runmeta
from fixtures.options import RunOptions
from reports.evaluation import build_signoff
from stack import provenance
from stack.kube import Access, Forbidden, KubeError
from stack.profile import Profile
from stack.record import ClusterHandoff, NodeRow, SuiteInfo, read_run, write_run

SUITE = SuiteInfo(version="0.1.0", commit="c0ffee" * 6 + "c0ff", dirty=True, python="3.11.7", pytest="9.2.0")


def node(name: str, kubelet: str, runtime: str, os_image: str) -> dict:
    return {"metadata": {"name": name}, "status": {"nodeInfo": {
        "kubeletVersion": kubelet, "containerRuntimeVersion": runtime, "osImage": os_image,
        "kernelVersion": "6.1.0", "architecture": "amd64"}}}


class FakeKube:
    """Lists what it was given; raises the error given for a kind."""

    def __init__(self, kubeconfig, context, items: dict[str, list] | None = None, fail: dict | None = None):
        self.items, self.fail = items or {}, fail or {}

    def list(self, api_version, kind, namespace=None, **kw):
        if kind in self.fail:
            raise self.fail[kind]
        return [i for i in self.items.get(kind, []) if namespace is None or i["metadata"].get("namespace") == namespace], "1"

    def get(self, *args, **kw):
        return None


def _collect(monkeypatch, **kube) -> object:
    monkeypatch.setattr(runmeta, "Kube", lambda kubeconfig, context: FakeKube(kubeconfig, context, **kube))
    monkeypatch.setattr(provenance.socket, "gethostname", lambda: "runner-7")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/kstack")
    monkeypatch.setenv("GITHUB_RUN_ID", "55")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    profile = Profile.load("seed")
    opts = RunOptions(profile=profile, cluster="existing", install="never", kubeconfig="/k", context=None,
                      cluster_name="kstack", keep_cluster=False, keep_on_failure=False, kind_image=None, kind_bin=None,
                      signoff_dir=Path("out"), timeout_scale=1.0)
    handle = ClusterHandoff(provider="existing", kubeconfig="/k", context=None, simulated=False, server_version="v1.30.2")
    return runmeta.collect(opts, handle, started=1_750_000_000.0, finished=1_750_000_540.0, install=None, suite=SUITE)


NAMESPACES = [{"metadata": {"name": "kserve", "creationTimestamp": "2025-06-15T15:00:00Z"}, "status": {"phase": "Active"}}]


def test_nodes_suite_and_runner_are_recorded(monkeypatch, tmp_path):
    run = _collect(monkeypatch, items={"Node": [
        node("worker-b", "v1.30.2", "containerd://1.7.18", "Ubuntu 22.04.4 LTS"),
        node("control-plane-a", "v1.30.2", "cri-o://1.30.3", "Flatcar Container Linux 3815.2.5")],
        "Namespace": NAMESPACES})
    assert run.cluster.nodes == [NodeRow("control-plane-a", "v1.30.2", "cri-o://1.30.3", "Flatcar Container Linux 3815.2.5"),
                                 NodeRow("worker-b", "v1.30.2", "containerd://1.7.18", "Ubuntu 22.04.4 LTS")]
    assert run.suite == SUITE
    assert (run.runner.hostname, run.runner.ci, run.runner.ci_url, run.runner.ci_attempt) == (
        "runner-7", "GitHub Actions", "https://github.com/acme/kstack/actions/runs/55/attempts/2", "2")
    assert run.errors == []
    write_run(tmp_path, run)                        # through the record, into the sign-off
    assert read_run(tmp_path) == run
    doc = build_signoff(tmp_path)
    assert doc["cluster"]["nodes"][1] == {"name": "worker-b", "kubelet_version": "v1.30.2",
                                          "container_runtime": "containerd://1.7.18", "os_image": "Ubuntu 22.04.4 LTS"}
    assert doc["suite"]["commit"] == SUITE.commit and doc["runner"]["hostname"] == "runner-7"


def test_nodes_that_cannot_be_read_are_a_run_error_and_the_rest_is_read(monkeypatch):
    denied = Forbidden(Access(("list",), "", "nodes"), "nodes is forbidden")
    run = _collect(monkeypatch, items={"Namespace": NAMESPACES}, fail={"Node": denied})
    assert run.cluster.nodes == []
    assert len(run.errors) == 1 and run.errors[0].startswith("could not read the cluster's nodes: ")
    assert [n.name for n in run.namespaces] == ["kserve"]      # read all the same


def test_a_cluster_unreadable_at_the_end_is_one_run_error(monkeypatch):
    run = _collect(monkeypatch, fail={k: KubeError(0, "Unreachable", "API server unreachable")
                                      for k in ("Node", "Namespace")})
    assert run.cluster.nodes == [] and run.namespaces == []
    assert [e.split(":")[0] for e in run.errors] == ["could not read the cluster's nodes",
                                                     "could not read the cluster's final state"]


def test_the_pods_table_shows_a_waiting_reason_as_kubectl_does_the_first_containers_first():
    """A sidecar still creating must not hide the first container's crash loop (kubectl get pods shows that)."""
    from datetime import datetime, timezone

    from fixtures.runmeta import pod_row
    pod = {"metadata": {"namespace": "kserve", "name": "ctl", "creationTimestamp": "2026-12-02T10:00:00Z"},
           "spec": {"containers": [{"name": "manager"}, {"name": "proxy"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "manager", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
               {"name": "proxy", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    row = pod_row(pod, datetime(2026, 12, 2, 10, 5, tzinfo=timezone.utc))
    assert (row.status, row.ready, row.restarts) == ("CrashLoopBackOff", "0/2", 4)


def test_images_pinned_with_any_digest_are_a_limitation_naming_where_the_version_comes_from(monkeypatch):
    """Knative's images are pinned as `...@sha256:*` (its release digests are not in the profile): the sign-off says
    that another build of the same image passes, and that the version is read from a label."""
    run = _collect(monkeypatch, items={"Namespace": NAMESPACES})
    [lim] = [x for x in run.limitations if x.id == "image-digest-unpinned"]
    assert lim.text.startswith("knative: 6 image(s) are pinned by name with any digest")
    assert lim.text.endswith("read from the label app.kubernetes.io/version of knative-serving/controller")
    assert runmeta.unpinned_digests(Profile.load("latest-standard")) == []      # no Knative: nothing to say
