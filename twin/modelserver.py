"""A real KServe model server for the twin: an sklearn Iris classifier served by ``kserve.ModelServer``.

Run standalone::

    python -m twin.modelserver --model-name sklearn-iris --http-port 8080 [--wrong]

The model is trained at start on scikit-learn's bundled Iris data set (no network, no files). The sample used by the
KServe documentation, ``[[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]``, must predict ``[1, 1]``; the process checks
this before serving and exits with :data:`EXIT_SAMPLE_MISMATCH` and a clear message otherwise. ``--wrong`` is the
twin's ``predict-wrong`` fault: a real model trained on shifted labels, so it answers the sample with other classes.

Served like KServe's sklearn runtime: v1 ``POST /v1/models/NAME:predict`` (``{"instances": [...]}`` ->
``{"predictions": [...]}``), v2 ``POST /v2/models/NAME/infer``, ``GET /v1/models/NAME`` and ``/v2/health/ready``.
Only 127.0.0.1 is bound (kserve 0.21 hard-codes ``0.0.0.0`` in ``RESTServer``; see :func:`_serve`), gRPC is off.

:class:`ModelServerProcess` runs one such server as a child process for the twin. This module imports neither
kserve nor scikit-learn at import time, so the twin can use :class:`ModelServerProcess` cheaply.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SAMPLE_INSTANCES = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
EXPECTED_PREDICTIONS = [1, 1]
BIND_HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_SAMPLE_MISMATCH = 3
_STOP_GRACE_SECONDS = 2  # uvicorn graceful shutdown inside the server


# --------------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------------

def train_iris(wrong: bool = False) -> Any:
    """Train the Iris classifier on sklearn's bundled data (an SVC, as in KServe's sklearn sample).

    ``wrong=True`` trains the same estimator on labels shifted by one class ((y + 1) % 3): a genuinely wrong model.
    """
    from sklearn import datasets, svm

    features, labels = datasets.load_iris(return_X_y=True)
    if wrong:
        labels = (labels + 1) % 3
    return svm.SVC(gamma="scale").fit(features, labels)


def sample_check(estimator: Any, wrong: bool = False) -> Optional[str]:
    """None when the estimator answers the canonical sample as expected for its kind, else a clear message."""
    predictions = [int(p) for p in estimator.predict(SAMPLE_INSTANCES)]
    if not wrong and predictions != EXPECTED_PREDICTIONS:
        return (f"Iris model self-check failed: sample {SAMPLE_INSTANCES} predicted {predictions}, "
                f"expected {EXPECTED_PREDICTIONS}")
    if wrong and predictions == EXPECTED_PREDICTIONS:
        return (f"predict-wrong model self-check failed: sample {SAMPLE_INSTANCES} predicted the correct "
                f"{predictions}; the fault would not be observable")
    return None


def make_model(name: str, wrong: bool = False) -> Any:
    """Return an (unloaded) ``kserve.Model`` serving the Iris classifier under ``name``.

    The class is defined here, not at module level, so that importing this module does not import kserve (whose
    ``model_server`` module parses ``sys.argv`` at import time).
    """
    import numpy as np
    from kserve import InferOutput, InferRequest, InferResponse, Model
    from kserve.errors import InvalidInput

    class IrisModel(Model):
        """Iris classifier behaving like KServe's sklearn runtime for the v1 and v2 REST protocols."""

        def __init__(self, model_name: str, wrong_labels: bool):
            super().__init__(model_name)
            self.wrong = wrong_labels
            self.estimator = None
            self.sample_error: Optional[str] = None

        def load(self) -> bool:
            self.estimator = train_iris(self.wrong)
            self.sample_error = sample_check(self.estimator, self.wrong)
            self.ready = self.sample_error is None
            return self.ready

        def _classify(self, rows: Any) -> Any:
            try:
                features = np.asarray(rows, dtype=np.float64)
                if features.ndim != 2:
                    raise ValueError(f"expected a 2-D batch of feature rows, got shape {list(features.shape)}")
                return self.estimator.predict(features).astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"cannot classify input: {exc}") from exc

        def predict(self, payload: Any, headers: Optional[dict] = None) -> Any:
            if isinstance(payload, InferRequest):
                if not payload.inputs:
                    raise InvalidInput("v2 request has no inputs")
                classes = self._classify(payload.inputs[0].as_numpy())
                output = InferOutput(name="output-0", shape=list(classes.shape), datatype="INT64")
                output.set_data_from_numpy(classes, binary_data=payload.use_binary_outputs)
                return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output],
                                     use_binary_outputs=payload.use_binary_outputs)
            if not isinstance(payload, dict):
                raise InvalidInput("expected a JSON object with \"instances\"")
            instances = payload.get("instances", payload.get("inputs"))
            if not isinstance(instances, list):
                raise InvalidInput('Expected "instances" to be a list')
            return {"predictions": self._classify(instances).tolist()}

    return IrisModel(name, wrong)


