"""What every stand-in process shares: the API client of its Pod, informers (list + watch), an admission webhook
server, and a main loop that stops cleanly on SIGTERM.

A stand-in is started by the twin's process kubelet (twin/kubelet.py) with:
    KUBECONFIG     a kubeconfig holding its Pod's ServiceAccount token (so RBAC is the component's own)
    POD_NAME, POD_NAMESPACE, POD_IP
    TWIN_VOLUMES   where its Pod's Secret and ConfigMap volumes are written (<dir>/<mountPath>)
    TWIN_PORTS     its container's ports, "name=number,..." (a stand-in listens where the Pod spec says)
    TWIN_PROFILE   the profile the twin runs (for what a stand-in cannot read from the cluster, e.g. an image name)
    TWIN_FAULTS_FILE  the twin's active faults, one "kind[:target]" per line; read on every question, because a
                   runtime fault strikes a running stack (the twin rewrites the file)
and its container's args appended to its command line, as a real binary gets them.
"""
from __future__ import annotations

import atexit
import base64
import http.server
import json
import logging
import os
import queue
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator

import urllib3
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from stack.kube import find_resource

log = logging.getLogger("twin.standin")

WATCH_SECONDS = 300            # one watch request lasts this long, then resumes from its resourceVersion
BACKOFF_MAX = 5.0


def discovery_cache_file(tag: str) -> str:
    """A discovery cache file of this process's own, removed when it exits: the client's default file in the temp
    dir is shared by every process of the machine, and concurrent writers corrupt it."""
    path = os.path.join(tempfile.gettempdir(), f"kstack-discovery-{os.getpid()}-{tag}.json")
    if not _DISCOVERY_FILES:
        atexit.register(_remove_discovery_files)
    _DISCOVERY_FILES.append(path)
    return path


_DISCOVERY_FILES: list[str] = []


def _remove_discovery_files() -> None:
    for path in _DISCOVERY_FILES:
        try:
            os.unlink(path)
        except OSError:
            pass


def pod_env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"stand-in: {name} is not set (the twin's kubelet sets it)")
    return value


def faults() -> set[str]:
    from twin.faults import read_fault_file
    return set(read_fault_file(os.environ.get("TWIN_FAULTS_FILE")))


def ports() -> dict[str, int]:
    out = {}
    for item in os.environ.get("TWIN_PORTS", "").split(","):
        name, _, number = item.partition("=")
        if number.isdigit():
            out[name] = int(number)
    return out


def volume_path(mount_path: str) -> str:
    """Where the kubelet wrote the Pod volume mounted at `mount_path`."""
    return os.path.join(pod_env("TWIN_VOLUMES"), mount_path.lstrip("/"))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def condition(obj: dict | None, type_: str) -> dict | None:
    """The object's status condition of this type (the API's conventions), or None."""
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def is_true(obj: dict | None, type_: str) -> bool:
    return (condition(obj, type_) or {}).get("status") == "True"


