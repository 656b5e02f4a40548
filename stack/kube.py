"""The one module through which the suite talks to Kubernetes.

Client construction, server-side apply, reads, watches, logs and the service proxy all go through `Kube`, so that
error translation, retries of transient API answers, and request counting live in one place.

Kube owns the `api` retry layer (stack/retry.py): a transient answer (429/5xx/unreachable) is retried here, a few
times and never past the caller's deadline, and nowhere else. Its RetryLog is the run's (or its own).
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import threading
from collections import Counter
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from stack import retry
from stack.failures import Category, CheckFailure

if TYPE_CHECKING:
    from stack.deadline import Deadline

log = logging.getLogger("kstack.kube")

FIELD_MANAGER = "kstack"
API_ATTEMPTS = 6          # tries of one request on transient answers (under 5 s of backoff, never past the deadline)
API_BACKOFF_BASE = 0.2
API_BACKOFF_CAP = 1.6


class KubeError(Exception):
    """An API answer that is not success, as a sentence: status code, reason and the server's message."""

    def __init__(self, status: int, reason: str, message: str, what: str = ""):
        self.status, self.reason, self.message, self.what = status, reason, message, what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{message} (HTTP {status} {reason})" if status else f"{prefix}{message}")

    @property
    def category(self) -> Category | None:
        """What the answer means for a check, by the signatures the retry layers know (stack/retry.py): what is
        retried as an outage or an install race is reported as one; None for any other answer."""
        race = retry.race_signature(self)
        if race is not None:
            return Category.CRD if race == retry.KIND_NOT_SERVED else Category.WEBHOOK_TLS
        if retry.is_api_transient(self) is not None:
            return Category.INFRASTRUCTURE
        return None


class ApiUnreachable(KubeError):
    def __init__(self, url: str, detail: str):
        super().__init__(0, "Unreachable", f"API server unreachable at {url}: {detail}")


class NoSuchKind(KubeError):
    """The API server does not serve this apiVersion/kind (CRD absent or not yet established)."""


@dataclass(frozen=True)
class Access:
    """What a request asks of the API server's authorizer, in RBAC's terms: verbs on a group's resource."""
    verbs: tuple[str, ...]               # ("patch", "create") for a server-side apply, which may create
    group: str                           # "" for the core group
    resource: str                        # plural, with a subresource: "pods/log"
    namespace: str | None = None         # None: cluster-scoped, or every namespace
    name: str | None = None

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{'/'.join(self.verbs)} {resource}{' ' + self.name if self.name else ''} {where}"


class Forbidden(KubeError, CheckFailure):
    """The API server's authorizer refused a request (HTTP 403): which verb on which resource, as fields. A check
    meeting it fails with that, in the permission category, never retried (an AssertionError, like every check
    failure); preflight asks for the same permissions up front (stack/rbac.py)."""

    category = Category.PERMISSION      # before KubeError's in the MRO: a refusal is no outage or race

    def __init__(self, access: Access, message: str, what: str = ""):
        # KubeError's fields, set here: its __init__ would call CheckFailure's through the MRO
        self.status, self.reason, self.message, self.what = 403, "Forbidden", message, what
        self.access = access
        self.text = (f"forbidden: this identity may not {access} (RBAC); the shipped role deploy/rbac/verifier.yaml "
                     f"grants what the checks need (API server: {message})")
        Exception.__init__(self, f"{self.category.tag} {self.text}")


# Kinds a create only asks about: the API server persists nothing, so creating one again is safe.
REVIEW_KINDS = frozenset({"SubjectAccessReview", "SelfSubjectAccessReview", "LocalSubjectAccessReview",
                          "SelfSubjectRulesReview", "SelfSubjectReview", "TokenReview"})
# What the API server itself answers (a Status object) when it is briefly unable to serve a proxied request.
PROXY_TRANSIENT = (429, 500)


class _TransientProxyAnswer(Exception):
    def __init__(self, status: int, text: str):
        self.status, self.text = status, text
        super().__init__(f"HTTP {status}: {text[:200]}")


