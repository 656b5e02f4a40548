"""Stack profiles: load profiles/*.yaml, validate them against the schema, and answer questions about them.

A profile is data only. Code asks the profile for versions, object names and budgets; it never hard-codes them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import jsonschema
import yaml

from stack.autoscaling import SERVERLESS_MODES
from stack.criteria import BY_ID, RunFacts
from stack.mesh import rules_without_a_principal

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
SCHEMA_PATH = Path(__file__).resolve().parent / "profile_schema.yaml"

# Install order when profiles do not say otherwise: each component after those it depends on.
COMPONENT_ORDER = ("cert-manager", "istio", "knative", "kserve")
DEFAULT_DEPENDENCIES = {
    "cert-manager": [],
    "istio": [],
    "knative": ["istio"],
    "kserve": ["cert-manager", "knative"],
}


class ProfileError(Exception):
    """A profile that cannot be used, with the file and the field at fault."""

    def __init__(self, message: str, path: Path | None = None, field: str | None = None):
        self.path, self.field = path, field
        where = f"profile {path}" if path else "profile"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


def available_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_profile_path(name_or_path: str, directory: Path = PROFILES_DIR) -> Path:
    """A profile is named (profiles/NAME.yaml) or given as a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise ProfileError(f"file not found: {candidate}")
        return candidate.resolve()     # absolute: the twin's stand-ins read it from another working directory
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(available_profiles(directory)) or "(none)"
        raise ProfileError(f"unknown profile '{name_or_path}'; available profiles: {names}")
    return path


def _schema() -> dict:
    with SCHEMA_PATH.open() as f:
        return yaml.safe_load(f)


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate(data: Any, path: Path | None = None) -> None:
    if not isinstance(data, dict):
        raise ProfileError("must be a YAML mapping", path)
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        first = errors[0]
        # For "additionalProperties" the offending key is in the message, not in the path.
        raise ProfileError(first.message, path, _field_path(first))
    _validate_semantics(data, path)


def _validate_semantics(data: dict, path: Path | None) -> None:
    k = data["kubernetes"]
    if _minor(k["min"]) > _minor(k["max"]):
        raise ProfileError(f"min {k['min']} is above max {k['max']}", path, "kubernetes")
    components = data["components"]
    for name, comp in components.items():
        for dep in comp.get("depends_on", []):
            if dep == name:
                raise ProfileError("a component cannot depend on itself", path, f"components.{name}.depends_on")
        install = comp["install"]
        if not install.get("helm") and not install.get("manifests"):
            raise ProfileError("needs helm releases or manifests", path, f"components.{name}.install")
    for index, criterion in enumerate(data.get("require", [])):
        if criterion not in BY_ID or not BY_ID[criterion].needs:
            optional = ", ".join(c.id for c in BY_ID.values() if c.needs)
            raise ProfileError(f"{criterion} is not an optional criterion (those are: {optional})", path,
                               f"require.{index}")
    rules = (data.get("authorization_policy") or {}).get("rules", [])
    open_rules = rules_without_a_principal(rules)
    if open_rules:
        raise ProfileError("lets in a request without a principal: name principals or namespaces in each from.source",
                           path, f"authorization_policy.rules.{open_rules[0]}")
    if "AC-MESH-AUTHZ" in data.get("require", []) and not rules:
        raise ProfileError("requires AC-MESH-AUTHZ but declares no authorization_policy", path, "require")
    for name, comp in components.items():
        deployments = {f"{d['namespace']}/{d['name']}" for d in comp["inventory"].get("deployments", [])}
        for index, entry in enumerate(comp.get("ha", [])):
            if entry["workload"] not in deployments:
                raise ProfileError(f"{entry['workload']} is not a Deployment of the component's inventory", path,
                                   f"components.{name}.ha.{index}.workload")
    if "AC-HA" in data.get("require", []) and not any(comp.get("ha") for comp in components.values()):
        raise ProfileError("requires AC-HA but no component lists its HA workloads under ha:", path, "require")
    if "AC-MONITORS" in data.get("require", []) and not data.get("monitors"):
        raise ProfileError("requires AC-MONITORS but declares no monitors: list them under monitors:", path, "require")
    if "kserve" in components and "iris" not in data:
        raise ProfileError("a profile with kserve needs the 'iris' check settings", path, "iris")
    # Install gates name webhook configurations; their Services come from the inventory, so each must be there.
    known = {w["name"] for comp in components.values() for w in comp["inventory"].get("webhooks", [])}
    for name, comp in components.items():
        steps = [("manifests", i, m) for i, m in enumerate(comp["install"].get("manifests", []))] + \
                [("patches", i, p) for i, p in enumerate(comp["install"].get("patches", []))]
        for key, index, step in steps:
            unknown = [w for w in step.get("needs_webhooks") or [] if w not in known]
            if unknown:
                raise ProfileError(f"needs_webhooks names {', '.join(unknown)}, which no component's inventory "
                                   "webhooks list", path, f"components.{name}.install.{key}.{index}.needs_webhooks")


