"""The twin's object store: what the gs:// URIs of the profiles hold, in a world without Google Cloud Storage.

It holds exactly the objects the twin puts there: the Iris model of the profiles' sample
(gs://kfserving-examples/models/sklearn/1.0/model/model.joblib, an SVC trained on scikit-learn's bundled Iris
data, as KServe's sample is) and nothing else, so a storageUri that does not exist fails as it would against GCS.
The predict-wrong fault serves a model trained on shifted labels at the same URI.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

IRIS_URI = "gs://kfserving-examples/models/sklearn/1.0/model"
WRONG = "_predict-wrong"


class ObjectStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, uri: str, wrong: bool = False) -> Path:
        parts = urlsplit(uri)
        base = self.root / (WRONG if wrong else "objects")
        return base / parts.scheme / parts.netloc / parts.path.lstrip("/")

    def ensure_iris(self) -> None:
        import joblib
        from twin.modelserver import train_iris
        for wrong in (False, True):
            path = self.path_for(IRIS_URI, wrong) / "model.joblib"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                joblib.dump(train_iris(wrong=wrong), path)