# --------------------------------------------------------------------------------------------------------------------
# The server process (python -m twin.modelserver)
# --------------------------------------------------------------------------------------------------------------------

def _parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m twin.modelserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--wrong", action="store_true", help="serve the predict-wrong fault model")
    parser.add_argument("--log-level", default="WARNING", help="kserve/uvicorn log level (default WARNING)")
    parser.add_argument("--parent-pipe-fd", type=int, default=None,
                        help="read end of a pipe held by the parent: exit when it reaches EOF (parent died)")
    return parser.parse_args(argv)


def _watch_parent(fd: int) -> None:
    """Terminate this server when the parent's end of the pipe closes (the parent exited, even by SIGKILL)."""

    def watch() -> None:
        try:
            while os.read(fd, 64):  # blocks; returns b"" only at EOF
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # graceful uvicorn shutdown ...
        time.sleep(_STOP_GRACE_SECONDS + 3)
        os._exit(1)  # ... or not at all

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve(model: Any, port: int, level: int) -> None:
    from kserve import ModelServer

    class LoopbackModelServer(ModelServer):
        # kserve 0.21's RESTServer builds its uvicorn.Config with host="0.0.0.0" and offers no option for it.
        # ModelServer.start() creates the RESTServer, then calls setup_event_loop(), then asyncio.run() which is
        # when uvicorn binds: the hook is the last point to re-target the (still unbound) config.
        def setup_event_loop(self) -> None:
            if self._rest_server is None:
                raise RuntimeError("kserve did not create a single-process REST server; cannot bind to loopback")
            self._rest_server.config.host = BIND_HOST
            super().setup_event_loop()

    server = LoopbackModelServer(http_port=port, workers=1, enable_grpc=False, enable_docs_url=False,
                                 enable_latency_logging=False, grace_period=_STOP_GRACE_SECONDS)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)
    server.start([model])


def main(argv: Optional[list] = None) -> int:
    args = _parse_args(argv)
    if args.parent_pipe_fd is not None:
        _watch_parent(args.parent_pipe_fd)
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        print(f"twin.modelserver: unknown --log-level {args.log_level!r}", file=sys.stderr)
        return 2
    # kserve.model_server parses sys.argv at import time and reads KSERVE_LOGLEVEL: give it neither our flags
    # nor a chatty default.
    os.environ.setdefault("KSERVE_LOGLEVEL", logging.getLevelName(level))
    sys.argv = sys.argv[:1]
    # FastAPI deprecates the ORJSONResponse kserve 0.21 uses: one warning per request is noise, not signal.
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated")
    started = time.monotonic()
    model = make_model(args.model_name, wrong=args.wrong)
    if not model.load():
        print(f"twin.modelserver: {model.sample_error}", file=sys.stderr)
        return EXIT_SAMPLE_MISMATCH
    print(f"twin.modelserver: model {args.model_name!r} ({'WRONG labels' if args.wrong else 'iris'}) loaded in "
          f"{time.monotonic() - started:.2f}s; serving on http://{BIND_HOST}:{args.http_port}", file=sys.stderr,
          flush=True)
    _serve(model, args.http_port, level)
    return 0


# --------------------------------------------------------------------------------------------------------------------
# ModelServerProcess: the child process, for the twin
# --------------------------------------------------------------------------------------------------------------------

_live: "set[ModelServerProcess]" = set()  # strong refs: a forgotten, unreferenced server is still stopped at exit
_live_lock = threading.Lock()


def _stop_all() -> None:
    with _live_lock:
        processes = list(_live)
    for proc in processes:
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_stop_all)


