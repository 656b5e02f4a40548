"""The one module through which the suite talks to Kubernetes.

Client construction, server-side apply, reads, watches, logs and the service proxy all go through `Kube`, so that
error translation, retries of transient API answers, and request counting live in one place.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from stack import retry

log = logging.getLogger("kstack.kube")

FIELD_MANAGER = "kstack"


class KubeError(Exception):
    """An API answer that is not success, as a sentence: status code, reason and the server's message."""

    def __init__(self, status: int, reason: str, message: str, what: str = ""):
        self.status, self.reason, self.message, self.what = status, reason, message, what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{message} (HTTP {status} {reason})" if status else f"{prefix}{message}")


class ApiUnreachable(KubeError):
    def __init__(self, url: str, detail: str):
        super().__init__(0, "Unreachable", f"API server unreachable at {url}: {detail}")


class NoSuchKind(KubeError):
    """The API server does not serve this apiVersion/kind (CRD absent or not yet established)."""


def _translate(e: Exception, what: str, server: str) -> KubeError:
    if isinstance(e, KubeError):
        return e
    if isinstance(e, ApiException):
        message, reason = e.reason or "", e.reason or ""
        try:
            body = json.loads(e.body) if e.body else {}
            message = body.get("message", message)
            reason = body.get("reason", reason)
        except (ValueError, TypeError):
            if e.body:
                message = str(e.body)[:500]
        return KubeError(e.status or 0, reason, message, what)
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, OSError)):
        return ApiUnreachable(server, str(e).split(": ", 1)[-1][:300])
    raise e


class Kube:
    """A cluster seen through one kubeconfig context."""

    def __init__(self, kubeconfig: str | Path | None = None, context: str | None = None,
                 field_manager: str = FIELD_MANAGER):
        self.kubeconfig, self.context, self.field_manager = kubeconfig, context, field_manager
        try:
            self.api_client = k8s_config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context)
        except k8s_config.ConfigException as e:
            raise KubeError(0, "BadKubeconfig", f"cannot use kubeconfig {kubeconfig or '~/.kube/config'}"
                            f"{f' context {context}' if context else ''}: {e}") from None
        self.server = self.api_client.configuration.host
        # Several watches run at once during a wait (a workload, its pods...): room for them in the pool.
        self.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()
        self.requests: Counter = Counter()   # (verb, kind) -> count, for benchmarks and tests

    # -- plumbing -------------------------------------------------------------------------------------------------
    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = self._call("discovery", "", lambda: DynamicClient(self.api_client))
            return self._dynamic

    def _call(self, verb: str, what: str, fn, *, transient_retry: bool = True):
        self.requests[(verb, what.split(" ")[0])] += 1

        def attempt():
            try:
                return fn()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                raise _translate(e, f"{verb} {what}".strip(), self.server) from None

        if not transient_retry:
            return attempt()
        return retry.call(attempt, what=f"{verb} {what}", is_transient=retry.is_api_transient)

    def resource(self, api_version: str, kind: str):
        """The dynamic resource for apiVersion/kind; rediscovers once, since a CRD may have just been established."""
        def lookup():
            return self._call("discovery", kind, lambda: self.dynamic.resources.get(api_version=api_version, kind=kind))
        try:
            return lookup()
        except ResourceNotFoundError:
            self.dynamic.resources.invalidate_cache()
            try:
                return lookup()
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

    # -- reads ----------------------------------------------------------------------------------------------------
    def server_version(self) -> dict:
        return self._call("get", "version", lambda: k8s_client.VersionApi(self.api_client).get_code().to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        res = self.resource(api_version, kind)
        try:
            return self._call("get", self._ref(api_version, kind, name, namespace),
                              lambda: res.get(name=name, namespace=namespace).to_dict())
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> tuple[list[dict], str]:
        """Items and the list's resourceVersion (to watch from)."""
        res = self.resource(api_version, kind)
        out = self._call("list", f"{kind.lower()} {namespace or ''}", lambda: res.get(
            namespace=namespace, label_selector=label_selector, field_selector=field_selector).to_dict())
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
            raise _translate(e, f"watch {kind.lower()}", self.server) from None

    def pod_log(self, namespace: str, pod: str, container: str, previous: bool = False, tail: int = 200) -> str:
        core = k8s_client.CoreV1Api(self.api_client)
        try:
            return self._call("get", f"pods/log {namespace}/{pod}", lambda: core.read_namespaced_pod_log(
                pod, namespace, container=container, previous=previous, tail_lines=tail), transient_retry=False)
        except KubeError as e:
            return f"(no {'previous ' if previous else ''}log: {e.message})"

    # -- writes ---------------------------------------------------------------------------------------------------
    def apply(self, obj: dict, *, dry_run: bool = False, force: bool = True) -> dict:
        """Server-side apply under the suite's field manager (large CRDs need it: no last-applied annotation)."""
        meta = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        return self._call("apply", self._ref(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")),
                          lambda: res.server_side_apply(
                              body=obj, name=meta["name"], namespace=meta.get("namespace"),
                              field_manager=self.field_manager, force_conflicts=force,
                              dry_run="All" if dry_run else None).to_dict(),
                          transient_retry=not dry_run)

    def create(self, obj: dict, *, dry_run: bool = False) -> dict:
        meta = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        return self._call("create", self._ref(obj["apiVersion"], obj["kind"], meta.get("name") or meta.get("generateName"),
                                              meta.get("namespace")),
                          lambda: res.create(body=obj, namespace=meta.get("namespace"),
                                             dry_run="All" if dry_run else None).to_dict(),
                          transient_retry=dry_run)   # a dry run persists nothing, so it is safe to repeat

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict) -> dict:
        res = self.resource(api_version, kind)
        return self._call("patch", self._ref(api_version, kind, name, namespace),
                          lambda: res.patch(body=patch, name=name, namespace=namespace,
                                            content_type="application/merge-patch+json").to_dict())

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        res = self.resource(api_version, kind)
        try:
            self._call("delete", self._ref(api_version, kind, name, namespace),
                       lambda: res.delete(name=name, namespace=namespace, propagation_policy="Background"))
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    # -- data plane through the API server ------------------------------------------------------------------------
    def service_proxy(self, namespace: str, service: str, port: int | str, method: str, path: str,
                      body: Any = None, timeout: float = 30) -> tuple[int, str]:
        """A request to a Service through the API server's proxy (no port-forward, no ingress needed)."""
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        self.requests[("proxy", "services")] += 1
        try:
            resp = self.api_client.rest_client.request(
                method, self.server + url, headers=headers, body=body, _request_timeout=timeout)
            return resp.status, (resp.read() or b"").decode("utf-8", "replace")
        except ApiException as e:   # raised for transport failures (status 0)
            raise ApiUnreachable(self.server, str(e.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ApiUnreachable(self.server, str(e)) from None
