"""AC-MONITORS against a real API server and the Prometheus Operator's own CRDs (built into the twin's cache from the
Go module proxy): a monitor that selects live targets passes, and each way of selecting nothing (a selector that
matches nothing, a port the Service lacks, no Pod, a missing monitor) fails naming why.

The targets are a Deployment and its Service: the twin's kube-controller-manager and scheduler run the Deployment,
KWOK marks its Pod Running and Ready with an IP, and the controller-manager writes the EndpointSlices, as on a real
cluster. Nothing runs behind the Pod: AC-MONITORS reads what Prometheus would be told to scrape, not the scrape."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from stack import monitors
from stack.kube import Kube
from stack.profile import MonitorRef, Profile
from twin import toolchain

pytestmark = [pytest.mark.twin, pytest.mark.xdist_group("monitors-twin")]   # one worker: its twin

NS = "metrics-demo"
APP = {"app": "exporter"}


def _crd_dir() -> Path:
    try:
        return toolchain.binaries()["prometheus-operator/crds"]
    except (toolchain.ToolchainError, KeyError) as e:
        pytest.skip(f"the Prometheus Operator CRDs are not in the twin's cache: {e}")


def _eventually(what: str, probe, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    from twin import Twin
    crds = _crd_dir()
    with Twin(Profile.load("seed"), preinstalled=False, workdir=tmp_path_factory.mktemp("twin")) as t:
        k = Kube(t.kubeconfig_path, t.context)
        for kind in monitors.KINDS:
            k.apply(yaml.safe_load((crds / f"monitoring.coreos.com_{kind.lower()}s.yaml").read_text()))
        _eventually("the monitor CRDs served", lambda: all(k.serves(monitors.API, kind) for kind in monitors.KINDS))
        k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        k.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "exporter", "namespace": NS},
                 "spec": {"replicas": 1, "selector": {"matchLabels": APP},
                          "template": {"metadata": {"labels": APP}, "spec": {"containers": [{
                              "name": "exporter", "image": "registry.example/exporter:1",
                              "ports": [{"name": "metrics", "containerPort": 9100}]}]}}}})
        k.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "exporter", "namespace": NS,
                                                                   "labels": APP},
                 "spec": {"selector": APP, "ports": [{"name": "http-metrics", "port": 9100,
                                                      "targetPort": "metrics"}]}})
        _eventually("a ready endpoint of the exporter Service", lambda: any(
            (e.get("conditions") or {}).get("ready") for s in k.list("discovery.k8s.io/v1", "EndpointSlice", NS,
                                                                       "kubernetes.io/service-name=exporter")[0]
            for e in s.get("endpoints") or []))
        yield k


def monitor(kube, kind: str, name: str, selector: dict, **endpoint) -> MonitorRef:
    key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    kube.apply({"apiVersion": monitors.API, "kind": kind, "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": selector, key: [endpoint]}})
    return MonitorRef(kind, NS, name)


def test_a_service_monitor_selecting_the_metrics_port_has_the_ready_endpoint_as_its_target(kube):
    found = monitors.resolve(kube, monitor(kube, "ServiceMonitor", "good", {"matchLabels": APP}, port="http-metrics"))
    assert found.ok, found.problem
    assert len(found.targets) == 1 and found.targets[0].startswith(f"{NS}/exporter:http-metrics ")


def test_match_expressions_are_matched_by_the_api_server(kube):
    ref = monitor(kube, "ServiceMonitor", "expr", {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["exporter", "other"]}, {"key": "tier", "operator": "DoesNotExist"}]},
        port="http-metrics")
    assert monitors.resolve(kube, ref).ok


def test_a_service_monitor_whose_selector_matches_nothing_fails_saying_so(kube):
    found = monitors.resolve(kube, monitor(kube, "ServiceMonitor", "typo", {"matchLabels": {"app": "exportr"}},
                                           port="http-metrics"))
    assert not found.ok and found.targets == ()
    assert found.problem == (f"ServiceMonitor {NS}/typo: selects no Service (labels app=exportr in namespace {NS})")


def test_a_service_monitor_naming_a_port_the_service_lacks_fails_naming_it(kube):
    found = monitors.resolve(kube, monitor(kube, "ServiceMonitor", "port", {"matchLabels": APP}, port="metrics"))
    assert not found.ok
    assert "no ready endpoint on the monitored port" in found.problem and "no port named 'metrics'" in found.problem


def test_a_pod_monitor_targets_the_ready_pods_container_port(kube):
    found = monitors.resolve(kube, monitor(kube, "PodMonitor", "pods", {"matchLabels": APP}, port="metrics"))
    assert found.ok, found.problem
    assert len(found.targets) == 1 and found.targets[0].endswith(":9100")


def test_a_pod_monitor_selecting_no_pod_fails_saying_so(kube):
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "idle", "namespace": NS},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "idle"}},
                         "template": {"metadata": {"labels": {"app": "idle"}}, "spec": {"containers": [{
                             "name": "idle", "image": "registry.example/idle:1"}]}}}})
    found = monitors.resolve(kube, monitor(kube, "PodMonitor", "idle", {"matchLabels": {"app": "idle"}},
                                           port="metrics"))
    assert found.problem == f"PodMonitor {NS}/idle: selects no Pod (labels app=idle in namespace {NS})"


def test_a_missing_monitor_fails_as_missing(kube):
    found = monitors.resolve(kube, MonitorRef("ServiceMonitor", NS, "absent"))
    assert (found.exists, found.problem) == (False, f"ServiceMonitor {NS}/absent does not exist")


def test_an_unknown_selector_operator_is_named():
    with pytest.raises(monitors.SelectorError, match="'Matches'"):
        monitors.selector_string({"matchExpressions": [{"key": "a", "operator": "Matches", "values": ["x"]}]})


def test_selectors_are_written_in_the_api_servers_syntax():
    assert monitors.selector_string({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "c", "operator": "NotIn", "values": ["x", "y"]}, {"key": "d", "operator": "Exists"}]}) == \
        "a=1,b=2,c notin (x,y),d"
    assert monitors.selector_string(None) == ""
