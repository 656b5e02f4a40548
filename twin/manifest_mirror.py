"""A file:// mirror of a profile's release manifests for the twin (which has no internet).

`write_mirror(profile, directory)` writes, for every manifest URL of every component, `<directory>/<host>/<path>`
holding YAML of that file's objects as twin/upstream.py gives them (upstream's own file where at hand, else objects
synthesised from the profile inventory and split over the component's files as the real releases are). It returns
the file:// base URL to put in KSTACK_MANIFEST_MIRROR (the installers fetch <mirror>/<host>/<path>).
"""
from __future__ import annotations

import urllib.parse
from pathlib import Path

import yaml

from twin.upstream import manifest_files



def mirror_path(directory: str | Path, url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    return Path(directory) / parts.netloc / parts.path.lstrip("/")


def write_mirror(profile, directory: str | Path) -> str:
    """Write every manifest URL of the profile: upstream's own file where at hand, else synthesised objects."""
    directory = Path(directory).resolve()
    for comp in profile.install_order():
        if not comp.manifests:
            continue
        files, _ = manifest_files(profile, comp.name)
        for url, objs in files.items():
            path = mirror_path(directory, url)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.dump_all(objs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False) if objs else "")
    return directory.as_uri()
