"""A real KServe model server for the twin's model Pods: `python -m twin.modelserver --model_name=NAME
--model_dir=DIR --http_port=8080 --bind=POD_IP`, the arguments of KServe's sklearn runtime container.

It serves the estimator file the storage initializer put in DIR (model.joblib, model.pkl or model.pickle, as
KServe's sklearnserver looks for them) with `kserve.ModelServer`: v1 `POST /v1/models/NAME:predict`
(`{"instances": [...]}` -> `{"predictions": [...]}`), v2 `POST /v2/models/NAME/infer`, `GET /v1/models/NAME`,
`/v2/health/ready` and `/metrics`. It binds the Pod IP only (kserve 0.21 hard-codes 0.0.0.0; see `_serve`).

`train_iris` makes the Iris estimator the twin's object store holds (twin/objectstore.py). This module imports
neither kserve nor scikit-learn at import time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SAMPLE_INSTANCES = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
EXPECTED_PREDICTIONS = [1, 1]
REPO_ROOT = Path(__file__).resolve().parent.parent
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


MODEL_FILES = ("model.joblib", "model.pkl", "model.pickle")


def model_file(model_dir: str) -> Path | None:
    for name in MODEL_FILES:
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    return None


def make_model(name: str, model_dir: str) -> Any:
    """Return an (unloaded) ``kserve.Model`` serving the Iris classifier under ``name``.

    The class is defined here, not at module level, so that importing this module does not import kserve (whose
    ``model_server`` module parses ``sys.argv`` at import time).
    """
    import numpy as np
    from kserve import InferOutput, InferRequest, InferResponse, Model
    from kserve.errors import InvalidInput

    class IrisModel(Model):
        """Iris classifier behaving like KServe's sklearn runtime for the v1 and v2 REST protocols."""

        def __init__(self, model_name: str, directory: str):
            super().__init__(model_name)
            self.directory = directory
            self.estimator = None

        def load(self) -> bool:
            import joblib
            path = model_file(self.directory)
            if path is None:
                # sklearnserver's message (python/sklearnserver/sklearnserver/model.py)
                raise RuntimeError(f"Missing model file in {self.directory}")
            self.estimator = joblib.load(path)
            self.ready = True
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

    return IrisModel(name, model_dir)


# --------------------------------------------------------------------------------------------------------------------
# The server process (python -m twin.modelserver)
# --------------------------------------------------------------------------------------------------------------------

def _parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m twin.modelserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--bind", default="127.0.0.1", help="the address to listen on (the Pod IP)")
    parser.add_argument("--log-level", default="INFO")
    args, _ = parser.parse_known_args(argv)    # the runtime's other flags (workers, grpc port) do not apply
    return args


def _stop_counting_predictions() -> None:
    """Fault metrics-not-counting: kserve times predict calls into a histogram no /metrics shows (a model server
    whose metrics are broken: the endpoint answers, the counts never move)."""
    import prometheus_client
    from kserve import model as kserve_model
    kserve_model.PREDICT_HIST_TIME = prometheus_client.Histogram(
        "request_predict_seconds", "predict request latency", ["model_name"],
        registry=prometheus_client.CollectorRegistry())


def _serve(model: Any, host: str, port: int, level: int) -> None:
    from kserve import ModelServer

    from twin import faults
    if faults.active(os.environ.get("TWIN_FAULTS_FILE"), "metrics-not-counting"):
        _stop_counting_predictions()

    class PodModelServer(ModelServer):
        # kserve 0.21's RESTServer builds its uvicorn.Config with host="0.0.0.0" and offers no option for it.
        # ModelServer.start() creates the RESTServer, then calls setup_event_loop(), then asyncio.run() which is
        # when uvicorn binds: the hook is the last point to re-target the (still unbound) config.
        def setup_event_loop(self) -> None:
            if self._rest_server is None:
                raise RuntimeError("kserve did not create a single-process REST server; cannot bind the Pod IP")
            self._rest_server.config.host = host
            super().setup_event_loop()

    server = PodModelServer(http_port=port, workers=1, enable_grpc=False, enable_docs_url=False,
                            enable_latency_logging=True, grace_period=_STOP_GRACE_SECONDS)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)
    server.start([model])


def _quiet_kserve(level: str) -> None:
    """kserve.model_server parses sys.argv at import time and reads KSERVE_LOGLEVEL: give it neither our flags nor
    a chatty default. FastAPI deprecates the ORJSONResponse kserve 0.21 uses: one warning per request is noise."""
    os.environ.setdefault("KSERVE_LOGLEVEL", level)
    sys.argv = sys.argv[:1]
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated")


def preload() -> None:
    """Import what a model server imports, as main() would (twin/zygote.py forks servers from a process that did)."""
    _quiet_kserve("INFO")
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.svm  # noqa: F401
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: F401
    from kserve.errors import InvalidInput  # noqa: F401


def main(argv: Optional[list] = None) -> int:
    args = _parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        print(f"twin.modelserver: unknown --log-level {args.log_level!r}", file=sys.stderr)
        return 2
    _quiet_kserve(logging.getLevelName(level))
    started = time.monotonic()
    model = make_model(args.model_name, args.model_dir)
    try:
        model.load()
    except Exception as exc:  # noqa: BLE001 - the container's exit, with the reason in its log
        print(f"twin.modelserver: failed to load model {args.model_name!r}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"twin.modelserver: model {args.model_name!r} loaded from {args.model_dir} in "
          f"{time.monotonic() - started:.2f}s; serving on http://{args.bind}:{args.http_port}", file=sys.stderr,
          flush=True)
    _serve(model, args.bind, args.http_port, level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