class Kube:
    """Dicts in, dicts out, through the official client's dynamic API."""

    def __init__(self, kubeconfig: str | None = None):
        self.api_client = k8s_config.new_client_from_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"))
        self.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16
        self._dyn: DynamicClient | None = None
        self._lock = threading.Lock()

    @property
    def dyn(self) -> DynamicClient:
        with self._lock:
            if self._dyn is None:
                # One discovery cache file per process: the default one in the temp dir is shared by every process
                # of the machine, and concurrent writers corrupt it.
                self._dyn = DynamicClient(self.api_client, cache_file=discovery_cache_file(f"twin-{id(self)}"))
            return self._dyn

    def resource(self, api_version: str, kind: str):
        return find_resource(self.dyn, api_version, kind)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], str]:
        result = self.resource(api_version, kind).get(namespace=namespace, label_selector=label_selector,
                                                      field_selector=field_selector).to_dict()
        return result.get("items") or [], (result.get("metadata") or {}).get("resourceVersion", "")

    def watch(self, api_version: str, kind: str, resource_version: str, namespace: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None) -> Iterator[tuple[str, dict]]:
        res = self.resource(api_version, kind)
        for event in self.dyn.watch(res, namespace=namespace, resource_version=resource_version,
                                    label_selector=label_selector, field_selector=field_selector,
                                    timeout=WATCH_SECONDS, allow_watch_bookmarks=True):
            yield event["type"], event["raw_object"]

    def create(self, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        return self.resource(obj["apiVersion"], obj["kind"]).create(body=obj, namespace=meta.get("namespace")).to_dict()

    def replace(self, obj: dict) -> dict:
        """An update (PUT) carrying the object's resourceVersion: refused with 409 when it changed meanwhile."""
        meta = obj.get("metadata") or {}
        return self.resource(obj["apiVersion"], obj["kind"]).replace(body=obj, name=meta["name"],
                                                                    namespace=meta.get("namespace")).to_dict()

    def apply(self, obj: dict, manager: str, force: bool = True) -> dict:
        meta = obj.get("metadata") or {}
        return self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"), field_manager=manager,
            force_conflicts=force).to_dict()

    def ensure(self, obj: dict, manager: str, current: dict | None) -> dict:
        """`obj` applied, unless `current` (the informer's copy) already has every field of it: a reconciler
        writes only what differs from its lister's state (knative.dev/pkg's reconcilers compare with
        equality.Semantic before an update), instead of a no-op apply on every event."""
        if current is not None and covers(current, obj):
            return current
        return self.apply(obj, manager)

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: dict,
              subresource: str | None = None) -> dict:
        res = self.resource(api_version, kind)
        if subresource:
            res = res.subresources[subresource]
        return res.patch(body=body, name=name, namespace=namespace,
                         content_type="application/merge-patch+json").to_dict()

    def apply_status(self, obj: dict, status: dict, manager: str) -> dict:
        """Server-side apply of the status subresource (what controller-runtime controllers do with SSA)."""
        meta = obj["metadata"]
        body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                "metadata": {"name": meta["name"], **({"namespace": meta["namespace"]} if meta.get("namespace") else {})},
                "status": status}
        res = self.resource(obj["apiVersion"], obj["kind"]).subresources["status"]
        return res.server_side_apply(body=body, name=meta["name"], namespace=meta.get("namespace"),
                                     field_manager=manager, force_conflicts=True).to_dict()

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def event(self, involved: dict, reason: str, message: str, type_: str = "Normal", component: str = "") -> None:
        """An Event about `involved`, as controllers record them (best effort: an event is never worth a crash)."""
        meta = involved.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": ns},
                "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                                   "name": meta.get("name"), "namespace": meta.get("namespace"),
                                   "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "firstTimestamp": now_iso(), "lastTimestamp": now_iso(),
                "source": {"component": component or os.environ.get("POD_NAME", "twin")},
                "reportingComponent": component or "twin"}
        try:
            self.create(body)
        except Exception:  # noqa: BLE001
            log.debug("event %s for %s not recorded", reason, meta.get("name"), exc_info=True)


class WorkQueue:
    """Keys to reconcile, deduplicated, handled one at a time by one worker, failures requeued with a per-key
    exponential back-off (5 ms doubling to 30 s, as controller-runtime's default rate limiter)."""

    def __init__(self, handle):
        self.handle = handle
        self._queue: queue.Queue = queue.Queue()
        self._pending: set = set()
        self._failures: dict = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._work, daemon=True, name="workqueue").start()

    def _retry(self, key) -> None:
        n = self._failures[key] = self._failures.get(key, 0) + 1
        timer = threading.Timer(min(0.005 * 2 ** n, 30.0), self.add, args=(key,))
        timer.daemon = True
        timer.start()

    def add(self, key) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        self._queue.put(key)

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            with self._lock:
                self._pending.discard(key)
            try:
                self.handle(key)
                self._failures.pop(key, None)
            except ApiException as e:
                if e.status == 409:      # a concurrent writer: reconcile again from the fresh object
                    self.add(key)
                else:
                    log.warning("reconcile %s failed: %s %s: %s", key, e.status, e.reason, (e.body or "")[:500])
                    self._retry(key)
            except Exception:  # noqa: BLE001
                log.exception("reconcile %s failed", key)
                self._retry(key)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


