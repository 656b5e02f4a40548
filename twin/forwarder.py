"""TCP forwarding, two uses:
- `python -m twin.forwarder LISTEN_IP:PORT TO_IP:PORT`: Knative's queue-proxy stand-in in the twin's model Pods
  (why not the real one: queue-proxy is a container image; it passes each connection on to the user container,
  the real one also meters requests and answers probes, which nothing in the twin asks of it);
- `Forwarder(target, connect)`: a listener on 127.0.0.1 whose connections are opened inside the twin's network
  namespace (the host's way to the twin's ingress gateway NodePort).
"""
from __future__ import annotations

import select
import socket
import sys
import threading
from typing import Callable


def relay(a: socket.socket, b: socket.socket, idle: float | None = None) -> None:
    """Copy bytes both ways until either side closes (or nothing moved for `idle` seconds); closes neither."""
    while True:
        readable, _, _ = select.select([a, b], [], [], idle)
        if not readable:
            return
        for src in readable:
            data = src.recv(65536)
            if not data:
                return
            (b if src is a else a).sendall(data)


def pipe(client: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        upstream = connect()
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    try:
        relay(client, upstream, idle=300)
    except OSError:
        return
    finally:
        client.close()
        upstream.close()


class Forwarder:
    def __init__(self, target: tuple[str, int], connect=socket.create_connection, listen=("127.0.0.1", 0)):
        self.target, self._connect = target, connect
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(listen)
        self._server.listen(64)
        self.host, self.port = self._server.getsockname()[:2]
        self._stopped = threading.Event()

    def start(self) -> "Forwarder":
        threading.Thread(target=self._accept, daemon=True, name="twin-forwarder").start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=pipe, args=(client, lambda: self._connect(self.target, 10)), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    (lhost, lport), (thost, tport) = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in argv]
    forwarder = Forwarder((thost, tport), listen=(lhost, lport))
    print(f"queue-proxy stand-in: {lhost}:{lport} -> {thost}:{tport}", flush=True)
    forwarder._accept()
    return 0


if __name__ == "__main__":
    sys.exit(main())
