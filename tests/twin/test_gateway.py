"""twin.gateway: Host-header routing like istio-ingressgateway, against tiny local http.server backends."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from twin.gateway import Gateway, normalize_host


class _EchoHandler(BaseHTTPRequestHandler):
    """Echoes the request as JSON; ``/status/NNN`` answers with that status."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status = int(self.path.split("/status/", 1)[1].split("?")[0]) if "/status/" in self.path else 200
        payload = json.dumps({
            "backend": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Backend", self.server.name)
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Keep-Alive", "timeout=5")  # hop-by-hop: must not be relayed
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _echo


@pytest.fixture(scope="module")
def backends():
    servers = {}
    for name in ("a", "b"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        srv.daemon_threads = True
        srv.name = name
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers[name] = srv
    yield {name: f"http://127.0.0.1:{srv.server_address[1]}" for name, srv in servers.items()}
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def gateway(backends):
    gw = Gateway()
    gw.start()
    gw.set_route("a.default.example.com", backends["a"])
    gw.set_route("b.default.example.com", backends["b"])
    yield gw
    gw.stop()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_normalize_host():
    assert normalize_host("A.Example.COM:8080") == "a.example.com"
    assert normalize_host("a.example.com.") == "a.example.com"
    assert normalize_host("[::1]:80") == "[::1]"
    assert normalize_host(None) == ""


def test_routes_by_host_header_case_insensitive_port_stripped(gateway):
    ra = requests.get(gateway.url + "/x", headers={"Host": "a.default.example.com"}, timeout=5)
    rb = requests.get(gateway.url + "/x", headers={"Host": "B.Default.Example.com:8080"}, timeout=5)
    assert ra.status_code == rb.status_code == 200
    assert ra.json()["backend"] == "a" and rb.json()["backend"] == "b"
    # the Host header reaches the backend unchanged, as Envoy preserves :authority
    assert rb.json()["headers"]["host"] == "B.Default.Example.com:8080"
    assert ra.headers["server"] == "istio-envoy"
    assert int(ra.headers["x-envoy-upstream-service-time"]) >= 0
    assert ra.headers["x-backend"] == "a" and ra.headers["set-cookie"] == "a=1"
    assert "keep-alive" not in {k.lower() for k in ra.headers}


def test_unknown_host_is_404_with_empty_body(gateway):
    r = requests.get(gateway.url + "/", headers={"Host": "nope.example.com"}, timeout=5)
    assert r.status_code == 404
    assert r.content == b""
    assert r.headers["server"] == "istio-envoy"
    # the gateway's own address is not a route either
    assert requests.get(gateway.url + "/", timeout=5).status_code == 404


def test_dead_backend_is_503_no_healthy_upstream(gateway):
    gateway.set_route("dead.example.com", f"http://127.0.0.1:{_dead_port()}")
    r = requests.post(gateway.url + "/v1/models/m:predict", headers={"Host": "dead.example.com"}, json={}, timeout=5)
    assert r.status_code == 503
    assert r.text == "no healthy upstream"
    assert r.headers["server"] == "istio-envoy"


def test_relays_method_path_query_headers_and_body(gateway):
    r = requests.put(gateway.url + "/v1/models/m:predict?a=1&b=two%20words",
                     headers={"Host": "a.default.example.com", "X-Custom": "yes", "Connection": "keep-alive, X-Drop",
                              "X-Drop": "hop", "Proxy-Authorization": "secret"},
                     data=b'{"instances": [[1, 2]]}', timeout=5)
    echo = r.json()
    assert echo["method"] == "PUT"
    assert echo["path"] == "/v1/models/m:predict?a=1&b=two%20words"
    assert echo["body"] == '{"instances": [[1, 2]]}'
    headers = echo["headers"]
    assert headers["x-custom"] == "yes"
    assert "x-drop" not in headers and "proxy-authorization" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"]
    for method in ("DELETE", "PATCH", "POST"):
        echo = requests.request(method, gateway.url + "/p?q=1", headers={"Host": "a.default.example.com"},
                                data=b"xyz", timeout=5).json()
        assert (echo["method"], echo["path"], echo["body"]) == (method, "/p?q=1", "xyz")


def test_relays_status_and_head(gateway):
    r = requests.post(gateway.url + "/status/418", headers={"Host": "a.default.example.com"}, timeout=5)
    assert r.status_code == 418 and r.json()["backend"] == "a"
    h = requests.head(gateway.url + "/status/200", headers={"Host": "a.default.example.com"}, timeout=5)
    assert h.status_code == 200 and h.content == b"" and int(h.headers["content-length"]) > 0


def test_route_table_add_remove(gateway, backends):
    assert gateway.routes() == {"a.default.example.com": backends["a"], "b.default.example.com": backends["b"]}
    gateway.routes()["x"] = "y"  # a copy
    assert "x" not in gateway.routes()
    gateway.remove_route("A.default.example.com")
    gateway.remove_route("never-added.example.com")
    assert requests.get(gateway.url + "/", headers={"Host": "a.default.example.com"}, timeout=5).status_code == 404
    gateway.set_route("a.default.example.com", backends["b"])  # re-pointing a host
    assert requests.get(gateway.url + "/", headers={"Host": "a.default.example.com"},
                        timeout=5).json()["backend"] == "b"
    with pytest.raises(ValueError):
        gateway.set_route("c.example.com", "https://127.0.0.1:1")


def test_concurrent_requests_while_routes_change(gateway, backends):
    def call(i):
        host = "a.default.example.com" if i % 2 else "b.default.example.com"
        if i % 5 == 0:
            gateway.set_route(f"extra-{i}.example.com", backends["a"])
        with requests.Session() as s:
            return [s.post(gateway.url + f"/{i}", headers={"Host": host}, data=str(i), timeout=5).json()
                    for _ in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(24)))
    for i, echoes in enumerate(results):
        for echo in echoes:
            assert echo["backend"] == ("a" if i % 2 else "b") and echo["body"] == str(i)
    assert len(gateway.routes()) == 2 + 5


def test_stop_frees_port_promptly_even_with_keepalive_clients(backends):
    gw = Gateway()
    gw.start()
    gw.set_route("a.example.com", backends["a"])
    port = gw.port
    session = requests.Session()  # keeps its connection open
    assert session.get(gw.url + "/", headers={"Host": "a.example.com"}, timeout=5).status_code == 200
    gw.stop()
    gw.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", headers={"Host": "a.example.com"}, timeout=2)
    with socket.socket() as s:  # another server may bind the port right away
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    with Gateway(port=port) as again:  # and so may a new gateway
        assert again.url == f"http://127.0.0.1:{port}"
        assert requests.get(again.url + "/", headers={"Host": "a.example.com"}, timeout=5).status_code == 404
    session.close()