def _free_port(host: str = BIND_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ModelServerProcess:
    """One ``python -m twin.modelserver`` child on a free 127.0.0.1 port, in its own process group.

    ``start()`` only spawns; ``wait_ready(timeout)`` waits for the model to report ready. ``stop()`` terminates the
    whole process group (SIGTERM, then SIGKILL) and is idempotent. Left-over servers are stopped at interpreter exit
    (atexit, also after KeyboardInterrupt), and a server whose parent dies without running atexit exits by itself
    (it watches a pipe the parent holds).
    """

    _PORT_ATTEMPTS = 3

    def __init__(self, model_name: str, wrong: bool = False, *, log_level: str = "WARNING"):
        self.model_name = model_name
        self.wrong = wrong
        self.log_level = log_level
        self.port: Optional[int] = None
        self.startup_seconds: Optional[float] = None  # start() to ready, set by wait_ready()
        self._proc: Optional[subprocess.Popen] = None
        self._parent_pipe_w: Optional[int] = None
        self._output = None  # anonymous temp file with the child's stdout+stderr
        self._started_at: Optional[float] = None
        self._attempts = 0
        self._lock = threading.RLock()

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise RuntimeError(f"model server {self.model_name!r} is already running (pid {self._proc.pid})")
            self._started_at = time.monotonic()
            self.startup_seconds = None
            self._attempts = 0
            self._spawn()

    def _spawn(self) -> None:
        self._close_handles()
        self._attempts += 1
        self.port = _free_port()
        read_fd, write_fd = os.pipe()  # both non-inheritable; read_fd is passed explicitly below
        cmd = [sys.executable, "-m", "twin.modelserver", "--model-name", self.model_name,
               "--http-port", str(self.port), "--log-level", self.log_level, "--parent-pipe-fd", str(read_fd)]
        if self.wrong:
            cmd.append("--wrong")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("KSERVE_LOGLEVEL", self.log_level.upper())
        self._output = tempfile.TemporaryFile(prefix="twin-modelserver-")
        try:
            self._proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                          stdout=self._output, stderr=subprocess.STDOUT, pass_fds=(read_fd,),
                                          start_new_session=True)
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._parent_pipe_w = write_fd
        with _live_lock:
            _live.add(self)
        log.debug("model server %s spawned: pid %s port %s", self.model_name, self._proc.pid, self.port)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until the model reports ready (True), the process exits, or ``timeout`` passes (False).

        This is a process readiness probe: the only poll in the twin. A start that lost its port to another process
        between port selection and bind is retried on a new port.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                proc = self._proc
                if proc is None:
                    return False
                if proc.poll() is not None:
                    if self._attempts < self._PORT_ATTEMPTS and "address already in use" in self.output().lower():
                        self._spawn()
                        continue
                    return False
            if self.ready():
                if self.startup_seconds is None and self._started_at is not None:
                    self.startup_seconds = time.monotonic() - self._started_at
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def ready(self) -> bool:
        """One non-blocking readiness check of ``GET /v1/models/NAME``."""
        proc = self._proc
        if proc is None or proc.poll() is not None or self.port is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models/{self.model_name}", timeout=0.5) as resp:
                return resp.status == 200 and json.loads(resp.read() or b"{}").get("ready") is True
        except (OSError, ValueError):  # URLError/HTTPError/timeouts are OSErrors
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's process group and reap it; idempotent."""
        with self._lock:
            proc = self._proc
            if proc is not None:
                if proc.poll() is None:
                    self._signal_group(proc, signal.SIGTERM)
                    try:
                        proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        self._signal_group(proc, signal.SIGKILL)
                        proc.wait(timeout=5)
                # anything else left in the group (the server starts no children, but be sure)
                self._signal_group(proc, signal.SIGKILL)
            self._close_handles()
            with _live_lock:
                _live.discard(self)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
        except (ProcessLookupError, PermissionError):
            pass

    def _close_handles(self) -> None:
        if self._parent_pipe_w is not None:
            try:
                os.close(self._parent_pipe_w)
            except OSError:
                pass
            self._parent_pipe_w = None

    # ---- information -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("model server not started")
        return f"http://{BIND_HOST}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc is not None else None

    def output(self) -> str:
        """The child's combined stdout/stderr so far (for diagnostics)."""
        out = self._output
        if out is None:
            return ""
        try:
            out.flush()
            return os.pread(out.fileno(), 1 << 20, 0).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def __enter__(self) -> "ModelServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"ModelServerProcess({self.model_name!r}, wrong={self.wrong}, pid={self.pid}, port={self.port}, "
                f"returncode={self.returncode})")


if __name__ == "__main__":
    sys.exit(main())
