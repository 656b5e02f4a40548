"""Shared helpers for the suite's own tests."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
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


def run_pytest(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run pytest as a user would, in a subprocess, from the project root."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    full_env.pop("KSTACK_HANDOFF", None)
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def fake_docker_daemon(directory: Path):
    """A unix socket answering Docker's /_ping with 200, so the preflight sees a daemon: yields its DOCKER_HOST."""
    path = directory / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