class Informer:
    """List, then watch from the list's resourceVersion; re-list on 410 Gone; bounded backoff on errors.

    `handler(event_type, obj)` is called for every change (ADDED/MODIFIED/DELETED), from the informer's thread.
    `cache` holds the current objects by (namespace, name).
    """

    def __init__(self, kube: Kube, api_version: str, kind: str, handler: Callable[[str, dict], None] | None = None,
                 namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None):
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.handlers = [handler] if handler else []
        self.cache: dict[tuple[str, str], dict] = {}
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"informer-{kind}")

    def start(self) -> "Informer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def items(self) -> list[dict]:
        return list(self.cache.values())

    def get(self, name: str, namespace: str | None = None) -> dict | None:
        return self.cache.get((namespace or "", name))

    def _emit(self, event_type: str, obj: dict) -> None:
        for handler in self.handlers:
            try:
                handler(event_type, obj)
            except Exception:  # noqa: BLE001 - one bad reconcile must not stop the informer
                log.exception("handler for %s %s failed", self.kind, (obj.get("metadata") or {}).get("name"))

    def _run(self) -> None:
        delay = 0.2
        while not self.stopped.is_set():
            try:
                rv = self._relist()
                delay = 0.2
                while not self.stopped.is_set():
                    rv = self._watch(rv)
            except _Gone:
                continue
            except Exception as e:  # noqa: BLE001
                if not _transient(e):
                    log.warning("informer %s: %s", self.kind, e)
                if self.stopped.wait(delay):
                    return
                delay = min(delay * 2, BACKOFF_MAX)

    def _relist(self) -> str:
        items, rv = self.kube.list(self.api_version, self.kind, self.namespace, self.label_selector,
                                   self.field_selector)
        seen = set()
        for obj in items:
            obj.setdefault("apiVersion", self.api_version)
            obj.setdefault("kind", self.kind)
            key = _key(obj)
            seen.add(key)
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("ADDED" if old is None else "MODIFIED", obj)
        for key in [k for k in self.cache if k not in seen]:
            self._emit("DELETED", self.cache.pop(key))
        self.synced.set()
        return rv

    def _watch(self, rv: str) -> str:
        for event_type, obj in self.kube.watch(self.api_version, self.kind, rv, self.namespace, self.label_selector,
                                               self.field_selector):
            if self.stopped.is_set():
                break
            if event_type == "ERROR":
                if (obj or {}).get("code") == 410:
                    raise _Gone()
                raise RuntimeError(f"watch error: {obj}")
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if event_type == "BOOKMARK":
                continue
            key = _key(obj)
            if event_type == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
            self._emit(event_type, obj)
        return rv


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


# -- admission webhooks -----------------------------------------------------------------------------------------------

class Admission:
    """A webhook's answer: allowed, or denied with a message (the API server prints it after "denied the request:")."""

    def __init__(self, allowed: bool = True, message: str | None = None, patch: list | None = None,
                 code: int = 400, warnings: list[str] | None = None):
        self.allowed, self.message, self.patch, self.code, self.warnings = allowed, message, patch, code, warnings

    @classmethod
    def deny(cls, message: str, code: int = 400) -> "Admission":
        return cls(False, message, code=code)


