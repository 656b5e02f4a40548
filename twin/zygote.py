"""A fork server for the model Pods' KServe model servers: one process imports kserve, scikit-learn and numpy once,
then forks each model server from itself, where a fresh Python paid about 2 CPU-seconds of imports per server (a
whole acceptance run starts about eight: the Iris models, the autoscaling checks' replicas, their cold starts).

What runs is unchanged: each child enters its Pod's network namespace, takes the container's environment, working
directory and log, and runs `twin.modelserver.main` with the container's arguments, as `python -m twin.modelserver`
would. Only the imports are inherited (as a preforked worker inherits them; CPython's own forkserver does the same).

    zygote = Zygote(netns, workdir).launch()      # `python -m twin.zygote SOCKET` in the twin's node namespace
    zygote.start()                                # once it listens
    proc = zygote.spawn(args, env, cwd, log_path, netns_path)   # Popen-like: pid, poll(), wait(), send_signal()
    zygote.stop()

The server is one thread: it forks only from a process with no other Python thread, reaps its children on
SIGCHLD and reports each exit code to the twin, which reads them on a thread of its own. Its children die with it
(PR_SET_PDEATHSIG), and it dies with the twin.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("twin.zygote")

START_SECONDS = 60.0


class ZygoteError(RuntimeError):
    pass


class ZygoteProcess:
    """A model server forked by the zygote, with the part of subprocess.Popen the twin's kubelet uses."""

    def __init__(self, zygote: "Zygote", pid: int):
        self._zygote, self.pid = zygote, pid

    @property
    def returncode(self) -> int | None:
        return self._zygote.exit_code(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._zygote.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"model server {self.pid}", timeout)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The twin's side: starts the server, asks it for children, and keeps their exit codes."""

    def __init__(self, netns, workdir: Path):
        self.netns, self.workdir = netns, Path(workdir)
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._exits: dict[int, int] = {}
        self._next_id = 0
        self._dead = False
        self._path: Path | None = None

    def launch(self) -> "Zygote":
        """Start the server without waiting for its imports. It dies with the thread that launches it
        (PR_SET_PDEATHSIG): launch it from one that lives as long as the twin (the kubelet's sync thread)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._path = self.workdir / "zygote.sock"
        self._path.unlink(missing_ok=True)
        with open(self.workdir / "zygote.log", "ab") as out:
            self.proc = self.netns.spawn([sys.executable, "-m", "twin.zygote", str(self._path)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    def start(self) -> "Zygote":
        """Launched, and connected once it listens."""
        if self.proc is None:
            self.launch()
        path = self._path
        deadline = time.monotonic() + START_SECONDS
        while True:        # the server binds its socket once its imports are done
            if self.proc.poll() is not None:
                raise ZygoteError(f"the model server zygote exited ({self.proc.returncode}); see "
                                  f"{self.workdir / 'zygote.log'}")
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    self.stop()
                    raise ZygoteError(f"the model server zygote did not listen within {START_SECONDS:.0f}s") \
                        from None
                time.sleep(0.1)
        threading.Thread(target=self._read, daemon=True, name="twin-zygote").start()
        return self

    def spawn(self, args: list[str], env: dict, cwd: Path, log_path: Path, netns_path: str) -> ZygoteProcess:
        """A model server with the container's `args`, in the network namespace at `netns_path`."""
        with self._send_lock:
            self._next_id += 1
            request_id = self._next_id
            request = {"id": request_id, "args": args, "env": env, "cwd": str(cwd), "log": str(log_path),
                       "netns": netns_path}
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._replies or self._dead, START_SECONDS):
                raise ZygoteError("the model server zygote did not answer")
            reply = self._replies.pop(request_id, None)
        if reply is None or "pid" not in reply:
            raise ZygoteError(f"the model server zygote could not fork: {(reply or {}).get('error', 'it exited')}")
        return ZygoteProcess(self, reply["pid"])

    def exit_code(self, pid: int) -> int | None:
        with self._cond:
            return self._exits.get(pid, -signal.SIGKILL if self._dead else None)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._dead, timeout)
        return self.exit_code(pid)

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    with self._cond:
                        if "exited" in message:
                            self._exits[message["exited"]] = message["code"]
                        else:
                            self._replies[message["id"]] = message
                        self._cond.notify_all()
        except OSError:
            pass
        with self._cond:            # its children died with it (PR_SET_PDEATHSIG)
            self._dead = True
            self._cond.notify_all()

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.proc is not None:
            from twin.processes import stop_process
            stop_process(self.proc, grace=5)
            self.proc = None


# -- the server: python -m twin.zygote SOCKET -----------------------------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: become the container's process, then run the model server; never returns."""
    code = 1
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)                           # PR_SET_PDEATHSIG: die with the zygote
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        fd = os.open(request["netns"], os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:                     # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns into the Pod's network namespace failed")
        os.close(fd)
        out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import random
        random.seed()                                           # not the zygote's state, shared by every child
        from twin import modelserver
        sys.argv = ["twin.modelserver", *request["args"]]
        code = modelserver.main(request["args"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the container's exit, with the reason in its log
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str) -> int:
    # What every model server imports, once; then no thread but this one (fork copies only the calling thread).
    from twin import modelserver
    modelserver.preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(True))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    conn, _ = listener.accept()
    listener.close()
    selector = selectors.DefaultSelector()
    selector.register(conn, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    buffer = b""

    def send(message: dict) -> None:
        conn.sendall(json.dumps(message).encode() + b"\n")

    while not done:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                while True:                     # reap every child that ended
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            chunk = conn.recv(65536)
            if not chunk:                       # the twin is gone: so are we, and our children with us
                return 0
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as e:
                    send({"id": request["id"], "error": str(e)})
                    continue
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for fd in (conn.fileno(), wake_r, wake_w):
                        os.close(fd)
                    _child(request)
                send({"id": request["id"], "pid": pid})
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