def _status_body(body: Any) -> dict:
    try:
        data = json.loads(body) if body else {}
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _translate(e: Exception, what: str, server: str) -> KubeError:
    if isinstance(e, KubeError):
        return e
    if isinstance(e, ApiException):
        message, reason = e.reason or "", e.reason or ""
        body = _status_body(e.body)
        if body:
            message = body.get("message", message)
            reason = body.get("reason", reason)
        elif e.body:
            message = str(e.body)[:500]
        return KubeError(e.status or 0, reason, message, what)
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, OSError)):
        return ApiUnreachable(server, transport_cause(e))
    raise e


def transport_cause(error: BaseException) -> str:
    """The innermost cause of a transport failure ("[Errno 111] Connection refused"), not urllib3's wrapping of it
    ("Max retries exceeded with url: ... (Caused by NewConnectionError(...))")."""
    seen = error
    while True:
        inner = getattr(seen, "reason", None) if isinstance(seen, urllib3.exceptions.MaxRetryError) else None
        inner = inner or seen.__cause__ or seen.__context__
        if inner is None or inner is seen or not isinstance(inner, BaseException):
            break
        seen = inner
    if isinstance(seen, OSError) and seen.strerror:
        return f"[Errno {seen.errno}] {seen.strerror}"
    return str(seen).split(": ", 1)[-1][:300]


def _discovery_cache_file() -> str:
    """A discovery cache of this process's own: the client's default file in the temp dir is shared by every process
    on the machine (xdist workers, helm, other runs), and concurrent writers corrupt it."""
    path = os.path.join(tempfile.gettempdir(), f"kstack-discovery-{os.getpid()}.json")
    if path not in _CACHE_FILES:
        _CACHE_FILES.append(path)
    return path


_CACHE_FILES: list[str] = []


@atexit.register
def _remove_cache_files() -> None:
    for path in _CACHE_FILES:
        with contextlib.suppress(OSError):
            os.unlink(path)


def find_resource(dynamic: DynamicClient, api_version: str, kind: str):
    """apiVersion/kind in the client's lazy discovery, which rediscovers by itself once when it finds nothing (a CRD
    established since); ResourceNotFoundError when the API does not serve it.

    A core apiVersion ("v1") gets the core prefix: the client reads a bare "v1" as any group's v1, so without it one
    lookup after a rediscovery reads every */v1 group (some thirty requests), and under a flaky API server no
    attempt gets through them all."""
    where = {} if "/" in api_version else {"prefix": "api"}
    return dynamic.resources.get(api_version=api_version, kind=kind, **where)