class WebhookServer:
    """HTTPS AdmissionReview (admission.k8s.io/v1) server on host:port; paths map to handlers(request) -> Admission.

    The serving certificate can change while it runs (`set_certificate`): components that manage their own webhook
    TLS rotate it, cert-manager renews it.
    """

    def __init__(self, host: str, port: int, handlers: dict[str, Callable[[dict], Admission]],
                 health_paths: tuple[str, ...] = ("/healthz", "/readyz", "/livez")):
        self.handlers, self.health_paths = handlers, health_paths
        self._ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # noqa: A002 - the access log goes to debug
                log.debug("webhook %s", fmt % args)

            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] in server.health_paths:
                    self._send(200, b"ok", "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    review = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, b"bad AdmissionReview", "text/plain")
                    return
                handler = server.handlers.get(self.path.split("?")[0])
                if handler is None:
                    self._send(404, b"no webhook at this path", "text/plain")
                    return
                self._send(200, json.dumps(server.review(review, handler)).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class TLSServer(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = self.socket.accept()
                with server._lock:
                    ctx = server._ctx
                if ctx is None:
                    sock.close()
                    raise OSError("no serving certificate yet")
                sock.settimeout(10)
                return ctx.wrap_socket(sock, server_side=True), addr

            def handle_error(self, request, client_address):
                log.debug("webhook connection from %s failed", client_address, exc_info=True)

        self.httpd = TLSServer((host, port), Handler)
        self.address = self.httpd.server_address

    def set_certificate(self, cert_pem: bytes, key_pem: bytes) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.NamedTemporaryFile("wb", delete=False) as c, tempfile.NamedTemporaryFile("wb", delete=False) as k:
            c.write(cert_pem)
            k.write(key_pem)
        try:
            ctx.load_cert_chain(c.name, k.name)
        finally:
            os.unlink(c.name)
            os.unlink(k.name)
        with self._lock:
            self._ctx = ctx

    @property
    def has_certificate(self) -> bool:
        return self._ctx is not None

    def review(self, review: dict, handler: Callable[[dict], Admission]) -> dict:
        request = review.get("request") or {}
        try:
            result = handler(request)
        except Exception as e:  # noqa: BLE001 - a handler bug answers 500, as a crashed webhook would
            log.exception("webhook handler failed")
            result = Admission(False, f"internal error: {e}", code=500)
        response: dict = {"uid": request.get("uid"), "allowed": result.allowed}
        if not result.allowed:
            response["status"] = {"code": result.code, "message": result.message or "denied",
                                  "reason": "Forbidden" if result.code == 403 else "BadRequest"}
        if result.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(result.patch).encode()).decode()
        if result.warnings:
            response["warnings"] = result.warnings
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def serve_in_background(self) -> "WebhookServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="webhook").start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def listen_address() -> str:
    """The Pod IP this process serves on (the twin's kubelet passes it)."""
    return pod_env("POD_IP")


FIRST_ELECTION_SECONDS = 5.0    # a lone replica takes a free or expired Lease in its first attempt


def run(start: Callable[[threading.Event], None], name: str) -> int:
    """Configure logging, take part in the component's leader elections (twin/standins/leader.py, by `name`), call
    `start(stop)` (where the component's controllers wait for leadership: once it leads), then block until
    SIGTERM/SIGINT sets `stop`. A follower is Ready all the same, as a replica that waits for its Lease is."""
    from twin.standins import leader
    logging.basicConfig(stream=sys.stdout, level=os.environ.get("TWIN_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s %(levelname)s {name}: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("starting (pod %s/%s, ip %s)", os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME"),
             os.environ.get("POD_IP"))
    # Only a component that elects needs the API here (a model Pod's sidecar has no kubeconfig of its own).
    electors = leader.elect(Kube(), name, stop, faults=faults) if name in leader.ELECTIONS else []
    if electors and leader.ELECTIONS[name].gates:
        leading = _first_leadership(electors, stop, FIRST_ELECTION_SECONDS)
        if leading:
            start(stop)
        else:
            log.info("a follower: the controllers start once this replica leads")
            threading.Thread(target=lambda: _first_leadership(electors, stop, None) and start(stop), daemon=True,
                             name="await-leadership").start()
    else:
        start(stop)
    ready = os.environ.get("TWIN_READY_FILE")
    if ready:     # serving: the kubelet turns the Pod Ready (what a readiness probe would find)
        with open(ready, "w") as f:
            f.write("ready\n")
    stop.wait()
    log.info("stopping")
    for elector in electors:
        if elector.leading.is_set() and elector.election.release_on_cancel:
            elector.release()
    return 0


def _first_leadership(electors, stop: threading.Event, timeout: float | None) -> bool:
    """Whether this replica leads one of its elections within `timeout` (None: until `stop`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        if any(e.leading.is_set() for e in electors):
            return True
        stop.wait(0.05)
    return any(e.leading.is_set() for e in electors)


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts connections on host:port (for a process's start-up)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.3)
    return False


# -- object helpers --------------------------------------------------------------------------------------------------

def set_condition(conditions: list[dict] | None, ctype: str, status: str, reason: str | None = None,
                  message: str | None = None, **extra) -> list[dict]:
    """A new condition list with `ctype` set; lastTransitionTime kept unless the status changes."""
    conditions = [dict(c) for c in conditions or []]
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now_iso()
            cond["status"] = status
            for k, v in (("reason", reason), ("message", message)):
                if v is None:
                    cond.pop(k, None)
                else:
                    cond[k] = v
            cond.update(extra)
            return conditions
    cond = {"type": ctype, "status": status, "lastTransitionTime": now_iso()}
    if reason is not None:
        cond["reason"] = reason
    if message is not None:
        cond["message"] = message
    cond.update(extra)
    conditions.append(cond)
    return conditions


def covers(actual, desired) -> bool:
    """Whether `actual` has every field of `desired` with its value (fields the API server or a webhook added to
    `actual`, defaults and status, do not matter); lists match item by item."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(covers(actual.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and all(
            covers(a, d) for a, d in zip(actual, desired, strict=True))
    return actual == desired


def owner_ref(obj: dict, controller: bool = True) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def fault_targets(kind: str) -> set[str]:
    """Targets of the TWIN_FAULTS entries of `kind` ("kind:target" entries)."""
    out = set()
    for entry in faults():
        k, _, target = entry.partition(":")
        if k == kind and target:
            out.add(target)
    return out


def has_fault(kind: str) -> bool:
    return any(entry.partition(":")[0] == kind for entry in faults())
