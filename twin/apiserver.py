"""A focused fake Kubernetes API server for the twin: plain HTTP, JSON, usable unchanged by the official Python
client, its DynamicClient and Watch, and by kubectl through a kubeconfig.

This module is the wire layer only: routing, discovery documents, admission callbacks, request log, fault
injection, watch streaming, service proxy and pod logs. What a write *does* is decided by twin/api_store.py (shared
with the twin's controllers); patch/apply mechanics live in twin/api_patch.py.
"""

from __future__ import annotations

import http.server
import json
import logging
import random
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from twin import api_patch
from twin.api_store import ApiError, ResourceInfo, Store, WriteContext, now_iso, split_api_version

__all__ = ["ApiServer", "Store", "ApiError", "AdmissionRequest", "AdmissionDenied", "RequestLog", "RequestEntry",
           "ApiFaults", "ResourceInfo"]

log = logging.getLogger(__name__)

DEFAULT_VERSION = {"major": "1", "minor": "27", "gitVersion": "v1.27.3",
                   "gitCommit": "25b4e43193bcda6c7328a6d147b1fb73a33f1598", "gitTreeState": "clean",
                   "buildDate": "2023-06-14T09:47:40Z", "goVersion": "go1.20.5", "compiler": "gc",
                   "platform": "linux/amd64"}
NODE_NAME = "twin-control-plane"
BOOKMARK_INTERVAL = 1.0
MAX_WATCH_SECONDS = 1800
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"], "log": ["get"],
              "proxy": ["create", "delete", "get", "patch", "update"], "finalize": ["update"]}
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_WRITE_VERBS = {"create", "update", "patch", "apply", "delete", "deletecollection"}
_PATCH_TYPES = {"application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml"}


# ---------------------------------------------------------------------------------------------------------------
# public helper types

@dataclass
class AdmissionRequest:
    operation: str              # "CREATE" | "UPDATE"
    group: str
    version: str
    resource: str               # plural
    kind: str
    namespace: str | None
    name: str
    object: dict
    old_object: dict | None
    dry_run: bool
    subresource: str = ""       # "" or "status" (status writes are admitted too, as in the real apiserver)