def _minor(version: str) -> int:
    return int(version.split(".")[1])


class WorkloadRef(NamedTuple):
    kind: str          # Deployment | DaemonSet
    namespace: str
    name: str
    min_replicas: int = 1   # the inventory's `replicas:` (the fewest the profile expects; a DaemonSet may expect 0)
    data_path: bool = True  # serving a model needs it (the inventory's `data_path:`)


class MonitorRef(NamedTuple):
    """A Prometheus Operator monitor the profile's cluster must hold (`monitors:`, AC-MONITORS)."""
    kind: str             # ServiceMonitor or PodMonitor
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class LeaseRef:
    namespace: str
    name: str               # a name, or a pattern with `*` (Knative's buckets: `controller.*`)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class HAWorkload:
    """One workload a profile's `ha:` section lists (AC-HA, stack/ha.py)."""
    component: str
    namespace: str
    name: str
    replicas: int
    leases: tuple[LeaseRef, ...] = ()
    why: str | None = None          # upstream's words, as the profile cites them

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Component:
    name: str
    data: dict

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def inventory(self) -> dict:
        return self.data["inventory"]

    @property
    def workloads(self) -> list[WorkloadRef]:
        """The inventory's Deployments, then its DaemonSets."""
        inv = self.inventory
        return [WorkloadRef(kind, w["namespace"], w["name"], w.get("replicas", 1), w.get("data_path", True))
                for kind, key in (("Deployment", "deployments"), ("DaemonSet", "daemonsets"))
                for w in inv.get(key, [])]

    @property
    def ha_workloads(self) -> list[HAWorkload]:
        """The workloads its `ha:` section says must be highly available (AC-HA)."""
        out = []
        for entry in self.data.get("ha", []):
            namespace, name = entry["workload"].split("/", 1)
            leases = tuple(LeaseRef(*ref.split("/", 1)) for ref in entry.get("leases", []))
            out.append(HAWorkload(self.name, namespace, name, entry["replicas"], leases, entry.get("why")))
        return out

    @property
    def helm_releases(self) -> list[dict]:
        return self.data["install"].get("helm", [])

    @property
    def manifests(self) -> list[dict]:
        return self.data["install"].get("manifests", [])

    @property
    def objects(self) -> list[dict]:
        return self.data["install"].get("objects", [])

    @property
    def patches(self) -> list[dict]:
        return self.data["install"].get("patches", [])

    @property
    def version_probe(self) -> dict:
        return self.data["version_probe"]

    @property
    def unpinned_digests(self) -> list[str]:
        """The inventory's images pinned by name with any digest (`@sha256:*`): where the release's digests are not
        in the profile (Knative's release YAMLs pin digests that ko resolves at release time)."""
        return sorted({image for key in ("deployments", "daemonsets") for w in self.inventory.get(key, [])
                       for image in w["containers"].values() if image.endswith("@sha256:*")})

    @property
    def readiness_gates(self) -> dict:
        return self.data.get("readiness_gates", {})

    @property
    def admission_probes(self) -> list[dict]:
        return self.data.get("admission_probes", [])

    @property
    def depends_on(self) -> list[str]:
        return self.data.get("depends_on", DEFAULT_DEPENDENCIES.get(self.name, []))