class Kube:
    """A cluster seen through one kubeconfig context."""

    def __init__(self, kubeconfig: str | Path | None = None, context: str | None = None,
                 field_manager: str = FIELD_MANAGER, retries: retry.RetryLog | None = None):
        self.kubeconfig, self.context, self.field_manager = kubeconfig, context, field_manager
        self.retries = retries if retries is not None else retry.RetryLog()
        try:
            self.api_client = k8s_config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context)
        except k8s_config.ConfigException as e:
            raise KubeError(0, "BadKubeconfig", f"cannot use kubeconfig {kubeconfig or '~/.kube/config'}"
                            f"{f' context {context}' if context else ''}: {e}") from None
        self.server = self.api_client.configuration.host
        # Several watches run at once during a wait (a workload, its pods...): room for them in the pool.
        pool = self.api_client.rest_client.pool_manager
        pool.connection_pool_kw["maxsize"] = 32
        # urllib3 would retry a 429/503 with Retry-After on its own, inside our retries: Kube owns answer retries.
        # (Its retries of a dropped keep-alive connection stay: they are transport, not answers. A refused connection
        # is not retried there: Kube's own retries own it, so an unreachable server is retried, logged, once per try.)
        pool.connection_pool_kw["retries"] = urllib3.Retry(3, connect=0, status=0, respect_retry_after_header=False)
        self._dynamic: DynamicClient | None = None
        self._failing = False    # the last request failed transiently after its retries
        self._lock = threading.Lock()
        self.requests: Counter = Counter()   # (verb, kind) -> count, for benchmarks and tests

    # -- plumbing -------------------------------------------------------------------------------------------------
    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = self._call("discovery", "", lambda: DynamicClient(
                    self.api_client, cache_file=_discovery_cache_file()))
            return self._dynamic

    def _call(self, verb: str, what: str, fn, *, transient_retry: bool = True, deadline: Deadline | None = None,
              access: Access | None = None):
        def attempt():
            self.requests[(verb, what.split(" ")[0])] += 1
            try:
                return fn()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                raise self._refused(_translate(e, f"{verb} {what}".strip(), self.server), access) from None

        if not transient_retry:
            return attempt()
        # While the API keeps failing (the last request used up its retries), try once: no wait multiplies an outage.
        attempts = 1 if self._failing else API_ATTEMPTS
        try:
            result = retry.call(attempt, what=f"{verb} {what}", layer="api", is_transient=retry.is_api_transient,
                                retries=self.retries, deadline=deadline, attempts=attempts, base=API_BACKOFF_BASE,
                                cap=API_BACKOFF_CAP)
        except KubeError as e:
            self._failing = retry.is_api_transient(e) is not None
            raise
        self._failing = False
        return result

    def resource(self, api_version: str, kind: str):
        """The dynamic resource for apiVersion/kind (a CRD established since discovery is found: see find_resource)."""
        dynamic = self.dynamic     # built (and retried) once, outside the lookup: no retry inside a retry
        try:
            return self._call("discovery", kind, lambda: find_resource(dynamic, api_version, kind))
        except ResourceNotFoundError:
            raise NoSuchKind(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"') from None

    def serves(self, api_version: str, kind: str) -> bool:
        try:
            self.resource(api_version, kind)
            return True
        except NoSuchKind:
            return False

    @staticmethod
    def _ref(api_version: str, kind: str, name: str | None, namespace: str | None) -> str:
        return f"{kind.lower()} {namespace + '/' if namespace else ''}{name or ''}".strip()

    def _refused(self, error: KubeError, access: Access | None) -> KubeError:
        """A 403 is the authorizer's refusal only when the authorizer says so: admission (a webhook's denial, a quota,
        a terminating namespace) answers 403 too. So ask it, per verb (an apply is a patch and maybe a create), and
        name the verbs it refuses."""
        if error.status != 403 or access is None or isinstance(error, Forbidden):
            return error
        refused = tuple(v for v in access.verbs if not self._may(v, access))
        return Forbidden(dataclasses.replace(access, verbs=refused), error.message, error.what) if refused else error

    def _may(self, verb: str, access: Access) -> bool:
        """One SelfSubjectAccessReview (retried on transient answers, as every API request)."""
        resource, _, sub = access.resource.partition("/")
        attrs = {"verb": verb, "group": access.group, "resource": resource, "subresource": sub or None,
                 "namespace": access.namespace, "name": access.name}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {k: v for k, v in attrs.items() if v}}}
        def ask():
            self.requests[("create", "selfsubjectaccessreviews")] += 1
            return k8s_client.AuthorizationV1Api(self.api_client).create_self_subject_access_review(body)
        try:   # a transient answer to the review is retried like any API request (it must not decide the verdict)
            review = retry.call(ask, what=f"review {verb} {access.resource}", layer="api",
                                is_transient=retry.is_api_transient, retries=self.retries, deadline=None)
        except ApiException as e:
            # 403: it may not even ask, the refusal is the authorizer's; otherwise unanswered: the 403 is not shown
            # to be the authorizer's, so it stays what it was
            return e.status != 403
        except (urllib3.exceptions.HTTPError, OSError):
            return True
        return bool(review.status and review.status.allowed)

    @staticmethod
    def _access(res, *verbs: str, namespace: str | None = None, name: str | None = None) -> Access:
        return Access(verbs, res.group or "", res.name, namespace if res.namespaced else None, name)

    # -- reads ----------------------------------------------------------------------------------------------------
    def server_version(self) -> dict:
        return self._call("get", "version", lambda: k8s_client.VersionApi(self.api_client).get_code().to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            deadline: Deadline | None = None) -> dict | None:
        res = self.resource(api_version, kind)
        try:
            return self._call("get", self._ref(api_version, kind, name, namespace),
                              lambda: res.get(name=name, namespace=namespace).to_dict(), deadline=deadline,
                              access=self._access(res, "get", namespace=namespace, name=name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None, *,
             deadline: Deadline | None = None) -> tuple[list[dict], str]:
        """Items and the list's resourceVersion (to watch from)."""
        res = self.resource(api_version, kind)
        out = self._call("list", f"{kind.lower()} {namespace or ''}", lambda: res.get(
            namespace=namespace, label_selector=label_selector, field_selector=field_selector).to_dict(),
            deadline=deadline, access=self._access(res, "list", namespace=namespace))
        return out.get("items", []), out.get("metadata", {}).get("resourceVersion", "")

    def watch(self, api_version: str, kind: str, namespace: str | None, resource_version: str,
              timeout: int, label_selector: str | None = None, field_selector: str | None = None,
              watcher: k8s_watch.Watch | None = None) -> Iterator[tuple[str, dict]]:
        """Events (type, object) from a resourceVersion; raises KubeError(410) when it expired.
        `watcher.stop()` from another thread ends the stream at once (it shuts the socket down)."""
        res = self.resource(api_version, kind)
        self.requests[("watch", kind.lower())] += 1
        try:
            for event in self.dynamic.watch(res, namespace=namespace, label_selector=label_selector,
                                            field_selector=field_selector, resource_version=resource_version,
                                            timeout=timeout, allow_watch_bookmarks=True, watcher=watcher):
                yield event["type"], event["raw_object"]
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise self._refused(_translate(e, f"watch {kind.lower()}", self.server),
                                self._access(res, "watch", namespace=namespace)) from None

    def pod_log(self, namespace: str, pod: str, container: str, previous: bool = False, tail: int = 200) -> str:
        core = k8s_client.CoreV1Api(self.api_client)
        try:
            return self._call("get", f"pods/log {namespace}/{pod}", lambda: core.read_namespaced_pod_log(
                pod, namespace, container=container, previous=previous, tail_lines=tail), transient_retry=False,
                access=Access(("get",), "", "pods/log", namespace, pod))
        except KubeError as e:
            return f"(no {'previous ' if previous else ''}log: {e.message})"

    # -- writes ---------------------------------------------------------------------------------------------------
    def apply(self, obj: dict, *, dry_run: bool = False, force: bool = True, deadline: Deadline | None = None) -> dict:
        """Server-side apply under the suite's field manager (large CRDs need it: no last-applied annotation)."""
        meta = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        return self._call("apply", self._ref(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")),
                          lambda: res.server_side_apply(
                              body=obj, name=meta["name"], namespace=meta.get("namespace"),
                              field_manager=self.field_manager, force_conflicts=force,
                              dry_run="All" if dry_run else None).to_dict(),
                          deadline=deadline,   # an apply is idempotent, a dry run persists nothing
                          access=self._access(res, "patch", "create", namespace=meta.get("namespace"),
                                              name=meta["name"]))

    def create(self, obj: dict, *, dry_run: bool = False, deadline: Deadline | None = None) -> dict:
        meta = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        return self._call("create", self._ref(obj["apiVersion"], obj["kind"], meta.get("name") or meta.get("generateName"),
                                              meta.get("namespace")),
                          lambda: res.create(body=obj, namespace=meta.get("namespace"),
                                             dry_run="All" if dry_run else None).to_dict(),
                          # a dry run, a review: nothing is persisted, so a transient answer is safe to repeat
                          transient_retry=dry_run or obj["kind"] in REVIEW_KINDS, deadline=deadline,
                          access=self._access(res, "create", namespace=meta.get("namespace")))

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict, *,
                    deadline: Deadline | None = None) -> dict:
        res = self.resource(api_version, kind)
        return self._call("patch", self._ref(api_version, kind, name, namespace),
                          lambda: res.patch(body=patch, name=name, namespace=namespace,
                                            content_type="application/merge-patch+json").to_dict(), deadline=deadline,
                          access=self._access(res, "patch", namespace=namespace, name=name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               deadline: Deadline | None = None) -> bool:
        """Delete; False when it was already gone."""
        res = self.resource(api_version, kind)
        try:
            self._call("delete", self._ref(api_version, kind, name, namespace),
                       lambda: res.delete(name=name, namespace=namespace, propagation_policy="Background"),
                       deadline=deadline, access=self._access(res, "delete", namespace=namespace, name=name))
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    # -- data plane through the API server ------------------------------------------------------------------------
    def service_proxy(self, namespace: str, service: str, port: int | str, method: str, path: str,
                      body: Any = None, timeout: float = 30) -> tuple[int, str]:
        """A request to a Service through the API server's proxy (no port-forward, no ingress needed)."""
        return self._proxy("services", namespace, service, port, method, path, body, timeout)

    def pod_proxy(self, namespace: str, pod: str, port: int | str, method: str, path: str,
                  body: Any = None, timeout: float = 30) -> tuple[int, str]:
        """A request to one Pod's port through the API server's proxy (a replica's own /metrics, say)."""
        return self._proxy("pods", namespace, pod, port, method, path, body, timeout)

    def _proxy(self, resource: str, namespace: str, name: str, port: int | str, method: str, path: str,
               body: Any, timeout: float) -> tuple[int, str]:
        """The proxied answer. The API server's own transient answers (a Status object with 429 or 500, not the
        backend's) are retried by the api layer, as any API request; after the last attempt that answer is
        returned. Only a GET is repeated: a POST may have reached the backend before the API server failed."""
        if method.upper() != "GET":
            return self._proxy_once(resource, namespace, name, port, method, path, body, timeout)

        def once():
            status, text = self._proxy_once(resource, namespace, name, port, method, path, body, timeout)
            if status in PROXY_TRANSIENT and _status_body(text).get("kind") == "Status":
                raise _TransientProxyAnswer(status, text)
            return status, text
        try:
            return retry.call(once, what=f"{method} {resource}/{name}:{port}/{path.lstrip('/')}", layer="api",
                              is_transient=lambda e: f"the API server answered {e.status}"
                              if isinstance(e, _TransientProxyAnswer) else None, retries=self.retries, deadline=None)
        except _TransientProxyAnswer as e:
            return e.status, e.text

    def _proxy_once(self, resource: str, namespace: str, name: str, port: int | str, method: str, path: str,
                    body: Any, timeout: float) -> tuple[int, str]:
        url = f"/api/v1/namespaces/{namespace}/{resource}/{name}:{port}/proxy/{path.lstrip('/')}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        self.requests[("proxy", resource)] += 1
        try:
            resp = self.api_client.rest_client.request(
                method, self.server + url, headers=headers, body=body, _request_timeout=timeout)
            text = (resp.read() or b"").decode("utf-8", "replace")
        except ApiException as e:   # raised for transport failures (status 0)
            raise ApiUnreachable(self.server, str(e.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ApiUnreachable(self.server, str(e)) from None
        if resp.status == 403:   # the authorizer's refusal, or the answer of the service behind the proxy
            verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
                method.upper(), method.lower())
            error = self._refused(KubeError(403, "Forbidden", _status_body(text).get("message", text[:300]),
                                            f"{method} {url}"),
                                  Access((verb,), "", f"{resource}/proxy", namespace, f"{name}:{port}"))
            if isinstance(error, Forbidden):
                raise error
        return resp.status, text