class AdmissionDenied(Exception):
    """Raised by an admission fn: the request fails with this code and message, verbatim."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass
class RequestEntry:
    method: str
    path: str
    verb: str                   # get list watch create update patch apply delete deletecollection
    resource: str               # plural ("deployments/status"), "discovery", "healthz", "" when unroutable
    namespace: str | None = None
    name: str | None = None
    status: int = 0
    dry_run: bool = False
    field_manager: str | None = None
    time: float = field(default_factory=time.time)


class RequestLog:
    """Every HTTP request the server answered (store calls by controllers are not requests)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: list[RequestEntry] = []

    def add(self, entry: RequestEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[RequestEntry]:
        with self._lock:
            return list(self._entries)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for e in self.entries():
            out[(e.verb, e.resource)] = out.get((e.verb, e.resource), 0) + 1
        return out

    def writes(self, include_dry_run: bool = False) -> int:
        return sum(1 for e in self.entries() if e.verb in _WRITE_VERBS and 200 <= e.status < 300
                   and (include_dry_run or not e.dry_run))

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class ApiFaults:
    flaky_rate: float = 0.0     # share of requests answered 500 InternalError or 429 TooManyRequests
    watch_drop: bool = False    # watches end after their first event; resumed watches get 410 Expired


# ---------------------------------------------------------------------------------------------------------------
# HTTP plumbing

class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        # Tracked so stop() can cut idle keep-alive connections and open watches instead of leaking threads.
        thread = threading.Thread(target=self._serve_one, args=(request, client_address), daemon=True,
                                  name="twin-apiserver-conn")
        with self.conn_lock:
            self.connections[request] = thread
        thread.start()

    def _serve_one(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.conn_lock:
                self.connections.pop(request, None)


@dataclass
class _Route:
    kind: str                        # version health discovery openapi resource root notfound
    verb: str = "get"
    group: str = ""
    version: str = ""
    plural: str = ""
    info: ResourceInfo | None = None
    namespace: str | None = None
    name: str | None = None
    sub: str | None = None
    proxy_path: str = ""

    @property
    def resource(self) -> str:
        if self.kind != "resource":
            return self.kind if self.kind in ("discovery", "healthz") else ("discovery" if self.kind in (
                "version", "openapi", "root") else "")
        return f"{self.plural}/{self.sub}" if self.sub else self.plural


def _status_ok(info: ResourceInfo, obj: dict) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": obj["metadata"]["name"], "group": info.group, "kind": info.plural,
                        "uid": obj["metadata"].get("uid")}}


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        seconds = int(time.time() - time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")) + time.timezone)
    except ValueError:
        return "<unknown>"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: "ApiServer"  # set on the per-server subclass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # watch events go out at once

    def log_message(self, fmt, *args):  # the request log replaces stderr chatter
        log.debug("twin-apiserver: " + fmt, *args)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_PATCH(self):
        self._serve("PATCH")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_OPTIONS(self):
        self._serve("OPTIONS")

    # -- low level ------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self._entry.status = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        # Headers and body in one write: two small writes hit Nagle + delayed ACK (40 ms per request).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def _json(self, code: int, obj: Any, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _error(self, err: ApiError, headers: dict | None = None) -> None:
        self._json(err.code, err.status(), headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # -- entry point ---------------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        api = self.api
        parsed = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
        self._entry = RequestEntry(method, self.path, method.lower(), "")
        try:
            body = self._read_body()
            route = self._route(method, parsed.path, query)
            e = self._entry
            e.verb, e.resource, e.namespace, e.name = route.verb, route.resource, route.namespace, route.name
            e.dry_run = query.get("dryRun") == "All"
            e.field_manager = query.get("fieldManager")
            if route.kind != "health" and api.faults.flaky_rate > 0 and random.random() < api.faults.flaky_rate:
                self._fault()
                return
            self._dispatch(method, route, query, body, parsed)
        except ApiError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a server bug must still answer a Status, like the real apiserver does
            log.exception("twin-apiserver: %s %s failed", method, self.path)
            try:
                self._error(ApiError(500, "InternalError", f"Internal error occurred: {exc}"))
            except OSError:
                self.close_connection = True
        finally:
            api.request_log.add(self._entry)

    def _fault(self) -> None:
        if random.random() < 0.5:
            self._error(ApiError(429, "TooManyRequests", "the server has received too many requests and has asked "
                                                         "us to try again later", {"retryAfterSeconds": 1}),
                        headers={"Retry-After": "1"})
        else:
            self._error(ApiError(500, "InternalError", "Internal error occurred: injected fault (twin api-flaky)"))

    def _route(self, method: str, path: str, query: dict) -> _Route:
        segments = [unquote(s) for s in path.split("/") if s]
        if not segments:
            return _Route("root")
        head = segments[0]
        if head == "version" and len(segments) == 1:
            return _Route("version")
        if head in ("healthz", "readyz", "livez"):
            return _Route("health")
        if head == "openapi":
            return _Route("openapi")
        if head == "api" and len(segments) <= 2:
            return _Route("discovery", group="", version=segments[1] if len(segments) == 2 else "", plural="api")
        if head == "apis" and len(segments) <= 3:
            return _Route("discovery", group=segments[1] if len(segments) > 1 else "",
                          version=segments[2] if len(segments) > 2 else "")
        if head == "api" and segments[1] == "v1":
            group, version, rest = "", "v1", segments[2:]
        elif head == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return _Route("notfound")
        store = self.api.store
        route = _Route("resource", group=group, version=version)
        if rest[0] == "namespaces" and len(rest) >= 3:
            nested = store.resource_by_plural(group, version, rest[2])
            if nested is not None and nested.namespaced:
                route.namespace, rest = rest[1], rest[2:]
        route.plural = rest[0]
        route.name = rest[1] if len(rest) > 1 else None
        route.sub = rest[2] if len(rest) > 2 else None
        route.info = store.resource_by_plural(group, version, route.plural)
        if route.sub == "proxy":
            m = re.match(r"^/api/v1/namespaces/[^/]+/services/[^/]+/proxy(.*)$", path)
            route.proxy_path = unquote(m.group(1) if m else "") or "/"  # clients encode the path parameter
        elif len(rest) > 3:
            route.sub = "/".join(rest[2:])  # unknown deeper path: 404 below
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if route.sub in ("log", "proxy"):
            route.verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                          "DELETE": "delete"}.get(method, method.lower())
        elif method == "GET":
            watch = query.get("watch", "").lower() in ("1", "true")
            route.verb = "get" if route.name else ("watch" if watch else "list")
        elif method == "POST":
            route.verb = "create"
        elif method == "PUT":
            route.verb = "update"
        elif method == "PATCH":
            route.verb = "apply" if ctype == "application/apply-patch+yaml" else "patch"
        elif method == "DELETE":
            route.verb = "delete" if route.name else "deletecollection"
        else:
            route.verb = method.lower()
        return route

    def _dispatch(self, method: str, route: _Route, query: dict, body: bytes, parsed) -> None:
        api = self.api
        if route.kind == "health":
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif route.kind == "version":
            self._json(200, dict(api.server_version))
        elif route.kind == "root":
            self._json(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]})
        elif route.kind == "discovery":
            self._json(200, api.discovery(route.group, route.version, legacy=route.plural == "api"))
        elif route.kind in ("openapi", "notfound"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            self._resource(method, route, query, body)

    # -- resources ------------------------------------------------------------------------------------------

    def _resource(self, method: str, route: _Route, query: dict, body: bytes) -> None:
        info = route.info
        if info is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (route.namespace is not None and not info.namespaced) or (route.sub and route.sub not in info.subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced and route.namespace is None and (route.name or method not in ("GET",)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry_run = query.get("dryRun")
        if dry_run not in (None, "", "All"):
            raise ApiError(400, "BadRequest", f'dryRun: Unsupported value: "{dry_run}": supported values: "All"')
        if route.sub == "proxy":
            return self._proxy(method, route, body)
        if route.sub == "log":
            return self._pod_log(route, query)
        verb = route.verb
        if verb == "watch":
            return self._watch(route, query)
        if verb == "list":
            items, rv = self.api.store.query(info, route.namespace, query.get("labelSelector"),
                                             query.get("fieldSelector"))
            if self._wants_table():
                return self._json(200, self._table(info, items, rv, query))
            return self._json(200, {"kind": info.list_kind, "apiVersion": info.api_version,
                                    "metadata": {"resourceVersion": rv}, "items": items})
        if verb == "get":
            obj = self.api.store.read(info, route.namespace, route.name)
            if obj is None:
                raise ApiError(404, "NotFound", f'{self._qualified(info)} "{route.name}" not found',
                               {"name": route.name, "group": info.group, "kind": info.plural})
            if self._wants_table() and not route.sub:
                return self._json(200, self._table(info, [obj], obj["metadata"]["resourceVersion"], query))
            return self._json(200, obj)
        if verb in ("delete", "deletecollection"):
            return self._delete(route, query, body)
        if verb == "create" and route.name is None and not route.sub:
            return self._create(route, query, body)
        if verb == "update" and route.name:
            return self._update(route, query, body)
        if verb in ("patch", "apply") and route.name:
            return self._patch(route, query, body)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _qualified(info: ResourceInfo) -> str:
        return f"{info.plural}.{info.group}" if info.group else info.plural

    def _wants_table(self) -> bool:
        return "as=Table" in self.headers.get("Accept", "")

    def _table(self, info: ResourceInfo, items: list, rv: str, query: dict) -> dict:
        columns = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name must be unique within a namespace."}]
        if info.kind in ("Namespace", "Pod"):
            columns.append({"name": "Status", "type": "string", "format": "", "priority": 0,
                            "description": "The status of the object."})
        columns.append({"name": "Age", "type": "string", "format": "", "priority": 0,
                        "description": "CreationTimestamp is a timestamp representing the server time when this "
                                       "object was created."})
        include = query.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            cells = [obj["metadata"]["name"]]
            if len(columns) == 3:
                cells.append((obj.get("status") or {}).get("phase", ""))
            cells.append(_age(obj["metadata"].get("creationTimestamp")))
            row = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": obj["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
                "columnDefinitions": columns, "rows": rows}

    def _parse_body(self, body: bytes, yaml_ok: bool = False):
        if not body:
            raise ApiError(400, "BadRequest", "the request body is empty")
        try:
            return json.loads(body)
        except ValueError:
            if yaml_ok:
                try:
                    return yaml.safe_load(body)
                except yaml.YAMLError as exc:
                    raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from None
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _check_object(self, route: _Route, obj) -> dict:
        """Defaults apiVersion/kind/namespace from the URL like the real decoder; rejects mismatches."""
        info = route.info
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        obj.setdefault("apiVersion", info.api_version)
        obj.setdefault("kind", info.kind)
        group, _ = split_api_version(obj["apiVersion"])
        if obj["kind"] != info.kind or group != info.group:
            raise ApiError(400, "BadRequest", f'the API version in the data ({obj["apiVersion"]}) does not match the '
                                              f'expected API version ({info.api_version})' if obj["kind"] == info.kind
                           else f'the kind in the data ({obj["kind"]}) does not match the expected kind ({info.kind})')
        obj["apiVersion"] = info.api_version
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if info.namespaced:
            if meta.get("namespace") and meta["namespace"] != route.namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                  "namespace sent on the request")
            meta["namespace"] = route.namespace
        if route.name and meta.get("name") and meta["name"] != route.name:
            raise ApiError(400, "BadRequest", f'the name of the object ({meta["name"]}) does not match the name on the '
                                              f'URL ({route.name})')
        if route.name:
            meta["name"] = route.name
        return obj

    def _manager(self, query: dict) -> str:
        if query.get("fieldManager"):
            return query["fieldManager"]
        agent = self.headers.get("User-Agent", "") or "unknown"
        return agent.split("/")[0] or "unknown"

    def _admit(self, route: _Route, dry_run: bool, subresource: str = "") -> Callable:
        info = route.info

        def admit(old: dict | None, new: dict) -> dict | None:
            fns = list(self.api._admission)
            if not fns:
                return None
            request = AdmissionRequest("CREATE" if old is None else "UPDATE", info.group, info.version, info.plural,
                                       info.kind, new["metadata"].get("namespace"), new["metadata"].get("name", ""),
                                       new, old, dry_run, subresource)
            changed = False
            for fn in fns:
                try:
                    result = fn(request)
                except AdmissionDenied as denied:
                    raise ApiError(denied.code, _REASONS.get(denied.code, "Unknown"), denied.message) from None
                except ApiError:
                    raise
                except Exception as exc:
                    log.exception("twin-apiserver: admission fn %r failed", fn)
                    raise ApiError(500, "InternalError", f"Internal error occurred: admission failed: {exc}") from None
                if isinstance(result, dict):
                    request.object, changed = result, True
            return request.object if changed else None
        return admit

    def _create(self, route: _Route, query: dict, body: bytes) -> None:
        info, store = route.info, self.api.store
        obj = self._check_object(route, self._parse_body(body))
        dry = query.get("dryRun") == "All"
        name = store.generate_name(info, obj)
        self._entry.name = name
        ctx = WriteContext(self._manager(query), keep_status_on_create=False)
        result, _ = store.write(info, route.namespace, name, lambda live: obj, ctx, mode="create", dry_run=dry,
                                admit=self._admit(route, dry))
        self._json(201, result)

    def _update(self, route: _Route, query: dict, body: bytes) -> None:
        info, store = route.info, self.api.store
        obj = self._check_object(route, self._parse_body(body))
        dry = query.get("dryRun") == "All"
        sub = route.sub or ""
        build = store.update_builder(info, obj)
        if sub == "finalize":
            inner = build

            def build(live):  # namespaces/x/finalize only sets spec.finalizers
                inner(live)
                live.setdefault("spec", {})["finalizers"] = list((obj.get("spec") or {}).get("finalizers") or [])
                return live
        ctx = WriteContext(self._manager(query), subresource=sub, keep_status_on_create=False)
        result, _ = store.write(info, route.namespace, route.name, build, ctx, mode="update", dry_run=dry,
                                admit=self._admit(route, dry, sub))
        self._json(200, result)

    def _patch(self, route: _Route, query: dict, body: bytes) -> None:
        info, store = route.info, self.api.store
        dry = query.get("dryRun") == "All"
        sub = route.sub or ""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in _PATCH_TYPES or (ctype == "application/strategic-merge-patch+json" and info.crd):
            accepted = sorted(_PATCH_TYPES - ({"application/strategic-merge-patch+json"} if info.crd else set()))
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: {', '.join(accepted)}")
        if ctype == "application/apply-patch+yaml":
            manager = query.get("fieldManager")
            if not manager:
                raise ApiError(400, "BadRequest", "PATCH " + self.path.split("?")[0] +
                               ": fieldManager is required for apply requests")
            applied = self._check_object(route, self._parse_body(body, yaml_ok=True))
            build = store.apply_builder(info, applied, manager, query.get("force", "").lower() == "true", sub)
            ctx = WriteContext(manager, "Apply", sub, keep_status_on_create=False)
            result, created = store.write(info, route.namespace, route.name, build, ctx, mode="upsert", dry_run=dry,
                                          admit=self._admit(route, dry, sub))
            return self._json(201 if created else 200, result)
        patch = self._parse_body(body)

        def build(live):
            try:
                if ctype == "application/json-patch+json":
                    result = api_patch.json_patch(live, patch)
                elif ctype == "application/merge-patch+json":
                    result = api_patch.merge_patch(live, patch)
                else:
                    result = api_patch.strategic_merge_patch(live, patch)
            except api_patch.PatchError as exc:
                raise ApiError(exc.code, _REASONS[exc.code], exc.message) from None
            if not isinstance(result, dict):
                raise ApiError(422, "Invalid", "the patch result is not an object")
            wanted = (result.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != live["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self._qualified(info)} '
                                                f'"{route.name}": the object has been modified; please apply your '
                                                f'changes to the latest version and try again',
                               {"name": route.name, "group": info.group, "kind": info.plural})
            return result
        ctx = WriteContext(self._manager(query), subresource=sub, keep_status_on_create=False)
        result, _ = store.write(info, route.namespace, route.name, build, ctx, mode="update", dry_run=dry,
                                admit=self._admit(route, dry, sub))
        self._json(200, result)

    def _delete(self, route: _Route, query: dict, body: bytes) -> None:
        info, store = route.info, self.api.store
        options = {}
        if body:
            try:
                options = json.loads(body) or {}
            except ValueError:
                raise ApiError(400, "BadRequest", "the DeleteOptions body is not valid JSON") from None
        dry = query.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        self._entry.dry_run = dry
        policy = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        if route.verb == "deletecollection":
            items, _ = store.query(info, route.namespace, query.get("labelSelector"), query.get("fieldSelector"))
            for item in items:
                try:
                    store.remove(info, item["metadata"].get("namespace"), item["metadata"]["name"], dry_run=dry,
                                 orphan=policy == "Orphan")
                except ApiError as err:
                    if err.code != 404:
                        raise
            return self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        obj, deleted = store.remove(info, route.namespace, route.name, dry_run=dry, orphan=policy == "Orphan",
                                    preconditions=options.get("preconditions"))
        self._json(200, _status_ok(info, obj) if deleted else obj)

    # -- watch ------------------------------------------------------------------------------------------------

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _watch(self, route: _Route, query: dict) -> None:
        api, info = self.api, route.info
        rv = query.get("resourceVersion")
        drop = api.faults.watch_drop
        try:
            timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds must be a number") from None
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        watcher, expired = None, None
        try:
            if drop and rv not in (None, "", "0"):
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({api.store.resource_version})")
            watcher = api.store.watch(info, route.namespace, rv, query.get("labelSelector"),
                                      query.get("fieldSelector"))
        except ApiError as err:
            if err.code != 410:
                raise
            expired = err
        self._entry.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(kind: str, obj: dict) -> None:
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = {**obj, "apiVersion": info.api_version, "kind": info.kind}
            self._chunk(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

        try:
            if expired is not None:
                send("ERROR", expired.status())
                return
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
            for kind, obj in watcher.initial:
                send(kind, obj)
                if drop:
                    return
            while not api._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    event = watcher.queue.get(timeout=min(0.1, remaining))
                except Exception:  # queue.Empty
                    event = None
                if event is not None:
                    translated = watcher.translate(event)
                    if translated:
                        send(*translated)
                        if drop or api.faults.watch_drop:
                            return
                    continue
                if self._client_gone():
                    self.close_connection = True
                    return
                if bookmarks and time.monotonic() >= next_bookmark:
                    current = api.store.rv_if_drained(watcher)
                    if current:
                        send("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version,
                                          "metadata": {"resourceVersion": current}})
                        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        except OSError:
            self.close_connection = True
        finally:
            if watcher is not None:
                api.store.unwatch(watcher)
            if not self.close_connection:
                try:
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True
            if api._stopping.is_set():
                self.close_connection = True

    # -- service proxy and pod logs ------------------------------------------------------------------------

    def _proxy(self, method: str, route: _Route, body: bytes) -> None:
        fn = self.api._service_proxy
        parts = route.name.split(":")
        service, port = (parts[1], parts[2]) if len(parts) == 3 else (parts[0], parts[1] if len(parts) > 1 else None)
        query = urlsplit(self.path).query
        target = route.proxy_path + (f"?{query}" if query else "")
        answer = None
        if fn is not None:
            answer = fn(route.namespace, service, port or None, method, target, dict(self.headers.items()), body)
        if answer is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{service}"')
        status, headers, payload = answer
        skip = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-type"}
        headers = headers or {}
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/octet-stream")
        payload = payload.encode() if isinstance(payload, str) else (payload or b"")
        self._send(int(status), payload, ctype, {k: v for k, v in headers.items() if k.lower() not in skip})

    def _pod_log(self, route: _Route, query: dict) -> None:
        pod = self.api.store.read(route.info, route.namespace, route.name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{route.name}" not found',
                           {"name": route.name, "group": "", "kind": "pods"})
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or ""
        if not container:
            if len(names) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {route.name}, choose "
                                                  f"one of: [{' '.join(names)}]")
            container = names[0]
        previous = query.get("previous", "").lower() in ("1", "true")
        fn = self.api._pod_log_source
        text = fn(route.namespace, route.name, container, previous) if fn else ("" if not previous else None)
        if text is None:
            message = (f'previous terminated container "{container}" in pod "{route.name}" not found' if previous
                       else f'container "{container}" in pod "{route.name}" is waiting to start: ContainerCreating')
            raise ApiError(400, "BadRequest", message)
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            count = int(query["tailLines"])
            text = "".join(lines[-count:]) if count > 0 else ""
        data = text.encode()
        if query.get("limitBytes"):
            data = data[:int(query["limitBytes"])]
        self._send(200, data, "text/plain")


# ---------------------------------------------------------------------------------------------------------------
# the server

class ApiServer:
    """The twin's API server. See the module docstring; `store` is the in-process API for controllers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port
        self.url = ""
        self.store = Store()
        self.request_log = RequestLog()
        self.faults = ApiFaults()
        self._server_version = dict(DEFAULT_VERSION)
        self._admission: list[Callable] = []
        self._service_proxy: Callable | None = None
        self._pod_log_source: Callable | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._seed()

    # -- configuration -------------------------------------------------------------------------------------

    @property
    def server_version(self) -> dict:
        return self._server_version

    @server_version.setter
    def server_version(self, value: dict) -> None:
        self._server_version = dict(value)
        node = self.store.get("v1", "Node", NODE_NAME)
        if node is not None and value.get("gitVersion"):
            status = node.get("status") or {}
            status.setdefault("nodeInfo", {})["kubeletVersion"] = value["gitVersion"]
            status["nodeInfo"]["kubeProxyVersion"] = value["gitVersion"]
            self.store.update_status("v1", "Node", NODE_NAME, None, status)

    def add_admission(self, fn: Callable[[AdmissionRequest], dict | None]) -> None:
        self._admission.append(fn)

    def set_service_proxy(self, fn: Callable | None) -> None:
        self._service_proxy = fn

    def set_pod_log_source(self, fn: Callable | None) -> None:
        self._pod_log_source = fn

    def _seed(self) -> None:
        for name in ("default", "kube-system", "kube-public"):
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        now = now_iso()
        version = self._server_version["gitVersion"]
        self.store.create({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {
                "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
            "status": {
                "conditions": [
                    {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
                     "lastTransitionTime": now}
                    for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                                    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID"))
                ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                      "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": NODE_NAME}],
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version, "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.1",
                             "osImage": "twin (simulated)", "kernelVersion": "6.1.0",
                             "machineID": "", "systemUUID": "", "bootID": ""}}})

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._stopping.clear()
        handler = type("TwinApiHandler", (_Handler,), {"api": self})
        self._httpd = _HTTPServer((self.host, self._port), handler)
        self.url = f"http://{self.host}:{self._httpd.server_address[1]}"
        self.store._ensure_threads()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="twin-apiserver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with httpd.conn_lock:
            connections = dict(httpd.connections)
        for sock in connections:  # ends idle keep-alive reads; watches see _stopping within 0.1 s
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 3
        for thread in connections.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.store.close()
        self._httpd = self._thread = None

    def __enter__(self) -> "ApiServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_kubeconfig(self, path, context: str = "twin", namespace: str = "default") -> None:
        if not self.url:
            raise RuntimeError("start() the ApiServer before writing a kubeconfig")
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "twin-token"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))

    # -- discovery -----------------------------------------------------------------------------------------

    def discovery(self, group: str, version: str, legacy: bool) -> dict:
        groups = self.store.group_versions()
        if legacy:  # /api, /api/v1
            if not version:
                return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//", 1)[-1]}]}
            if version != "v1":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._resource_list("", "v1")

        def group_doc(name):
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}
        if not group:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in groups if g]}
        if group not in groups or (version and version not in groups[group]):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not version:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(group)}
        return self._resource_list(group, version)

    def _resource_list(self, group: str, version: str) -> dict:
        resources = []
        for info in sorted(self.store.resources_in(group, version), key=lambda i: i.plural):
            entry = {"name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                     "kind": info.kind, "verbs": list(_VERBS)}
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            resources.append(entry)
            for sub in sorted(info.subresources):
                sub_entry = {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                             "kind": info.kind, "verbs": list(_SUB_VERBS.get(sub, ["get"]))}
                if sub == "scale":
                    sub_entry.update(kind="Scale", group="autoscaling", version="v1")
                elif sub == "proxy":
                    sub_entry["kind"] = "ServiceProxyOptions"
                resources.append(sub_entry)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group
                else version, "resources": resources}
