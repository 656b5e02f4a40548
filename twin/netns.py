"""The twin's own network namespace: where its cluster's addresses live.

A real cluster's API server reaches a webhook through the webhook's Service, at a pod IP; EndpointSlices may not
hold loopback addresses, and this machine lets traffic go only to 127.0.0.0/8 and to addresses inside network
namespaces a program creates itself. So each twin makes one:

    host  kst<N>h 10.253.N.1/30  <── veth ──>  kst<N>n 10.253.N.2/30  namespace (the node's address)
          route 10.244.N.0/24 via 10.253.N.2                          local route 10.244.N.0/24 (the pod CIDR)

Every address of the pod CIDR is local inside the namespace (a `local` route), so a process started for a pod
binds its pod IP and the host reaches it through the veth. The namespace is held by a `sleep` process and lives
exactly as long as the processes in it: each is started with PR_SET_PDEATHSIG, so nothing outlives the twin, also
after a crash or a SIGKILL, and nothing persists on the host (no named netns, no leftover routes).

Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root, as on the machines here and in CI); without them `create()` raises
NetnsError with the remedy.
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("twin.netns")

MAX_TWINS = 200                      # concurrent twins on one machine (one /24 of pods each)
LINK_NET = "10.253.{n}.0/30"         # the veth pair
POD_NET = "10.244.{n}.0/24"          # pod IPs (KWOK assigns them; processes bind them)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    """The namespace cannot be created: what failed, and what the user can do."""


@dataclass(frozen=True)
class Addresses:
    index: int
    host_ip: str          # the host end of the veth
    node_ip: str          # the namespace end: the node's InternalIP, where the API server and NodePorts listen
    pod_cidr: str

    @classmethod
    def for_index(cls, n: int) -> "Addresses":
        hosts = list(ipaddress.ip_network(LINK_NET.format(n=n)).hosts())
        return cls(n, str(hosts[0]), str(hosts[1]), POD_NET.format(n=n))


def _lock_dir() -> Path:
    base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    path = base / "kstack-twin"
    path.mkdir(exist_ok=True)
    return path


def _ip(*args: str, netns_pid: int | None = None) -> None:
    cmd = ["ip", *args]
    if netns_pid is not None:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


class NetNamespace:
    """One twin's namespace. `create()`, then `spawn()` processes into it, then `close()` (idempotent)."""

    def __init__(self):
        self.addresses: Addresses | None = None
        self._holder: subprocess.Popen | None = None
        self._lock_fd: int | None = None
        self._ns_fd: int | None = None
        self._procs: list[subprocess.Popen] = []
        self._mutex = threading.Lock()

    @property
    def pid(self) -> int:
        if self._holder is None:
            raise NetnsError("the namespace is not created")
        return self._holder.pid

    def create(self) -> "NetNamespace":
        missing = [tool for tool in ("ip", "unshare", "nsenter") if shutil.which(tool) is None]
        if missing:
            raise NetnsError(f"the twin needs {', '.join(missing)} to create its network namespace; "
                             "install iproute2 and util-linux")
        index = self._claim_index()
        self.addresses = addr = Addresses.for_index(index)
        host_link, ns_link = f"kst{index}h", f"kst{index}n"
        try:
            # The holder says "ready" from inside the new namespace, then sleeps until it is killed.
            self._holder = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", "echo ready; exec sleep infinity"],
                                            preexec_fn=_die_with_parent(os.getpid()), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
            if self._holder.stdout.readline().strip() != b"ready":
                err = (self._holder.stderr.read() or b"").decode().strip()
                raise NetnsError(f"cannot create a network namespace ({err or 'unshare failed'}): the twin needs "
                                 "CAP_SYS_ADMIN and CAP_NET_ADMIN; run the self-tests as root (as CI does), e.g. "
                                 "`sudo -E make test`")
            subprocess.run(["ip", "link", "del", host_link], capture_output=True)   # a leftover of a crashed twin
            _ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link)
            _ip("link", "set", ns_link, "netns", str(self.pid))
            _ip("addr", "add", f"{addr.host_ip}/30", "dev", host_link)
            _ip("link", "set", host_link, "up")
            _ip("route", "add", addr.pod_cidr, "via", addr.node_ip)
            _ip("link", "set", "lo", "up", netns_pid=self.pid)
            _ip("addr", "add", f"{addr.node_ip}/30", "dev", ns_link, netns_pid=self.pid)
            _ip("link", "set", ns_link, "up", netns_pid=self.pid)
            _ip("route", "add", "local", addr.pod_cidr, "dev", "lo", netns_pid=self.pid)
            self._ns_fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        log.info("twin network namespace %d: node %s, pods %s", index, addr.node_ip, addr.pod_cidr)
        return self

    def _claim_index(self) -> int:
        lock_dir = _lock_dir()
        for n in range(MAX_TWINS):
            fd = os.open(lock_dir / f"{n}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd = fd      # held while this twin lives; released by the kernel if the process dies
            return n
        raise NetnsError(f"{MAX_TWINS} twins are running on this machine already")

    def spawn(self, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start a process inside the namespace; it dies with this process (and so never outlives the twin)."""
        if self._ns_fd is None:
            raise NetnsError("the namespace is not created")
        ns_fd = self._ns_fd
        parent = os.getpid()

        def enter() -> None:
            if _libc.setns(ns_fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the twin's network namespace failed")
            _die_with_parent(parent)()

        popen_kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(argv, preexec_fn=enter, pass_fds=(ns_fd,), **popen_kwargs)
        with self._mutex:
            self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return proc

    def close(self) -> None:
        with self._mutex:
            procs, self._procs = self._procs, []
        for proc in procs:
            _kill_group(proc)
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            for stream in (self._holder.stdout, self._holder.stderr):
                stream.close()
            self._holder = None
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None
        if self.addresses is not None:
            # The pair goes with the namespace; deleting the host end as well makes it immediate.
            subprocess.run(["ip", "link", "del", f"kst{self.addresses.index}h"], capture_output=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _die_with_parent(parent_pid: int):
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:      # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()
