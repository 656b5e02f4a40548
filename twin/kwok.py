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


def lifecycle_stages(stage_dir: Path, process_label: str) -> list[dict]:
    """Upstream's fast lifecycle Stages; Pods labelled `process_label` get no status from them."""
    out = []
    for directory, name in LIFECYCLE_STAGES:
        stage = yaml.safe_load((Path(stage_dir) / directory / name).read_text())
        if stage["spec"]["resourceRef"]["kind"] == "Pod" and stage["metadata"]["name"] != "pod-delete":
            stage["spec"]["selector"].setdefault("matchExpressions", []).append(
                {"key": f'.metadata.labels["{process_label}"]', "operator": "DoesNotExist"})
        out.append(stage)
    return out


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


def imagepull_stage(name: str, pod_labels: dict, container: str) -> dict:
    """New Pods of the selection never get `container`'s image: ImagePullBackOff; its other containers run.

    The sandbox exists (the Pod has its IP), the other containers start (kubelet starts each container on its own),
    and the Pod stays Pending and not Ready, so it is no endpoint of its Services.
    """
    template = f"""
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
{{{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
{{{{ with $podIPs }}}}
podIP: {{{{ index . 0 | Quote }}}}
podIPs:
{{{{ range . }}}}
- ip: {{{{ . | Quote }}}}
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
      reason: ImagePullBackOff
      message: {{{{ printf "Back-off pulling image %q" .image | Quote }}}}
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
    return _fault_stage(name, "imagepull", pod_labels, [{"key": ".metadata.deletionTimestamp",
                                                          "operator": "DoesNotExist"}],
                        template, delay_ms=1000,
                        event=("Warning", "Failed", f"Failed to pull image for container {container}: "
                                                    "rpc error: code = NotFound desc = failed to pull and unpack image"))


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