class Profile:
    def __init__(self, data: dict, path: Path | None = None):
        validate(data, path)
        self.data = data
        self.path = path

    @classmethod
    def load(cls, name_or_path: str, directory: Path = PROFILES_DIR) -> "Profile":
        path = resolve_profile_path(name_or_path, directory)
        try:
            with path.open() as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ProfileError(f"is not valid YAML: {e}", path) from None
        return cls(data, path)

    def requiring(self, criteria: list[str]) -> "Profile":
        """This profile with more optional criteria required (the run's --require), validated as its own `require:`."""
        extra = [c for c in criteria if c not in self.required_criteria]
        if not extra:
            return self
        return Profile({**self.data, "require": [*self.data.get("require", []), *extra]}, self.path)

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def kind(self) -> dict:
        return self.data["kind"]

    @property
    def kubernetes_range(self) -> tuple[str, str]:
        k = self.data["kubernetes"]
        return k["min"], k["max"]

    @property
    def kubernetes_statements(self) -> dict[str, str]:
        """component -> its own Kubernetes support statement (the tested range is their intersection)."""
        return dict(self.data["kubernetes"]["statements"])

    def supports_kubernetes(self, server_minor: int) -> bool:
        lo, hi = self.kubernetes_range
        return _minor(lo) <= server_minor <= _minor(hi)

    @property
    def budgets(self) -> dict[str, float]:
        return self.data["budgets"]

    @property
    def iris(self) -> dict | None:
        return self.data.get("iris")

    @property
    def serverless(self) -> bool:
        """The profile's InferenceServices are Knative-served (Serverless, or 0.20's name Knative)."""
        return (self.iris or {}).get("deployment_mode") in SERVERLESS_MODES

    def facts(self, given: frozenset[str] = frozenset()) -> RunFacts:
        """What decides which criteria apply, from this profile and what the run was given (stack.criteria.GIVEN):
        the monitors and the authorization policy come from the profile itself."""
        mine = {"monitors"} if self.monitors else set()
        mine |= {"authorization_policy"} if self.authorization_rules else set()
        return RunFacts(frozenset(self.components), self.required_criteria, self.serverless, frozenset(given) | mine)

    @property
    def strict_mtls(self) -> bool:
        """The profile requires the mesh's STRICT mTLS to be proven (AC-MESH-MTLS in `require:`): a cluster set up
        for it runs the mesh STRICT."""
        return "AC-MESH-MTLS" in self.required_criteria

    @property
    def required_criteria(self) -> frozenset[str]:
        """The optional criteria this profile's sign-off requires (`require:`)."""
        return frozenset(self.data.get("require", []))

    def ha_workloads(self) -> list[HAWorkload]:
        """Every component's `ha:` workloads (AC-HA), in install order."""
        return [w for component in self.install_order() for w in component.ha_workloads]

    @property
    def monitors(self) -> list[MonitorRef]:
        return [MonitorRef(m["kind"], m["namespace"], m["name"]) for m in self.data.get("monitors", [])]

    @property
    def authorization_rules(self) -> list[dict]:
        """The ALLOW rules of the AuthorizationPolicy AC-MESH-AUTHZ puts on a model ([]: none declared)."""
        return (self.data.get("authorization_policy") or {}).get("rules", [])

    @property
    def image_overrides(self) -> dict[str, str]:
        return self.data.get("image_overrides", {})

    def released_image(self, pinned: str) -> str | None:
        """The image the release itself names, where the profile pins an override of it (else None)."""
        return next((original for original, override in self.image_overrides.items() if override == pinned), None)

    def retired_registry(self, image: str) -> str | None:
        """Why the registry of `image` no longer serves it (the profile's note), or None."""
        return next((r["note"] for r in self.data.get("retired_registries", []) if image.startswith(r["prefix"])),
                    None)

    @property
    def registry_overrides(self) -> dict[str, str]:
        return self.data.get("registry_overrides", {})

    @property
    def known_limitations(self) -> list[dict]:
        return self.data.get("known_limitations", [])

    @cached_property
    def components(self) -> dict[str, Component]:
        return {name: Component(name, data) for name, data in self.data["components"].items()}

    def has(self, component: str) -> bool:
        return component in self.components

    def versions(self) -> dict[str, str]:
        return {name: c.version for name, c in self.components.items()}

    def install_order(self) -> list[Component]:
        """Components in dependency order; dependencies the profile does not hold are assumed present."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered or name not in self.components:
                return
            if name in visiting:
                raise ProfileError(f"dependency cycle through {name}", self.path, "components")
            visiting.add(name)
            for dep in self.components[name].depends_on:
                visit(dep)
            visiting.discard(name)
            ordered.append(name)

        for name in sorted(self.components, key=lambda n: COMPONENT_ORDER.index(n)):
            visit(name)
        return [self.components[n] for n in ordered]

    # Inventory, merged over components: what suites assert and what the twin is seeded from.
    def inventory(self, key: str) -> Iterator[tuple[str, Any]]:
        for comp in self.install_order():
            for item in comp.inventory.get(key, []):
                yield comp.name, item

    @property
    def gateway(self) -> dict | None:
        for comp in self.components.values():
            if "gateway" in comp.inventory:
                return comp.inventory["gateway"]
        return None
