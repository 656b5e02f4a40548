"""The twin's control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK.

    cp = ControlPlane(workdir, netns, node_name="twin-control-plane")
    cp.start(deadline)      # bounded; a component that exits or never gets ready is one ControlPlaneError
    cp.admin_kubeconfig     # token-authenticated admin (the suite's identity): bearer tokens pass a fault proxy
    cp.url                  # https://<node ip>:6443
    cp.stop()               # every process is killed; nothing is left behind

Everything runs inside the twin's network namespace (twin/netns.py) and listens on its loopback or on its node
address, never on a host address. Authentication (client certificates, a static token, ServiceAccount tokens),
RBAC (Node,RBAC) and the default admission plugins are on, as in a kubeadm cluster; components authenticate with
their own identities. KWOK plays the kubelet of one fake Node: it schedules nothing itself, it moves Pods bound to
its node through the Stages the twin gives it (twin/kwok.py).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from twin import pki
from twin.netns import NetNamespace
from twin.processes import go_env, stop_process, stop_processes

log = logging.getLogger("twin.controlplane")

API_PORT = 6443
# A cluster's control plane has nodes of its own; the twin's shares the machine's cores with the Pods' processes and
# the suite. Before them on the CPU, the API server answers a controller's leader-election renewal in time even while
# two twins and their model servers load two cores (KServe's controller lost its Lease there: a 10 s renew deadline).
CONTROL_PLANE_NICE = -5
ETCD_CLIENT = "http://127.0.0.1:2379"       # the namespace's loopback: only the API server talks to etcd
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"
ADMIN_USER = "kubernetes-admin"             # kubeadm's admin identity, in group system:masters


class ControlPlaneError(Exception):
    """A control-plane component that could not start: which one, what it said last, where its log is."""


@dataclass(frozen=True)
class Identity:
    """A client certificate identity (CN = user, O = groups), as kubeadm issues them."""
    name: str
    user: str
    groups: tuple[str, ...] = ()


COMPONENT_IDENTITIES = (
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    # KWOK acts for every fake node and reads/writes Pods, Nodes, Leases and its Stages: the masters group, as
    # kwokctl gives it.
    Identity("kwok", "kwok-controller", ("system:masters",)),
)


class ControlPlane:
    def __init__(self, workdir: Path, netns: NetNamespace, binaries: dict[str, Path], kwok_config: Path,
                 node_name: str):
        self.workdir = Path(workdir)
        self.netns = netns
        self.bin = binaries
        self.kwok_config = kwok_config
        self.node_name = node_name
        self.pki_dir = self.workdir / "pki"
        self.log_dir = self.workdir / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.admin_token = secrets.token_hex(16)
        self.ca: pki.KeyPair | None = None
        self.version: dict = {}

    # -- addresses and files --------------------------------------------------------------------------------------

    @property
    def node_ip(self) -> str:
        return self.netns.addresses.node_ip

    @property
    def url(self) -> str:
        return f"https://{self.node_ip}:{API_PORT}"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def kubeconfig_for(self, identity: str) -> Path:
        return self.workdir / f"{identity}.kubeconfig"

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, deadline: float) -> "ControlPlane":
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if (self.pki_dir / "tokens.csv").is_file():      # restored from a snapshot: its identities come with it
            self.admin_token = (self.pki_dir / "tokens.csv").read_text().split(",", 1)[0]
        else:
            self._write_pki()
        self._write_kubeconfigs()
        self._spawn("etcd", self._etcd_argv())
        self._spawn("kube-apiserver", [str(self.bin["kube-apiserver"]), *self._apiserver_flags()])
        self._wait_ready(deadline)
        p = self.pki_dir
        self._spawn("kube-controller-manager", [
            str(self.bin["kube-controller-manager"]), f"--kubeconfig={self.kubeconfig_for('controller-manager')}",
            f"--authentication-kubeconfig={self.kubeconfig_for('controller-manager')}",
            f"--authorization-kubeconfig={self.kubeconfig_for('controller-manager')}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}", f"--cluster-signing-key-file={p / 'ca.key'}",
            "--controllers=*,bootstrapsigner,tokencleaner", "--cluster-name=twin", "-v=1"])
        self._spawn("kube-scheduler", [
            str(self.bin["kube-scheduler"]), f"--kubeconfig={self.kubeconfig_for('scheduler')}",
            f"--authentication-kubeconfig={self.kubeconfig_for('scheduler')}",
            f"--authorization-kubeconfig={self.kubeconfig_for('scheduler')}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "-v=1"])
        return self

    def snapshot(self, target: Path) -> None:
        """Copy etcd's data and the PKI into `target`: etcd is stopped for the copy (a consistent data directory)
        and started again; the API server reconnects by itself."""
        etcd = self.procs["etcd"]
        argv = self._etcd_argv()
        etcd.terminate()
        etcd.wait(30)
        try:
            shutil.copytree(self.workdir / "etcd", target / "etcd")
            shutil.copytree(self.pki_dir, target / "pki")
        finally:
            self.procs.pop("etcd")
            self._spawn("etcd", argv)
            # etcd first in start order, so that stop() ends it last
            self.procs = {"etcd": self.procs.pop("etcd"), **self.procs}

    def start_kwok(self) -> None:
        """KWOK last: its Stage CRD and Stages must exist first (it reads its Stages from the API)."""
        self._spawn("kwok", [
            str(self.bin["kwok"]), f"--kubeconfig={self.kubeconfig_for('kwok')}", f"--config={self.kwok_config}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            # The lower half of the pod CIDR; the upper half is the model Pods' (twin/modelpods.py).
            f"--cidr={kwok_pod_cidr(self.netns.addresses.pod_cidr)}", f"--node-ip={self.node_ip}", "-v=INFO"])

    def stop(self) -> None:
        # Clients (together) before the API server, the API server before etcd: each tier shuts down while what
        # it talks to is still up.
        procs, self.procs = self.procs, {}
        servers = ("kube-apiserver", "etcd")
        stop_processes([p for name, p in procs.items() if name not in servers], grace=10, group=False)
        for name in servers:
            stop_process(procs.get(name), grace=10, group=False)

    def check_alive(self) -> None:
        """Raise ControlPlaneError for a component that has exited (with the end of its log)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode}: {self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 6) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) + f" (log: {self.log_dir / f'{name}.log'})"

    # -- internals -------------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.log_dir / f"{name}.log", "ab")
        try:
            self.procs[name] = self.netns.spawn(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.workdir, nice=CONTROL_PLANE_NICE, env=go_env(dict(os.environ)))
        finally:
            out.close()
        log.info("twin: started %s (pid %d)", name, self.procs[name].pid)

    def _etcd_argv(self) -> list[str]:
        return [str(self.bin["etcd"]), "--name=twin", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={ETCD_CLIENT}", f"--advertise-client-urls={ETCD_CLIENT}",
                "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=twin=http://127.0.0.1:2380",
                # A test cluster's data is thrown away: no fsync keeps etcd fast on slow disks.
                "--unsafe-no-fsync", "--log-level=warn"]

    def _apiserver_flags(self) -> list[str]:
        p = self.pki_dir
        return [
            f"--etcd-servers={ETCD_CLIENT}", f"--bind-address={self.node_ip}", f"--advertise-address={self.node_ip}",
            f"--secure-port={API_PORT}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}", f"--token-auth-file={p / 'tokens.csv'}",
            f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            # The front proxy (aggregation layer) as kubeadm sets it up; components read its CA from the
            # extension-apiserver-authentication ConfigMap.
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}", f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # Webhooks and aggregated APIs are reached at an endpoint of their Service (a pod IP), as nothing
            # implements ClusterIPs here (no kube-proxy).
            "--enable-aggregator-routing=true",
            "--profiling=false", "-v=1"]

    def _write_pki(self) -> None:
        p = self.pki_dir
        key = pki.new_private_key("ECDSA")
        ca_req = pki.Request(common_name="kubernetes", is_ca=True, duration=datetime.timedelta(days=3650),
                             usages=("digital signature", "key encipherment", "cert sign"))
        self.ca = pki.KeyPair(pki.sign(key.public_key(), ca_req, None, key), key)
        _write(p / "ca.crt", self.ca.cert_pem)
        _write(p / "ca.key", pki.key_pem(key, "PKCS8"), private=True)
        serving = [f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "kubernetes.default.svc", "kubernetes.default",
                   "kubernetes", self.node_name, "localhost"]
        self._issue("apiserver", pki.Request(common_name="kube-apiserver", dns_names=tuple(serving),
                                             ip_addresses=(self.node_ip, KUBERNETES_SERVICE_IP, "127.0.0.1"),
                                             usages=("digital signature", "key encipherment", "server auth")))
        self._issue("apiserver-kubelet-client", pki.Request(
            common_name="kube-apiserver-kubelet-client", subject={"organizations": ["kubeadm:cluster-admins"]},
            usages=("digital signature", "key encipherment", "client auth")))
        for ident in COMPONENT_IDENTITIES:
            self._issue(ident.name, pki.Request(common_name=ident.user,
                                                subject={"organizations": list(ident.groups)} if ident.groups else None,
                                                usages=("digital signature", "key encipherment", "client auth")))
        proxy_key = pki.new_private_key("ECDSA")
        proxy_ca = pki.KeyPair(pki.sign(proxy_key.public_key(), pki.Request(
            common_name="front-proxy-ca", is_ca=True, duration=datetime.timedelta(days=3650),
            usages=("digital signature", "key encipherment", "cert sign")), None, proxy_key), proxy_key)
        _write(p / "front-proxy-ca.crt", proxy_ca.cert_pem)
        self._issue("front-proxy-client", pki.Request(common_name="front-proxy-client",
                                                      usages=("digital signature", "key encipherment", "client auth")),
                    issuer=proxy_ca)
        sa = pki.new_private_key("RSA", 2048)
        _write(p / "sa.key", pki.key_pem(sa, "PKCS8"), private=True)
        _write(p / "sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        # token,user,uid,"group1,group2" (the static token file format)
        _write(p / "tokens.csv", f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'.encode(),
               private=True)

    def _issue(self, name: str, req: pki.Request, issuer: pki.KeyPair | None = None) -> None:
        issuer = issuer or self.ca
        key = pki.new_private_key("ECDSA")
        cert = pki.sign(key.public_key(), req, issuer.cert, issuer.key)
        _write(self.pki_dir / f"{name}.crt", pki.cert_pem(cert))
        _write(self.pki_dir / f"{name}.key", pki.key_pem(key, "PKCS8"), private=True)

    def _write_kubeconfigs(self) -> None:
        write_kubeconfig(self.admin_kubeconfig, self.url, self.ca_file, context="twin", user=ADMIN_USER,
                         token=self.admin_token)
        for ident in COMPONENT_IDENTITIES:
            write_kubeconfig(self.kubeconfig_for(ident.name), self.url, self.ca_file, context="twin",
                             user=ident.user, cert=self.pki_dir / f"{ident.name}.crt",
                             key=self.pki_dir / f"{ident.name}.key")

    def https(self, timeout: float = 5.0):
        """An HTTPS connection to the API server, opened inside the twin's network namespace."""
        import http.client
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection(self.node_ip, API_PORT, context=ctx, timeout=timeout)
        conn._create_connection = self.netns.create_connection
        return conn

    def _wait_ready(self, deadline: float) -> None:
        """GET /readyz until it answers ok (there is nothing to watch before the API server serves)."""
        delay, last = 0.05, "no answer yet"
        while True:
            self.check_alive()
            conn = self.https(timeout=2)
            try:
                conn.request("GET", "/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                if resp.status == 200:
                    self.version = self._get_json("/version")
                    log.info("twin: kube-apiserver %s ready", self.version.get("gitVersion"))
                    return
                last = f"/readyz {resp.status}: {body[-300:]}"
            except OSError as e:
                last = str(e)
            finally:
                conn.close()
            if time.monotonic() + delay > deadline:
                raise ControlPlaneError(f"kube-apiserver not ready in time (last: {last}); "
                                        f"{self.log_tail('kube-apiserver')}")
            time.sleep(delay)     # bounded start-up backoff: there is no API to watch yet
            delay = min(delay * 2, 0.5)

    def _get_json(self, path: str) -> dict:
        conn = self.https()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.admin_token}"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


def kwok_pod_cidr(pod_cidr: str) -> str:
    import ipaddress
    return str(next(ipaddress.ip_network(pod_cidr).subnets(prefixlen_diff=1)))


def write_kubeconfig(path: Path, server: str, ca_file: Path, *, context: str, user: str, token: str | None = None,
                     cert: Path | None = None, key: Path | None = None, namespace: str | None = None) -> Path:
    creds: dict = {"token": token} if token else {"client-certificate": str(cert), "client-key": str(key)}
    ctx: dict = {"cluster": context, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    config = {"apiVersion": "v1", "kind": "Config", "current-context": context,
              "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
              "users": [{"name": user, "user": creds}],
              "contexts": [{"name": context, "context": ctx}]}
    _write(Path(path), yaml.safe_dump(config, sort_keys=False).encode(), private=True)
    return Path(path)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
