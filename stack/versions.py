"""Component versions: how the running one is read (the profile's version_probe) and when two are the same.

The installers decide skip/upgrade with these and the sign-off reports them, so both read a version the same way.
"""
from __future__ import annotations


def normalise_version(version: str | None) -> str | None:
    """"1.11.0" and "v1.11.0" are the same version."""
    if version is None:
        return None
    v = str(version).strip()
    return v if v.startswith("v") or not v[:1].isdigit() else "v" + v


def same_version(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and normalise_version(a) == normalise_version(b)


def image_tag(image: str) -> str | None:
    """The tag of an image reference ("repo/name:tag@sha256:..." -> "tag"); the digest when there is no tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return f"@{digest}" if digest else None


def running_version(kube, probe: dict) -> str | None:
    """The running version per a profile's version_probe, normalised ("v1.11.0"); None when absent."""
    dep = kube.get("apps/v1", "Deployment", probe["deployment"], probe["namespace"])
    if dep is None:
        return None
    if probe.get("label"):
        return normalise_version(((dep.get("metadata") or {}).get("labels") or {}).get(probe["label"]))
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    wanted = probe.get("container")
    for c in containers:
        if wanted is None or c.get("name") == wanted:
            return normalise_version(image_tag(c.get("image", "")))
    return None
