"""The twin: a simulated Kubernetes cluster with the KServe stack (see docs/architecture.md).

`from twin import Twin` stays light: kserve and scikit-learn are only imported by the model-server child processes.
"""
from __future__ import annotations

__all__ = ["Twin"]


def __getattr__(name: str):
    if name == "Twin":
        from twin.cluster import Twin
        return Twin
    raise AttributeError(f"module 'twin' has no attribute {name!r}")
