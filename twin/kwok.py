"""KWOK for the twin: its configuration, the Stages that move Pods and the Node, and the fault Stages.

KWOK (sigs.k8s.io/kwok) is the twin's kubelet: it moves the Pods bound to its fake Node through Stages, objects
that select Pods by jq expressions and write their status. The twin runs it with the Stage CRD enabled, so Stages
are API objects: the lifecycle Stages are created once at start, and a fault is one more Stage created when it
strikes (a crash loop, an image pull back-off), selected with a high weight over the lifecycle ones.

The lifecycle Stages are upstream's own (kustomize/stage in the kwok module, copied into the build cache by
twin/toolchain.py), with one change: Pods whose containers the twin really runs (a model server and its storage
initializer) are left to the twin's process kubelet (twin/kubelet.py), which reports what those processes do.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

API_VERSION = "kwok.x-k8s.io/v1alpha1"
# (directory, file) under the module's kustomize/stage
LIFECYCLE_STAGES = (("node/fast", "node-initialize.yaml"), ("node/heartbeat-with-lease", "node-heartbeat-with-lease.yaml"),
                    ("pod/fast", "pod-ready.yaml"), ("pod/fast", "pod-complete.yaml"), ("pod/fast", "pod-delete.yaml"))
FAULT_WEIGHT = 10000            # beats the lifecycle stages (weight 0), as KWOK's own chaos stages do
FAULT_LABEL = "kstack.io/twin-fault"
NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


def config(path: Path) -> Path:
    """The KwokConfiguration: Stages come from the API (the Stage CRD), nothing else is configured here."""
    doc = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
           "options": {"enableCRDs": ["Stage"], "nodeLeaseDurationSeconds": 40,
                       # the defaults, spelled out: a configuration file leaves them at zero
                       "nodeLeaseParallelism": 4, "podPlayStageParallelism": 4, "nodePlayStageParallelism": 4,
                       "podsOnNodeSyncParallelism": 1}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def stage_crd(crd_dir: Path) -> dict:
    return yaml.safe_load((Path(crd_dir) / "kwok.x-k8s.io_stages.yaml").read_text())


KUBELET_ANNOTATION = "kstack.io/twin-kubelet"   # what the twin's process kubelet decided for a Pod (see below)


def lifecycle_stages(stage_dir: Path, model_label: str) -> list[dict]:
    """Upstream's fast lifecycle Stages, made to wait for the twin's process kubelet.

    The kubelet annotates each Pod of its node first: `simulated` (nothing runs for it: KWOK's pod-ready makes it
    Running and Ready, as upstream's stage does) or `process` (a real process runs: the `pod-started` Stage makes it
    Running with its containers running but not ready, and the kubelet sets Ready once the process serves, as a
    readiness probe would). Pods labelled `model_label` get no status from KWOK at all (twin/modelpods.py).
    """
    out = []
    for directory, name in LIFECYCLE_STAGES:
        stage = yaml.safe_load((Path(stage_dir) / directory / name).read_text())
        if stage["spec"]["resourceRef"]["kind"] == "Pod" and stage["metadata"]["name"] != "pod-delete":
            stage["spec"]["selector"].setdefault("matchExpressions", []).append(
                {"key": f'.metadata.labels["{model_label}"]', "operator": "DoesNotExist"})
        if stage["metadata"]["name"] == "pod-ready":
            started = _started_stage(stage)
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.annotations["{KUBELET_ANNOTATION}"]', "operator": "In", "values": ["simulated"]})
            out.append(started)
        out.append(stage)
    return out


def _started_stage(pod_ready: dict) -> dict:
    """pod-ready with its Ready, ContainersReady and container readiness turned False (the kubelet probes)."""
    stage = copy.deepcopy(pod_ready)
    stage["metadata"]["name"] = "pod-started"
    template = stage["spec"]["next"]["statusTemplate"]
    changed, n = re.subn(r'status: "True"(\n\s*type: (?:Ready|ContainersReady)\n)', r'status: "False"\1', template)
    head, sep, tail = changed.partition("containerStatuses:")
    tail = tail.replace("ready: true", "ready: false", 1)
    if n != 2 or not sep or "ready: false" not in tail:
        raise ValueError("KWOK's pod-ready Stage is not shaped as expected (Ready/ContainersReady conditions and "
                         "container readiness); twin/kwok.py must follow it")
    stage["spec"]["next"]["statusTemplate"] = head + sep + tail
    stage["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.annotations["{KUBELET_ANNOTATION}"]', "operator": "In", "values": ["process"]})
    return stage


def _selector(labels: dict) -> list[dict]:
    return [{"key": f'.metadata.labels["{k}"]', "operator": "In", "values": [v]} for k, v in sorted(labels.items())]


def crashloop_stage(name: str, pod_labels: dict, container: str) -> dict:
    """`container` of the selected running Pods crashes again and again: CrashLoopBackOff, restarts climbing.

    Each firing writes the status, which is a change, so the Stage fires again after its delay: the restart count
    climbs every few seconds, as kubelet's back-off would (10 s, 20 s, ... capped at 300 s in kubelet; shorter here).
    """
    template = f"""
{{{{ $now := Now }}}}
{{{{ $pod := . }}}}
phase: Running
conditions:
- {{type: Initialized, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [{container}]", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: ContainersReady, status: "False", reason: ContainersNotReady, message: "containers with unready status: [{container}]", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: PodScheduled, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
containerStatuses:
{{{{ range $i, $c := .spec.containers }}}}
{{{{ $restarts := 0 }}}}
{{{{ range $pod.status.containerStatuses }}}}{{{{ if eq .name $c.name }}}}{{{{ $restarts = or .restartCount 0 }}}}{{{{ end }}}}{{{{ end }}}}
{{{{ if eq $c.name "{container}" }}}}
- name: {{{{ $c.name | Quote }}}}
  image: {{{{ $c.image | Quote }}}}
  ready: false
  started: false
  restartCount: {{{{ add1 $restarts }}}}
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{{{ printf "back-off 10s restarting failed container=%s pod=%s_%s(%s)" $c.name $pod.metadata.name $pod.metadata.namespace $pod.metadata.uid | Quote }}}}
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{{{ $now | Quote }}}}
      finishedAt: {{{{ $now | Quote }}}}
{{{{ else }}}}
- name: {{{{ $c.name | Quote }}}}
  image: {{{{ $c.image | Quote }}}}
  ready: true
  started: true
  restartCount: {{{{ $restarts }}}}
  state:
    running:
      startedAt: {{{{ or $pod.status.startTime $now | Quote }}}}
{{{{ end }}}}
{{{{ end }}}}
"""
    return _fault_stage(name, "crashloop", pod_labels, [{"key": ".status.phase", "operator": "In",
                                                          "values": ["Running"]}],
                        template, delay_ms=3000, event=("Warning", "BackOff",
                                                        f"Back-off restarting failed container {container}"))


def imagepull_stages(name: str, pod_labels: dict, container: str) -> list[dict]:
    """New Pods of the selection never get `container`'s image; its other containers run.

    As kubelet does (stack-facts-2.md §3): each pull attempt fails (ErrImagePull, a Failed event), then the back-off
    (ImagePullBackOff, a BackOff event), then the next attempt; two Stages alternate the two, each firing on the
    other's write, with kubelet's 10 s doubling back-off compressed to about a second. The sandbox exists (the Pod
    has its IP), the other containers start (kubelet starts each container on its own), and the Pod stays Pending
    and not Ready, so it is no endpoint of its Services.
    """
    reason_of = (f'.status.containerStatuses.[] | select( .name == "{container}" ) | .state.waiting.reason')
    base = [{"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}]
    pull = "rpc error: code = NotFound desc = failed to pull and unpack image"
    return [
        _fault_stage(f"{name}-pull", "imagepull", pod_labels,
                     base + [{"key": reason_of, "operator": "NotIn", "values": ["ErrImagePull"]}],
                     _imagepull_template(container, "ErrImagePull", f"failed to pull image %q: {pull}"),
                     delay_ms=1000,
                     event=("Warning", "Failed", f"Failed to pull image for container {container}: {pull}")),
        _fault_stage(f"{name}-backoff", "imagepull", pod_labels,
                     base + [{"key": reason_of, "operator": "In", "values": ["ErrImagePull"]}],
                     _imagepull_template(container, "ImagePullBackOff", None), delay_ms=300,
                     event=("Normal", "BackOff", f"Back-off pulling image for container {container}"))]


def _imagepull_template(container: str, reason: str, message: str | None) -> str:
    text = message if message else 'Back-off pulling image %q'
    return f"""
{{{{ $now := Now }}}}
{{{{ $pod := . }}}}
phase: Pending
conditions:
- {{type: Initialized, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [{container}]", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: ContainersReady, status: "False", reason: ContainersNotReady, message: "containers with unready status: [{container}]", lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: PodScheduled, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
{{{{ $hostIPs := NodeIPsWith .spec.nodeName }}}}
{{{{ with $hostIPs }}}}
hostIP: {{{{ index . 0 | Quote }}}}
{{{{ end }}}}
{{{{ if not .status.podIP }}}}
{{{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
{{{{ with $podIPs }}}}
podIP: {{{{ index . 0 | Quote }}}}
podIPs:
{{{{ range . }}}}
- ip: {{{{ . | Quote }}}}
{{{{ end }}}}
{{{{ end }}}}
{{{{ end }}}}
startTime: {{{{ or .status.startTime $now | Quote }}}}
containerStatuses:
{{{{ range .spec.containers }}}}
{{{{ if eq .name "{container}" }}}}
- name: {{{{ .name | Quote }}}}
  image: {{{{ .image | Quote }}}}
  imageID: ""
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: {reason}
      message: {{{{ printf "{text}" .image | Quote }}}}
{{{{ else }}}}
- name: {{{{ .name | Quote }}}}
  image: {{{{ .image | Quote }}}}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{{{ $now | Quote }}}}
{{{{ end }}}}
{{{{ end }}}}
"""


def _fault_stage(name: str, kind: str, pod_labels: dict, extra: list[dict], template: str, delay_ms: int,
                 event: tuple[str, str, str]) -> dict:
    """A Stage fires on every change of a selected Pod: one that writes an unchanged status stops by itself."""
    expressions = _selector(pod_labels) + extra
    return {"apiVersion": API_VERSION, "kind": "Stage",
            "metadata": {"name": name, "labels": {FAULT_LABEL: kind}},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                     "selector": {"matchExpressions": expressions},
                     "weight": FAULT_WEIGHT, "delay": {"durationMilliseconds": delay_ms},
                     "next": {"event": {"type": event[0], "reason": event[1], "message": event[2]},
                              "statusTemplate": template}}}


def with_name(stage: dict, name: str) -> dict:
    out = copy.deepcopy(stage)
    out["metadata"]["name"] = name
    return out
