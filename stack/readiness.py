"""Readiness of single Kubernetes objects, as Status values (done / terminal / a sentence about what is seen).

The checks of stack/checks.py are built from these; installers gate on those checks and suites assert them.
"""
from __future__ import annotations

import base64
import fnmatch
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

from stack.durations import parse_time
from stack.failures import WAITING_REASON_CATEGORY, Category
from stack.snapshot import Persisting, Status

if TYPE_CHECKING:
    from stack.profile import Profile

# Container states that do not resolve by waiting: fail fast on them.
TERMINAL_WAITING = {"InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}

# Image pulls the kubelet retries (stack-facts-2.md §3, pkg/kubelet/images/image_manager.go): the sync that pulled
# and failed shows ErrImagePull (or RegistryUnavailable), the syncs inside the back-off (10 s, 20 s, 40 s ... 300 s)
# ImagePullBackOff, and a retry may succeed. So one observation is not final: terminal after PULL_FAILED_ATTEMPTS
# failed pulls (the retries after more than one back-off step failed too), or after a pull failure was seen without
# a break for PULL_FAILURE_WINDOW_SECONDS (status writes can coalesce; longer than the first two back-off steps).
PULL_FAILED_ATTEMPT = {"ErrImagePull", "RegistryUnavailable"}
PULL_BACKING_OFF = {"ImagePullBackOff"}
PULL_FAILED_ATTEMPTS = 3
PULL_FAILURE_WINDOW_SECONDS = 60.0

# Restarts are judged by what happens now, not by a Pod's lifetime count (stack-facts-3.md §2.3): the kubelet resets a
# container's restart back-off once it has run 10 minutes without problems (pkg/kubelet/kubelet.go, HasExpiredFunc
# 600 s), so a container whose last termination is older than that is out of any loop the kubelet tracks. A loop is
# CrashLoopBackOff now, or RESTARTS_IN_A_LOOP restarts with the last one inside that window (a restart seen while the
# suite watches always is). Older restarts are evidence: how many, the last reason, when.
RECENT_TERMINATION_SECONDS = 600.0
RESTARTS_IN_A_LOOP = 3


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
class PodHealth(NamedTuple):
    problems: list[str]              # sentences about unhealthy containers
    terminal: str | None             # the first problem that waiting cannot fix
    category: Category | None        # what kind of problem the terminal one is (else a persisting one)
    looping: list[str]               # containers restarting in a loop now
    persisting: list[Persisting]     # states terminal only if they persist (image pulls the kubelet retries)
    past_restarts: list[str]         # restarts out of any loop now (older than RECENT_TERMINATION_SECONDS): evidence


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def restarts(cs: dict, now: datetime | None = None) -> tuple[str | None, bool]:
    """(a sentence about a container's restarts or None when it never restarted, whether they are a loop now)."""
    count = cs.get("restartCount") or 0
    if not count:
        return None, False
    last = (cs.get("lastState") or {}).get("terminated") or {}
    finished = parse_time(last.get("finishedAt"))
    ago = ((now or datetime.now(timezone.utc)) - finished).total_seconds() if finished else None
    text = f"container {cs.get('name')} restarted {count} time{'' if count == 1 else 's'}"
    if last:
        text += f", last {last.get('reason') or 'terminated'} (exit {last.get('exitCode')})"
    text += f" {_age(max(ago, 0))} ago" if ago is not None else " (last termination not reported)"
    # Without a reported finish time the kubelet lost the state (a node restart): judged by the count alone.
    recent = ago is None or ago <= RECENT_TERMINATION_SECONDS
    return text, recent and count >= RESTARTS_IN_A_LOOP


def pod_problems(pod: dict, now: datetime | None = None) -> PodHealth:
    """Sentences about a pod's unhealthy containers, the terminal one if any, and the states terminal only if they
    persist; restarts in a loop now, and past ones as evidence."""
    problems, terminal, category, looping, persisting, past = [], None, None, [], [], []
    spec_images = {c["name"]: c.get("image", "") for c in (pod.get("spec") or {}).get("containers", []) +
                   (pod.get("spec") or {}).get("initContainers", [])}
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    pod_key = meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for kind, statuses in (("init container", status.get("initContainerStatuses") or []),
                           ("container", status.get("containerStatuses") or [])):
        for cs in statuses:
            state = cs.get("state") or {}
            name = cs.get("name")
            image = cs.get("image") or spec_images.get(name, "")
            if "waiting" in state and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
                text = f"{kind} {name} {reason} ({image})" + _said(cs.get("lastState") or {})
                problems.append(text)
                if reason in TERMINAL_WAITING and terminal is None:
                    terminal, category = text, WAITING_REASON_CATEGORY.get(reason, Category.NOT_READY)
                elif reason in PULL_FAILED_ATTEMPT or reason in PULL_BACKING_OFF:
                    persisting.append(Persisting(f"{pod_key}/{name}", f"image pull of {kind} {name}",
                                                 reason in PULL_FAILED_ATTEMPT, PULL_FAILED_ATTEMPTS,
                                                 PULL_FAILURE_WINDOW_SECONDS, Category.IMAGE_PULL))
                if reason == "CrashLoopBackOff" and kind == "container":
                    looping.append(text)
            elif kind == "init container" and "terminated" in state and state["terminated"].get("exitCode", 0) != 0:
                text = f"init container {name} failed: {state['terminated'].get('reason', 'Error')} " \
                       f"exit {state['terminated'].get('exitCode')} ({image})" + _said(state)
                problems.append(text)
                if terminal is None:
                    terminal, category = text, Category.CRASH_LOOP
            elif kind == "container" and not cs.get("ready"):
                problems.append(f"container {name} not ready")
            said, in_loop = restarts(cs, now) if kind == "container" else (None, False)
            if in_loop:
                problems.append(said)
                looping.append(said)
            elif said:
                past.append(said)
    if terminal is None and persisting:
        category = persisting[0].category
    return PodHealth(problems, terminal, category, looping, persisting, past)


def _said(state: dict) -> str:
    """The last line of a terminated container's message (kubelet fills it from the log under
    terminationMessagePolicy FallbackToLogsOnError, as KServe's storage initializer has it): the cause, in its words."""
    lines = [line for line in ((state.get("terminated") or {}).get("message") or "").splitlines() if line.strip()]
    return f": {lines[-1].strip()[:300]}" if lines else ""


def pods_summary(pods: list[dict]) -> PodHealth:
    """The pods' combined health: their distinct problems, the first terminal one (its category, else that of a
    persisting state), loops and persisting states."""
    problems, terminal, category, looping, persisting, past = [], None, None, [], [], []
    for pod in pods:
        health = pod_problems(pod)
        problems += health.problems
        looping += health.looping
        persisting += health.persisting
        past += health.past_restarts
        if terminal is None and health.terminal:
            terminal, category = health.terminal, health.category
    if terminal is None and persisting:
        category = persisting[0].category
    return PodHealth(list(dict.fromkeys(problems)), terminal, category, looping, persisting, past)


# -- workloads -------------------------------------------------------------------------------------------------------
def deployment_status(dep: dict | None, pods: list[dict], ref: str, min_replicas: int = 1) -> Status:
    """Available, with all replicas Ready at the current observedGeneration, and at least `min_replicas` of them (the
    profile's expectation: a Deployment scaled to 0 is Available with 0 of 0 and serves nothing); terminal on pull and
    crash loops, and on fewer desired replicas than expected (nothing in the stack scales its controllers back up)."""
    if dep is None:
        return Status(False, f"deployment {ref} absent")
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    ready = st.get("readyReplicas", 0)
    gen_ok = st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
    rolled_out = (gen_ok and ready == want and st.get("availableReplicas", 0) == want
                  and st.get("updatedReplicas", 0) == want and not st.get("unavailableReplicas")
                  and (want == 0 or condition_true(dep, "Available")))
    health = pods_summary(pods)
    text = f"deployment {ref}: {ready}/{want} ready"
    if not gen_ok:
        text += " (status not yet observed for the current generation)"
    if health.problems:
        text += f"; {'; '.join(health.problems)}"
    elif not rolled_out and not pods:
        text += "; no pods yet"
    if want < min_replicas:
        text += f"; scaled to {want} replica(s), the profile expects at least {min_replicas}"
        return Status(False, text, text, Category.NOT_READY)
    return _workload_status(rolled_out, text, health)


def _workload_status(done: bool, text: str, health: PodHealth) -> Status:
    """A workload's Status: terminal (the whole sentence) when a pod is, and the pods' persisting states."""
    if done:
        return Status(True, text)
    return Status(False, text, text if health.terminal else None, health.category or Category.NOT_READY,
                  health.persisting)


def daemonset_status(ds: dict | None, pods: list[dict], ref: str, min_replicas: int = 1) -> Status:
    """Every scheduled pod Ready at the current generation, and at least `min_replicas` scheduled (a DaemonSet whose
    nodeSelector matches no node schedules none: the profile says 0 where that is expected)."""
    if ds is None:
        return Status(False, f"daemonset {ref} absent")
    st = ds.get("status") or {}
    desired = st.get("desiredNumberScheduled", 0)
    ready = st.get("numberReady", 0)
    gen_ok = st.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    done = gen_ok and ready == desired and st.get("updatedNumberScheduled", 0) == desired and desired >= min_replicas
    health = pods_summary(pods)
    text = f"daemonset {ref}: {ready}/{desired} ready" + (f"; {'; '.join(health.problems)}" if health.problems else "")
    if gen_ok and desired < min_replicas:
        text += f"; {desired} scheduled, the profile expects at least {min_replicas}"
    return _workload_status(done, text, health)


def selects(workload: dict, pod: dict) -> bool:
    """Whether the workload's selector (matchLabels) selects this pod."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    want = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


@dataclass
class ContainerImage:
    """What one container of a workload runs: the images of its Pods, or (no pod yet) its template's."""
    container: str
    images: list[str]                # distinct, in pod order (more than one during a rollout)
    digests: list[str]               # sha256:... from the Pods' imageIDs, where the kubelet reported one
    source: str                      # "pods" | "template"


def workload_images(workload: dict, pods: list[dict]) -> list[ContainerImage]:
    """Per template container, the images its Pods run. Pods are the truth: a template may say `image: auto` (Istio's
    gateway chart), which istiod's sidecar injector replaces on the Pods only. The Pod's spec image is used, not the
    runtime's status image, which is normalised (kserve/x -> docker.io/kserve/x) and so differs from the pin."""
    owned = [p for p in pods if selects(workload, p)]
    out = []
    for c in ((workload.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        name = c["name"]
        images = list(dict.fromkeys(pc.get("image", "") for p in owned for pc in (p.get("spec") or {}).get("containers")
                                    or [] if pc.get("name") == name))
        digests = list(dict.fromkeys(
            cs["imageID"].rpartition("@")[2] for p in owned for cs in (p.get("status") or {}).get("containerStatuses")
            or [] if cs.get("name") == name and "@" in (cs.get("imageID") or "")))
        if images:
            out.append(ContainerImage(name, images, digests, "pods"))
        else:
            out.append(ContainerImage(name, [c.get("image", "")], [], "template"))
    return out


def image_matches(expected: str, actual: str) -> bool:
    """Profile images may end in '@sha256:*' where the digest cannot be pinned."""
    return fnmatch.fnmatchcase(actual, expected) if "*" in expected else actual == expected


@dataclass(frozen=True)
class ImageJudgement:
    matches: bool            # the profile's pin, or the release's own image that the pin overrides
    risk: str | None         # why a new Pod could not pull it (a retired registry), else None


def judge_image(profile: "Profile", expected: str, actual: str) -> ImageJudgement:
    """A running image against the profile's pin. The release's own image, where the profile pins a replacement
    (image_overrides), is the release as a hand install applies it: it matches, and if its registry is retired the
    running Pod started from a node's cache and a new one cannot pull it, a risk said beside the match."""
    risk = profile.retired_registry(actual)
    if risk:
        risk = f"{actual}: {risk}; a new or rescheduled Pod cannot pull it" + (
            f" (the profile pins {expected})" if expected != actual else "")
    matches = image_matches(expected, actual) or profile.released_image(expected) == actual
    return ImageJudgement(matches, risk)


def image_drift(workload: str, container: str, running: str, expected: str, judged: list[ImageJudgement]) -> str:
    """One line of image drift: what runs against the pin, and what a retired registry means for it (the fact a
    user must act on: a new Pod cannot pull that image, whatever the pin says)."""
    return (f"{workload} container {container}: runs {running}, profile pins {expected}"
            + "".join(f"; {j.risk}" for j in judged if j.risk))


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


def issuer_status(issuer: dict | None, kind: str, ref: str) -> Status:
    """A cert-manager Issuer or ClusterIssuer: Ready."""
    if issuer is None:
        return Status(False, f"{kind.lower()} {ref} absent")
    return Status(condition_true(issuer, "Ready"), f"{kind.lower()} {ref}: {_cond_text(issuer, 'Ready')}")


def inference_service_status(isvc: dict | None, pods: list[dict], ref: str) -> Status:
    """Ready, PredictorReady and IngressReady with a URL; terminal when its pods are (image pull, crash loop)."""
    if isvc is None:
        return Status(False, f"inferenceservice {ref} absent")
    conds = {t: condition_true(isvc, t) for t in ("PredictorReady", "IngressReady", "Ready")}
    done = all(conds.values()) and bool((isvc.get("status") or {}).get("url"))
    details = [c for c in (isvc.get("status") or {}).get("conditions", []) if c.get("status") != "True"]
    text = f"inferenceservice {ref}: " + ", ".join(f"{k}={v}" for k, v in conds.items())
    if details:
        text += "; " + "; ".join(f"{c['type']}: {c.get('reason', '')} {c.get('message', '')}".strip() for c in details)
    health = pods_summary(pods)
    if health.problems:
        text += f"; pods: {'; '.join(health.problems)}"
    if done:
        return Status(True, text)
    return Status(False, text, text if health.terminal else None, health.category, health.persisting)


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
