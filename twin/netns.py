"""The twin's own network namespaces: where its cluster's addresses live.

A real cluster's API server reaches a webhook through the webhook's Service, at a pod IP; EndpointSlices may not
hold loopback addresses, and this machine lets traffic go only to 127.0.0.0/8 and to addresses inside network
namespaces a program creates itself. So each twin makes its own:

    node namespace   10.253.0.2/32 on lo (the node's InternalIP: API server, NodePorts, KWOK's Pods)
                     local route 10.244.0.0/24 (every pod IP answers; nothing listening means refused)
                     ip_forward on, a /32 route per Pod namespace
    Pod namespaces   one per Pod whose processes really run (PodNetwork): its IP on a veth to the node namespace

Every twin uses the same addresses inside its own namespaces, which nothing on the host can route to: the host
reaches a twin only through listeners on 127.0.0.1 (its API proxy, its ingress forwarder) whose upstream sockets are
opened inside the twin's node namespace (`create_connection`). So twins never collide, and a twin's whole cluster
state (etcd's data) can be snapshotted and restored into another twin unchanged.

Each namespace is held by a `sleep` process and lives exactly as long as the processes in it: each is started with
PR_SET_PDEATHSIG, so nothing outlives the twin, also after a crash or a SIGKILL, and nothing persists on the host.

Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root, as on the machines here and in CI); without them `create()` raises
NetnsError with the remedy.
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass

from twin.processes import stop_processes

log = logging.getLogger("twin.netns")

NODE_IP = "10.253.0.2"
POD_CIDR = "10.244.0.0/24"
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_links = itertools.count(1)          # veth names are briefly in the host namespace: unique per process


class NetnsError(Exception):
    """The namespace cannot be created: what failed, and what the user can do."""


@dataclass(frozen=True)
class Addresses:
    node_ip: str = NODE_IP
    pod_cidr: str = POD_CIDR


def _ip(*args: str, netns_pid: int | None = None) -> None:
    cmd = ["ip", *args]
    if netns_pid is not None:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _sysctl(netns_pid: int, key: str, value: str) -> None:
    """A sysctl of a network namespace (/proc/sys/net is per namespace for the process reading it)."""
    cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", "sh", "-c", f"echo {value} > /proc/sys/{key}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"setting {key}={value} failed: {proc.stderr.strip()}")


def _ip_batch(commands: list[str], netns_pid: int | None = None) -> None:
    cmd = ["ip", "-batch", "-"]
    if netns_pid is not None:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *cmd]
    proc = subprocess.run(cmd, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"`ip -batch` failed: {proc.stderr.strip() or proc.stdout.strip()} ({'; '.join(commands)})")


def _holder(parent_pid: int) -> subprocess.Popen:
    """A process that holds a new network namespace: it says "ready" from inside it, then sleeps until killed."""
    holder = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", "echo ready; exec sleep infinity"],
                              preexec_fn=_die_with_parent(parent_pid), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if holder.stdout.readline().strip() != b"ready":
        err = (holder.stderr.read() or b"").decode().strip()
        holder.wait()
        raise NetnsError(f"cannot create a network namespace ({err or 'unshare failed'}): the twin needs "
                         "CAP_SYS_ADMIN and CAP_NET_ADMIN; run the self-tests as root (as CI does), e.g. "
                         "`sudo -E make test`")
    return holder


def _release(holder: subprocess.Popen | None) -> None:
    if holder is not None:
        holder.kill()
        holder.wait()
        for stream in (holder.stdout, holder.stderr):
            stream.close()


class NetNamespace:
    """One twin's node namespace. `create()`, then `spawn()` processes and `create_connection()`s into it, then
    `close()` (idempotent)."""

    def __init__(self):
        self.addresses = Addresses()
        self._holder: subprocess.Popen | None = None
        self._ns_fd: int | None = None
        self._host_fd: int | None = None
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
            raise NetnsError(f"the twin needs {', '.join(missing)} to create its network namespaces; "
                             "install iproute2 and util-linux")
        addr = self.addresses
        try:
            self._holder = _holder(os.getpid())
            _ip_batch(["link set lo up", f"addr add {addr.node_ip}/32 dev lo",
                       f"route add local {addr.pod_cidr} dev lo"], self.pid)
            _sysctl(self.pid, "net/ipv4/ip_forward", "1")     # the node routes between its Pods' namespaces
            self._ns_fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self._host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        log.info("twin network namespace (holder pid %d): node %s, pods %s", self.pid, addr.node_ip, addr.pod_cidr)
        return self

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of the node namespace (a socket belongs to the namespace of the thread that creates it)."""
        if self._ns_fd is None:
            raise NetnsError("the namespace is not created")
        if _libc.setns(self._ns_fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the twin's network namespace failed")
        try:
            return socket.socket(family, kind)
        finally:
            if _libc.setns(self._host_fd, _CLONE_NEWNET) != 0:      # never leave this thread in the twin
                raise OSError(ctypes.get_errno(), "setns back to the host network namespace failed")

    def create_connection(self, address: tuple[str, int], timeout: float | None = None,
                          source_address=None) -> socket.socket:
        """socket.create_connection, from inside the node namespace (for http.client's _create_connection)."""
        sock = self.socket()
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except BaseException:
            sock.close()
            raise

    def accepts(self, ip: str, port: int, timeout: float = 0.5) -> bool:
        """Whether something inside the twin accepts TCP connections at ip:port (a TCP probe)."""
        try:
            self.create_connection((ip, port), timeout).close()
            return True
        except OSError:
            return False

    def http_status(self, ip: str, port: int, path: str, https: bool = False, timeout: float = 1.0) -> int | None:
        """The status of GET ip:port/path from inside the twin (an HTTP probe; certificates are not verified,
        as kubelet's probes do not verify them), or None when nothing answers."""
        import http.client
        import ssl
        conn = (http.client.HTTPSConnection(ip, port, timeout=timeout, context=ssl._create_unverified_context())
                if https else http.client.HTTPConnection(ip, port, timeout=timeout))
        conn._create_connection = self.create_connection
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def spawn(self, argv: list[str], mounts: list[tuple[str, str]] = (), network: "PodNetwork | None" = None,
              nice: int = 0, hostname: str | None = None, **popen_kwargs) -> subprocess.Popen:
        """Start a process inside the namespace; it dies with this process (and so never outlives the twin).

        `mounts` (host directory, path in the process) are bind-mounted in a mount namespace of the process's own,
        as kubelet mounts a Pod's volumes: a private tmpfs is laid over the path's top directory (/tmp, /run) first,
        so nothing is created on the host and the process sees only its own files there. `nice` changes its CPU
        priority (negative: before the machine's other processes; without the right to, it stays as it was).
        `hostname`: the process gets a UTS namespace of its own with this hostname, as a container runtime gives a
        Pod's containers the Pod's name (what `os.Hostname()` answers in client-go's and controller-runtime's leader
        election identities).
        """
        if self._ns_fd is None:
            raise NetnsError("the namespace is not created")
        ns_fd = network.fd if network is not None else self._ns_fd
        parent = os.getpid()
        plan = _mount_plan(mounts)
        stage = tempfile.mkdtemp(prefix="twin-mounts-") if plan else ""

        def enter() -> None:
            if _libc.setns(ns_fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the twin's network namespace failed")
            if plan:
                _mount_volumes(plan, stage)
            if hostname:
                name = hostname.encode()
                _check(_libc.unshare(_CLONE_NEWUTS), "unshare(CLONE_NEWUTS)")
                _check(_libc.sethostname(name, len(name)), "sethostname")
            if nice:
                try:
                    os.nice(nice)
                except OSError:
                    pass
            _die_with_parent(parent)()

        popen_kwargs.setdefault("start_new_session", True)
        try:
            proc = subprocess.Popen(argv, preexec_fn=enter, pass_fds=(ns_fd, *popen_kwargs.pop("pass_fds", ())),
                                    **popen_kwargs)
        finally:
            if stage:    # the child moved its mounts away: the staging directories are empty on the host
                shutil.rmtree(stage, ignore_errors=True)
        with self._mutex:
            self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return proc

    def close(self) -> None:
        with self._mutex:
            procs, self._procs = self._procs, []
        stop_processes(procs)
        _release(self._holder)
        self._holder = None
        for fd in (self._ns_fd, self._host_fd):
            if fd is not None:
                os.close(fd)
        self._ns_fd = self._host_fd = None


_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 4096, 8192, 16384, 1 << 18
OVERLAID = ("/tmp", "/run", "/var/run")     # top directories a mounted path may live under


def _mount_plan(mounts) -> list[tuple[str, str]]:
    """Resolve the mount targets (/var/run is /run) and check each lies under a directory we may overlay."""
    plan = []
    for src, dst in mounts:
        dst = os.path.normpath(dst)
        if dst.startswith("/var/run/"):
            dst = "/run/" + dst[len("/var/run/"):]
        if not any(dst.startswith(top + "/") for top in OVERLAID):
            raise NetnsError(f"cannot mount a volume at {dst}: the twin mounts volumes under {', '.join(OVERLAID)}")
        plan.append((str(src), dst))
    return plan


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), what)


