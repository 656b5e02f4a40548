"""Shared helpers for the suite's own tests."""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).is_file()), None)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def _no_network_prefix() -> list[str]:
    """A command prefix that runs a program in a network namespace of its own (loopback only, and down)."""
    for prefix in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return []


def headless_chromium(url: str, profile_dir: Path, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Open url in headless Chromium with a fresh profile. Whatever its flags, Chromium still calls update and account
    services at start, so it runs in a network namespace of its own where one can be made: nothing leaves the
    machine (file:// pages need no network)."""
    assert CHROMIUM, "chromium is not installed"
    cmd = [*_no_network_prefix(), CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *flags, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# Set (to the test's id) while a test not marked `twin` runs (tests/conftest.py): it may not run the suite on a twin.
TWIN_REFUSED: str | None = None

# At most this many `pytest suites/acceptance` runs at once on the machine, whatever the number of xdist workers:
# a whole run keeps about a core busy (its twin's API server, stand-ins and model servers, and the suite), and three
# at once on two cores starved each other until a fault run's 6 s certificate wait timed out. A worker waiting for a
# slot idles: the slots bound the load, so that each run gets the CPU its budgets assume.
SUITE_SLOTS = int(os.environ.get("KSTACK_SELFTEST_SUITE_SLOTS", "2"))
SLOT_DIR = Path(tempfile.gettempdir()) / "kstack-selftest-suite-slots"


@contextlib.contextmanager
def suite_slot():
    """One of SUITE_SLOTS machine-wide slots (file locks), held while a suite run runs."""
    from filelock import FileLock, Timeout
    SLOT_DIR.mkdir(parents=True, exist_ok=True)
    locks = [FileLock(str(SLOT_DIR / f"slot-{i}.lock")) for i in range(max(SUITE_SLOTS, 1))]
    while True:
        for lock in locks:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield
            finally:
                lock.release()
            return
        time.sleep(0.2)       # a local lock file, not the API: the next run's slot frees within seconds to minutes


def run_pytest(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run pytest as a user would, in a subprocess, from the project root. An acceptance run writes its results
    and sign-off into a temporary folder unless the caller names them, never over the checkout's reports/."""
    on_twin = "--collect-only" not in args and any(a == "twin" and b == "--cluster" for b, a in zip(args, args[1:], strict=False))
    if on_twin and TWIN_REFUSED:
        raise AssertionError(f"{TWIN_REFUSED} runs the suite on a twin but is not marked `twin`")
    scratch = None
    if args and str(args[0]).startswith("suites") and "--collect-only" not in args:
        scratch = Path(tempfile.mkdtemp(prefix="kstack-selftest-"))
        if not any(str(a).startswith("--alluredir") for a in args):
            args = (*args, "--alluredir", str(scratch / "allure-results"))
        if not any(str(a).startswith("--signoff-dir") for a in args):
            args = (*args, "--signoff-dir", str(scratch / "out"))
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    full_env.pop("KSTACK_HANDOFF", None)
    try:
        with suite_slot() if scratch is not None else contextlib.nullcontext():
            return _run_in_own_group([sys.executable, "-m", "pytest", *args], cwd, full_env, timeout)
    finally:
        if scratch is not None:       # the caller named no folder, so reads none of it
            shutil.rmtree(scratch, ignore_errors=True)


def _run_in_own_group(argv: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run, except that on a timeout the run is interrupted as a user would (SIGINT to its process group:
    pytest stops its twin), and only then killed: a timed-out run must not leave a control plane behind."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# A Docker host with room for every shipped profile (GET /info: NCPU, MemTotal).
ROOMY_DOCKER_HOST = {"NCPU": 8, "MemTotal": 16 * 1024 ** 3, "ServerVersion": "27.3.1", "OperatingSystem": "fake"}


@contextlib.contextmanager
def fake_docker_daemon(directory: Path, info: dict | None = None, containers: dict | None = None,
                       name: str = "docker.sock"):
    """A unix socket speaking enough of the Docker Engine API for the preflight and the kind path: GET /_ping,
    GET /info (`info`, default ROOMY_DOCKER_HOST) and GET /containers/NAME/json (`containers`: name -> inspect
    document; the dict may be filled in later). Yields its DOCKER_HOST (unix://...)."""
    path = directory / name
    info = dict(ROOMY_DOCKER_HOST if info is None else info)
    containers = {} if containers is None else containers

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            route = self.path.split("?")[0]
            route = re.sub(r"^/v[0-9.]+/", "/", route)
            if route == "/_ping":
                self._send(200, b"OK", "text/plain")
            elif route == "/info":
                self._send(200, json.dumps(info).encode())
            elif (m := re.fullmatch(r"/containers/([^/]+)/json", route)) and m.group(1) in containers:
                self._send(200, json.dumps(containers[m.group(1)]).encode())
            else:
                self._send(404, json.dumps({"message": f"No such container: {route}"}).encode())

        def _send(self, status: int, body: bytes, content_type: str = "application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self):
            return "unix"

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = Server(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
