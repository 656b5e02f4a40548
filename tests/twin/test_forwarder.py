"""The one copy loop of the twin's byte pipes (gateway forwarder, kube-proxy stand-in, the fault proxy's tunnels)."""
from __future__ import annotations

import socket
import threading

from twin.forwarder import relay


def test_relay_copies_both_ways_until_one_side_closes():
    client, client_end = socket.socketpair()
    upstream_end, upstream = socket.socketpair()
    done = threading.Thread(target=relay, args=(client_end, upstream_end))
    done.start()
    client.sendall(b"request")
    assert upstream.recv(100) == b"request"
    upstream.sendall(b"answer")
    assert client.recv(100) == b"answer"
    upstream.close()
    done.join(timeout=5)
    assert not done.is_alive()
    client_end.sendall(b"still open")        # relay closes neither of its sockets: their owners do
    assert client.recv(100) == b"still open"


def test_relay_gives_up_after_its_idle_time():
    a, a_end = socket.socketpair()
    b_end, b = socket.socketpair()
    done = threading.Thread(target=relay, args=(a_end, b_end), kwargs={"idle": 0.2})
    done.start()
    done.join(timeout=5)
    assert not done.is_alive()
