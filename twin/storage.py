"""The storage initializer of the twin's model Pods: `python -m twin.storage SRC_URI DEST_PATH`, the arguments of
KServe's storage-initializer container.

gs:// is read from the twin's object store (twin/objectstore.py): the twin has no Google Cloud Storage. A URI
with no object fails the way KServe's storage initializer fails on GCS ("Failed to fetch model. No model found
in <uri>.", exit code 1), so the init container and the InferenceService report it.
s3:// is downloaded by KServe's own storage code (kserve-storage) from the twin's S3 store (twin/s3store.py), or
any endpoint the InferenceService's credentials name; its errors are KServe's.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from twin import faults
from twin.objectstore import ObjectStore


def download(uri: str, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    if uri.startswith("gs://"):
        store = ObjectStore(Path(os.environ["TWIN_OBJECT_STORE"]))
        src = store.path_for(uri, wrong=faults.active(os.environ.get("TWIN_FAULTS_FILE"), "predict-wrong"))
        files = [p for p in src.rglob("*") if p.is_file()] if src.is_dir() else ([src] if src.is_file() else [])
        if not files:
            raise RuntimeError(f"Failed to fetch model. No model found in {uri}.")
        for f in files:
            target = dest / (f.relative_to(src) if src.is_dir() else f.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            print(f"Downloading: {target}", flush=True)
        return len(files)
    if uri.startswith("s3://"):
        # KServe's own storage code (PyPI kserve-storage), with the env the KServe controller gave this container
        # from the ServiceAccount's Secret: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
        from kserve_storage import Storage
        Storage.download(uri, str(dest))
        files = [p for p in dest.rglob("*") if p.is_file()]
        for f in files:
            print(f"Downloading: {f}", flush=True)
        return len(files)
    raise RuntimeError(f"Cannot recognize storage type for {uri}; the twin has gs:// (simulated) and s3:// "
                       "(its S3 store) only")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m twin.storage SRC_URI DEST_PATH", file=sys.stderr)
        return 2
    uri, dest = argv
    print(f"Initializing, args: src_uri [{uri}] dest_path[ [{dest}]", flush=True)
    try:
        count = download(uri, Path(dest))
    except Exception as e:  # noqa: BLE001 - the initializer's failure is its exit code and last log line
        print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"Successfully copied {uri} to {dest} ({count} files)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