def _mount_volumes(plan: list[tuple[str, str]], stage: str) -> None:
    """In the child, before exec: a private mount namespace; for each top directory a tmpfs, first mounted on a
    staging directory where the sources are still visible, filled with bind mounts, then moved over the top."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    for top in sorted({"/" + dst.split("/")[1] for _, dst in plan}):
        staged = os.path.join(stage, top.strip("/"))
        os.makedirs(staged, exist_ok=True)
        _check(_libc.mount(b"tmpfs", staged.encode(), b"tmpfs", 0, b"mode=1777"), f"tmpfs on {staged}")
        for src, dst in plan:
            if dst.startswith(top + "/"):
                target = os.path.join(staged, dst[len(top) + 1:])
                os.makedirs(target, exist_ok=True)
                _check(_libc.mount(src.encode(), target.encode(), None, _MS_BIND, None), f"bind {src} on {dst}")
        _check(_libc.mount(staged.encode(), top.encode(), None, _MS_MOVE, None), f"move {staged} to {top}")


class PodNetwork:
    """A Pod's own network namespace, wired to the node's like a point-to-point CNI plugin: a veth pair, the Pod IP
    on the Pod's end with a default route through it, a /32 route and proxy ARP on the node's end. Processes of
    different Pods can so bind the same port (every controller-runtime manager binds :8081), as in a cluster."""

    def __init__(self, node: NetNamespace, ip: str):
        self.node, self.ip = node, ip
        self._holder: subprocess.Popen | None = None
        self.fd: int | None = None
        n = f"{os.getpid() % 100000}x{next(_links)}"
        self.node_link, self.pod_link = f"k{n}n", f"k{n}p"

    def create(self) -> "PodNetwork":
        try:
            self._holder = _holder(os.getpid())
            _ip("link", "add", self.node_link, "type", "veth", "peer", "name", self.pod_link,
                "netns", str(self._holder.pid))
            _ip("link", "set", self.node_link, "netns", str(self.node.pid))
            # `replace`, not `add`: a deleted Pod's namespace (and with it its veth and route) goes asynchronously
            # in the kernel, and KWOK may hand its IP to the next Pod at once ("RTNETLINK answers: File exists").
            _ip_batch([f"link set {self.node_link} up", f"route replace {self.ip}/32 dev {self.node_link}"],
                      self.node.pid)
            _sysctl(self.node.pid, f"net/ipv4/conf/{self.node_link}/proxy_arp", "1")
            _ip_batch(["link set lo up", f"addr add {self.ip}/32 dev {self.pod_link}", f"link set {self.pod_link} up",
                       f"route add default dev {self.pod_link}"], self._holder.pid)
            self.fd = os.open(f"/proc/{self._holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def path(self) -> str:
        """Where another process opens this namespace (to setns into it)."""
        return f"/proc/{self._holder.pid}/ns/net"

    def close(self) -> None:
        """The namespace goes when its last process does; the veth pair with it, and the node's route."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _release(self._holder)
        self._holder = None


def _die_with_parent(parent_pid: int):
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:      # the parent died before prctl took effect
            os._exit(1)
    return preexec
