"""Readiness of Kubernetes objects, as Status values (done / terminal / a sentence about what is seen).

Installers gate on these and suites assert them, through stack.wait.wait_for.
"""
from __future__ import annotations

import base64
import fnmatch
from typing import Callable

from stack.wait import Snapshot, Source, Status

# Container states that do not resolve by waiting: fail fast on them.
TERMINAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def condition(obj: dict | None, type_: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def condition_true(obj: dict | None, type_: str) -> bool:
    c = condition(obj, type_)
    return bool(c) and c.get("status") == "True"


def _cond_text(obj: dict | None, type_: str) -> str:
    c = condition(obj, type_)
    if not c:
        return f"{type_} absent"
    extra = " ".join(x for x in (c.get("reason"), c.get("message")) if x)
    return f"{type_}={c.get('status')}" + (f" ({extra})" if extra else "")


# -- pods ------------------------------------------------------------------------------------------------------------
def pod_problems(pod: dict) -> tuple[list[str], str | None]:
    """Sentences about a pod's unhealthy containers, and the terminal one if any."""
    problems, terminal = [], None
    spec_images = {c["name"]: c.get("image", "") for c in (pod.get("spec") or {}).get("containers", []) +
                   (pod.get("spec") or {}).get("initContainers", [])}
    status = pod.get("status") or {}
    for kind, statuses in (("init container", status.get("initContainerStatuses") or []),
                           ("container", status.get("containerStatuses") or [])):
        for cs in statuses:
            state = cs.get("state") or {}
            name = cs.get("name")
            image = cs.get("image") or spec_images.get(name, "")
            if "waiting" in state and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
                text = f"{kind} {name} {reason} ({image})"
                problems.append(text)
                if reason in TERMINAL_WAITING:
                    terminal = terminal or text
            elif kind == "init container" and "terminated" in state and state["terminated"].get("exitCode", 0) != 0:
                text = f"init container {name} failed: {state['terminated'].get('reason', 'Error')} " \
                       f"exit {state['terminated'].get('exitCode')} ({image})"
                problems.append(text)
                terminal = terminal or text
            elif kind == "container" and not cs.get("ready"):
                problems.append(f"container {name} not ready")
            if cs.get("restartCount", 0) >= 3 and kind == "container":
                problems.append(f"container {name} restarted {cs['restartCount']} times")
    return problems, terminal


def pods_summary(pods: list[dict]) -> tuple[str, str | None]:
    problems, terminal = [], None
    for pod in pods:
        p, t = pod_problems(pod)
        problems += p
        terminal = terminal or t
    return "; ".join(dict.fromkeys(problems)), terminal


# -- workloads -------------------------------------------------------------------------------------------------------
def deployment_status(dep: dict | None, pods: list[dict], ref: str) -> Status:
    """Available, with all replicas Ready at the current observedGeneration; terminal on pull/crash loops."""
    if dep is None:
        return Status(False, f"deployment {ref} absent")
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    ready = st.get("readyReplicas", 0)
    gen_ok = st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
    done = (gen_ok and ready == want and st.get("availableReplicas", 0) == want
            and st.get("updatedReplicas", 0) == want and not st.get("unavailableReplicas")
            and (want == 0 or condition_true(dep, "Available")))
    problems, terminal = pods_summary(pods)
    text = f"deployment {ref}: {ready}/{want} ready"
    if not gen_ok:
        text += " (status not yet observed for the current generation)"
    if problems:
        text += f"; {problems}"
    elif not done and not pods:
        text += "; no pods yet"
    return Status(done, text, None if done else (f"{text}" if terminal else None))


def daemonset_status(ds: dict | None, pods: list[dict], ref: str) -> Status:
    if ds is None:
        return Status(False, f"daemonset {ref} absent")
    st = ds.get("status") or {}
    desired = st.get("desiredNumberScheduled", 0)
    ready = st.get("numberReady", 0)
    gen_ok = st.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    done = gen_ok and ready == desired and st.get("updatedNumberScheduled", 0) == desired
    problems, terminal = pods_summary(pods)
    text = f"daemonset {ref}: {ready}/{desired} ready" + (f"; {problems}" if problems else "")
    return Status(done, text, None if done else (text if terminal else None))


def workload_sources(namespace: str) -> list[Source]:
    """What a workloads wait watches in one namespace: Deployments, DaemonSets and Pods."""
    return [Source("apps/v1", "Deployment", namespace), Source("apps/v1", "DaemonSet", namespace),
            Source("v1", "Pod", namespace)]


def workloads_check(workloads: list[tuple[str, str, str]]) -> Callable[[Snapshot], Status]:
    """A check over workload_sources(ns) for (kind, namespace, name) items of one namespace."""

    def check(snap: Snapshot) -> Status:
        by_kind = {"Deployment": {_ref(o): o for o in snap.items(0)}, "DaemonSet": {_ref(o): o for o in snap.items(1)}}
        pods = snap.items(2)
        statuses = []
        for kind, ns, name in workloads:
            obj = by_kind[kind].get(f"{ns}/{name}")
            owned = [p for p in pods if _selected(obj, p)] if obj else []
            fn = deployment_status if kind == "Deployment" else daemonset_status
            statuses.append(fn(obj, owned, f"{ns}/{name}"))
        pending = [s for s in statuses if not s.done]
        if not pending:
            return Status(True, "; ".join(s.observed for s in statuses))
        terminal = next((s.terminal for s in pending if s.terminal), None)
        return Status(False, " | ".join(s.observed for s in pending), terminal)

    return check


def _ref(obj: dict) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _selected(workload: dict, pod: dict) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    want = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def image_matches(expected: str, actual: str) -> bool:
    """Profile images may end in '@sha256:*' where the digest cannot be pinned."""
    return fnmatch.fnmatchcase(actual, expected) if "*" in expected else actual == expected


# -- CRDs, certificates, endpoints, webhooks ---------------------------------------------------------------------------
def crd_status(crd: dict | None, name: str, versions: list[str] | None = None) -> Status:
    if crd is None:
        return Status(False, f"CRD {name} absent")
    established, accepted = condition_true(crd, "Established"), condition_true(crd, "NamesAccepted")
    served = [v["name"] for v in crd["spec"].get("versions", []) if v.get("served")]
    missing = [v for v in (versions or []) if v not in served]
    done = established and accepted and not missing
    text = f"CRD {name}: {_cond_text(crd, 'Established')}, {_cond_text(crd, 'NamesAccepted')}, serves {served}"
    if missing:
        text += f", missing versions {missing}"
    return Status(done, text)


def certificate_status(cert: dict | None, ref: str) -> Status:
    if cert is None:
        return Status(False, f"certificate {ref} absent")
    gen_ok = (condition(cert, "Ready") or {}).get("observedGeneration", cert["metadata"].get("generation", 0)) \
        >= cert["metadata"].get("generation", 0)
    done = condition_true(cert, "Ready") and gen_ok
    return Status(done, f"certificate {ref}: {_cond_text(cert, 'Ready')}")


def endpoints_status(ep: dict | None, ref: str) -> Status:
    addresses = sum(len(s.get("addresses") or []) for s in (ep or {}).get("subsets") or [])
    if ep is None:
        return Status(False, f"endpoints {ref} absent")
    return Status(addresses > 0, f"endpoints {ref}: {addresses} ready address(es)")


PLACEHOLDER_CA = {"", "Cg=="}   # KServe ships caBundle "Cg==" (a newline) until the cainjector fills it


def ca_bundle_problem(ca_bundle: str | None) -> str | None:
    """Why a webhook caBundle is not usable, or None."""
    if not ca_bundle or ca_bundle in PLACEHOLDER_CA:
        return "caBundle not injected (placeholder)"
    try:
        pem = base64.b64decode(ca_bundle).decode()
    except (ValueError, UnicodeDecodeError):
        return "caBundle is not base64 PEM"
    from cryptography import x509
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as e:
        return f"caBundle is not valid PEM: {e}"
    return None


def webhook_config_status(cfg: dict | None, ref: str) -> Status:
    if cfg is None:
        return Status(False, f"{ref} absent")
    problems = []
    for hook in cfg.get("webhooks") or []:
        p = ca_bundle_problem((hook.get("clientConfig") or {}).get("caBundle"))
        if p:
            problems.append(f"{hook['name']}: {p}")
    return Status(not problems, f"{ref}: " + ("; ".join(problems) if problems else "caBundle valid"))
