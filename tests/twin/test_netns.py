"""The twin's network namespaces: Pods bind their own IPs and ports, the host reaches them only from inside."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from twin.netns import NODE_IP, NetNamespace, NetnsError, PodNetwork

SERVE = "import http.server,sys; http.server.HTTPServer(('0.0.0.0', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"


@pytest.fixture
def node():
    ns = NetNamespace().create()
    yield ns
    ns.close()


def wait_accepting(node, ip, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.accepts(ip, port):
            return True
        time.sleep(0.05)
    return False


def test_two_pods_bind_the_same_port_and_each_answers_at_its_own_ip(node):
    """Every controller-runtime manager binds :8081; in one shared namespace the second could not."""
    a, b = PodNetwork(node, "10.244.0.200").create(), PodNetwork(node, "10.244.0.201").create()
    procs = [node.spawn([sys.executable, "-c", SERVE, "8081"], network=n, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for n in (a, b)]
    try:
        assert wait_accepting(node, a.ip, 8081) and wait_accepting(node, b.ip, 8081)
        assert node.http_status(a.ip, 8081, "/") == 200 and node.http_status(b.ip, 8081, "/") == 200
        # a Pod reaches another Pod and the node (the API server's address) through the node namespace
        probe = node.spawn([sys.executable, "-c", f"import socket; socket.create_connection(('{b.ip}', 8081), 3)"],
                           network=a)
        assert probe.wait(10) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        a.close()
        b.close()


def test_a_new_pod_gets_the_ip_of_a_deleted_one_whose_namespace_is_not_gone_yet(node):
    """KWOK may hand a deleted Pod's IP to the next Pod at once, while the kernel still tears down the old namespace
    (its veth and /32 route): the new Pod's network must take the route over, and answer at that IP."""
    old = PodNetwork(node, "10.244.0.220").create()          # not closed: as if its namespace were still going
    new = PodNetwork(node, "10.244.0.220").create()
    proc = node.spawn([sys.executable, "-c", SERVE, "8082"], network=new, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        assert wait_accepting(node, new.ip, 8082)
    finally:
        proc.kill()
        proc.wait()
        old.close()
        new.close()


def test_the_host_cannot_reach_the_twin_except_through_its_namespace(node):
    server = node.spawn([sys.executable, "-c", SERVE, "18099"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_accepting(node, NODE_IP, 18099)
        # no route of the twin's on the host: the node's address is only what the host's default route says
        route = subprocess.run(["ip", "route", "get", NODE_IP], capture_output=True, text=True).stdout
        assert " dev kst" not in route and not any(
            line.startswith(("10.253.", "10.244.")) for line in subprocess.run(
                ["ip", "route"], capture_output=True, text=True).stdout.splitlines())
        conn = node.create_connection((NODE_IP, 18099), timeout=3)
        conn.close()
        # and the calling thread is back in the host's namespace afterwards
        assert os.stat("/proc/thread-self/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    finally:
        server.kill()
        server.wait()


def test_processes_die_with_the_namespace_and_nothing_is_left_on_the_host(node):
    pod = PodNetwork(node, "10.244.0.210").create()
    proc = node.spawn(["sleep", "300"], network=pod)
    links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert pod.node_link not in links_before     # both ends live in the twin's namespaces, not on the host
    pod.close()
    node.close()
    assert proc.wait(10) is not None


def test_a_volume_outside_tmp_and_run_is_refused(node):
    with pytest.raises(NetnsError, match="/etc/x"):
        node.spawn(["true"], mounts=[("/tmp", "/etc/x")])
