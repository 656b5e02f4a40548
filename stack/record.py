"""The typed record of a run, and the ONE place it is written and read.

A run leaves, in its allure-results directory:
- `kstack-run.json`                 RunRecord: metadata, cluster, install result, final cluster state (controller)
- `kstack-phases-<worker>.jsonl`    Phase per line
- `kstack-inventory-<worker>.json`  [InventoryEntry]: every collected acceptance test, recorded before -k/-m
                                    deselection, each marked when deselection then left it out
- `kstack-failures-<worker>.jsonl`  FailedTest per line: the structured category of each failed test
- `kstack-retries-<worker>.jsonl`   Retry per line: every retry the process made, by layer
- `kstack-evidence-<worker>.jsonl`  Evidence per line: what each check saw that proves it (also attached to Allure)
- `kstack-install/`                 the install's diagnostics (Plan.diagnostics()) when it failed
and, in the run's work directory, the cluster handoff (`cluster.json`) and the install result (`install.json`) that
the controller hands to the xdist workers.

`read_results_record(dir)` gives all of it back as typed values; reports render that and parse no message texts.
Files carry `schema_version`; a record of another version is refused with a clear reason rather than misread.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stack.s3 import S3Settings

# Bumped when a record of the previous version can no longer be read as this one. A field added with a default keeps
# older records readable (an old run's suite, runner and nodes read as unknown), so it needs no bump.
SCHEMA_VERSION = 1

RUN_FILE = "kstack-run.json"
INSTALL_DIAGNOSTICS_DIR = "kstack-install"
HANDOFF_FILE = "cluster.json"
INSTALL_FILE = "install.json"

T = TypeVar("T")


# -- the record's parts -------------------------------------------------------------------------------------------------
@dataclass
class Download:
    url: str
    sha256: str | None
    pinned: bool


@dataclass
class SimulatedPart:
    """One part of a simulated cluster and what runs for it."""
    name: str            # e.g. "kube-apiserver", "kserve/kserve-controller-manager", "ingress gateway"
    kind: str            # "real" (the upstream binary or file), "stand-in" (the twin's code), "simulated"
    detail: str          # its version, or why it is not the real one


@dataclass
class Simulation:
    """What a twin is made of, for the sign-off of a twin run: never evidence about a real cluster."""
    control_plane: dict[str, str] = field(default_factory=dict)     # binary -> version it reports
    parts: list[SimulatedPart] = field(default_factory=list)
    limitations: list["Limitation"] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)     # the twin faults active when the cluster was handed over
    scenario: str | None = None     # the cluster's history the twin made (twin/scenarios.py), e.g. "first-user"


@dataclass
class SupportFinding:
    """The cluster's Kubernetes is outside the profile's tested range (the intersection of its components' support
    statements): verified all the same, and said in every report (--outside-tested-range fail stops the run instead)."""
    server_version: str
    tested_range: str                # "1.25-1.27"
    profile: str
    statements: dict[str, str] = field(default_factory=dict)   # component -> its own statement, with its source

    def sentence(self) -> str:
        return (f"Kubernetes {self.server_version} is outside profile '{self.profile}''s tested range "
                f"{self.tested_range}: the stack was verified all the same, on a version its components do not state "
                f"support for")


@dataclass
class WorkspaceGrant:
    """The role the suite binds to its own identity in each test namespace it creates (stack/rbac.py), when that
    identity holds the workspace permissions nowhere else (the shipped least-privilege role)."""
    role: str
    subject_kind: str                # ServiceAccount | User
    subject_name: str
    subject_namespace: str | None = None


@dataclass
class ClusterHandoff:
    """What the controller hands to every worker about the cluster it provisioned."""
    provider: str
    kubeconfig: str
    context: str | None
    simulated: bool
    ingress_url: str | None = None
    node_image: str | None = None
    cluster_name: str | None = None
    created: bool = False
    server_version: str | None = None
    downloads: list[Download] = field(default_factory=list)
    # Environment the installers need on this cluster (the twin's helm stand-in and manifest mirror).
    install_env: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    simulation: Simulation | None = None        # the twin's own account of itself
    workspace: WorkspaceGrant | None = None     # existing clusters: bound in each test namespace (None: not needed)
    s3: S3Settings | None = None                # the twin's own S3 store (else the run's KSTACK_S3_* settings)
    support: SupportFinding | None = None       # the server's Kubernetes outside the profile's tested range


@dataclass
class ComponentResult:
    name: str
    action: str                      # installed | upgraded | reapplied | skipped | none
    seconds: float
    wanted: str
    found: str | None                # running version before the install (None: absent)
    detail: str = ""


@dataclass
class InstallFailure:
    component: str | None            # None: before any component (version reads, options)
    step: str                        # e.g. "manifest serving-core.yaml", "helm istiod", "ready"
    error_type: str                  # the exception's class name
    message: str
    category: str                    # stack.failures.Category value of the cause
    diagnostics: list[str] = field(default_factory=list)   # files under INSTALL_DIAGNOSTICS_DIR in the results dir


@dataclass
class InstallResult:
    ok: bool
    mode: str
    seconds: float = 0.0
    budget: float = 0.0
    components: list[ComponentResult] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    failure: InstallFailure | None = None
    skipped: str | None = None       # why nothing was installed ("install never")


@dataclass
class Phase:
    name: str
    seconds: float
    budget: float | None
    # False: the phase raised (its deadline ran out, or any other error) and `seconds` is how long it ran until then.
    finished: bool = True
    error_type: str | None = None    # the class name of what it raised


@dataclass
class InventoryEntry:
    id: str
    nodeid: str
    criteria: list[str]
    deselected: bool = False         # left out by -k/-m (pytest_deselected): not run by choice, not by failure


@dataclass
class FailedTest:
    id: str                          # the test's stable id (AS_ID)
    nodeid: str
    when: str                        # setup | call | teardown
    error_type: str
    category: str | None             # None: a foreign exception without a structured category
    blocked_by: str | None = None    # the criterion of a component it needed that was not running (stack/blocking.py)
    root_cause: str | None = None    # what that component showed when the test failed


@dataclass
class Fact:
    name: str                        # "response", "SANs", "webhook cert-manager-webhook"
    value: str                       # redacted, bounded (EVIDENCE_VALUE_LIMIT)


@dataclass
class Evidence:
    """What a check saw that proves it: a predict call's request and response, an issued certificate's fields, a
    webhook's answers, the CRDs' served versions, the running images. Recorded for passes as for failures."""
    id: str                          # the test's stable id
    what: str                        # "predict v1", "issued certificate", ...
    facts: list[Fact]


EVIDENCE_VALUE_LIMIT = 2000


@dataclass
class Retry:
    layer: str                       # api | watch | probe | install | download | helm | predict | rbac
    what: str
    reason: str
    attempt: int
    delay: float


@dataclass
class NodeRow:
    """A Node as its kubelet reports itself (status.nodeInfo)."""
    name: str
    kubelet_version: str | None
    container_runtime: str | None    # e.g. containerd://1.7.18
    os_image: str | None


@dataclass
class ClusterInfo:
    provider: str | None = None
    server_version: str | None = None
    context: str | None = None
    node_image: str | None = None
    nodes: list[NodeRow] = field(default_factory=list)


@dataclass
class SuiteInfo:
    """The suite that ran (stack/provenance.py)."""
    version: str = "unknown"          # pyproject.toml's project.version
    commit: str = "unknown"           # git HEAD; "unknown" outside a git checkout (a tarball)
    dirty: bool | None = None         # the work tree differs from HEAD; None: unknown
    python: str = "unknown"
    pytest: str = "unknown"


@dataclass
class RunnerInfo:
    """Where it ran (stack/provenance.py)."""
    hostname: str = "unknown"
    ci: str | None = None             # GitHub Actions | GitLab CI | Jenkins | CI; None: not in a known CI
    ci_url: str | None = None         # the CI run (GitHub Actions: this attempt of it)
    ci_attempt: str | None = None     # GitHub Actions' run attempt


@dataclass
class NamespaceRow:
    name: str
    status: str
    age: str


@dataclass
class PodRow:
    namespace: str
    name: str
    ready: str
    status: str
    restarts: int
    age: str


@dataclass
class ImageRow:
    component: str
    namespace: str
    workload: str
    container: str
    image: str
    digest: str | None


@dataclass
class Limitation:
    id: str
    text: str


@dataclass
class HAWorkloadRow:
    """One workload of the HA posture table (stack/ha.py), as the run saw it at its end."""
    workload: str                    # namespace/name
    replicas: str                    # Ready of wanted: "1/2", or "absent"
    nodes: str                       # the nodes of its Ready Pods
    budgets: str                     # PodDisruptionBudgets over it, with what they allow now
    leases: str                      # leader Leases, their holders and when they were renewed
    age: str                         # of its oldest Ready Pod


@dataclass
class HAWebhookRow:
    webhook: str                     # Kind/configuration webhook
    failure_policy: str
    service: str | None
    ready_endpoints: int
    guards: list[str]


@dataclass
class HAPosture:
    """The stack's HA posture (every run records it; AC-HA judges it where required) and what is not HA in it."""
    workloads: list[HAWorkloadRow] = field(default_factory=list)
    webhooks: list[HAWebhookRow] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


@dataclass
class CriterionApplicability:
    id: str
    title: str
    applicable: bool
    reason: str | None


@dataclass
class RunRecord:
    simulated: bool
    profile: str | None                 # None: the run stopped before its profile was loaded (bad options)
    profile_path: str | None = None
    versions: dict[str, str] = field(default_factory=dict)                 # from the profile
    running_versions: dict[str, str | None] = field(default_factory=dict)  # read from the cluster
    cluster: ClusterInfo = field(default_factory=ClusterInfo)
    started: str | None = None
    finished: str | None = None
    duration_seconds: float | None = None
    namespaces: list[NamespaceRow] = field(default_factory=list)
    pods: list[PodRow] = field(default_factory=list)
    images: list[ImageRow] = field(default_factory=list)
    limitations: list[Limitation] = field(default_factory=list)
    criteria: list[CriterionApplicability] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    install: InstallResult | None = None
    simulation: Simulation | None = None
    errors: list[str] = field(default_factory=list)   # what could not be read from the cluster at the end
    support: SupportFinding | None = None             # the cluster's Kubernetes outside the profile's tested range
    suite: SuiteInfo = field(default_factory=SuiteInfo)
    runner: RunnerInfo = field(default_factory=RunnerInfo)
    ha: HAPosture | None = None                       # None: no profile HA section, or not read
    schema_version: int = SCHEMA_VERSION


@dataclass
class ResultsRecord:
    """Everything a run left in its results directory, typed."""
    run: RunRecord | None
    run_problem: str | None                          # why `run` is None
    phases: list[Phase]
    inventory: list[InventoryEntry]
    inventory_found: bool
    failures: list[FailedTest]
    retries: list[Retry]
    evidence: list[Evidence] = field(default_factory=list)


# -- generic (de)serialisation ------------------------------------------------------------------------------------------
class RecordError(ValueError):
    """A record file that cannot be read as this schema version."""


def to_data(value: Any) -> Any:
    """Plain JSON data of a record value (dataclasses, lists, dicts, scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    return value


def from_data(cls: type[T], data: Any) -> T:
    """The typed value of `cls` from JSON data; unknown keys are ignored, missing ones take their defaults."""
    return _convert(cls, data, cls.__name__)


def _convert(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return _convert(args[0], data, where)
    if origin is list:
        if not isinstance(data, list):
            raise RecordError(f"{where}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(data).__name__}")
        _, value_type = typing.get_args(tp)
        return {str(k): _convert(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}: field {f.name!r} is missing")
        return tp(**kwargs)
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if tp in (str, int, float, bool) and not isinstance(data, tp):
        raise RecordError(f"{where}: expected {tp.__name__}, got {type(data).__name__}")
    return data


def _dump(value: Any) -> str:
    return json.dumps(to_data(value), indent=1, default=str)


_append_lock = threading.Lock()


def _append(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_data(value), separators=(",", ":"), default=str) + "\n"
    with _append_lock, path.open("a", encoding="utf-8") as f:
        f.write(line)


def _read_lines(paths: list[Path], cls: type[T]) -> list[T]:
    out: list[T] = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(from_data(cls, json.loads(line)))
            except (ValueError, RecordError):
                continue     # a torn last line of a process that was killed
    return out


# -- files of the results directory -------------------------------------------------------------------------------------
def phases_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"kstack-phases-{worker}.jsonl"


def inventory_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"kstack-inventory-{worker}.json"


def failures_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"kstack-failures-{worker}.jsonl"


def retries_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"kstack-retries-{worker}.jsonl"


def evidence_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"kstack-evidence-{worker}.jsonl"


def write_run(results_dir: Path, run: RunRecord) -> Path:
    path = Path(results_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump(run) + "\n", encoding="utf-8")
    return path


def read_run(results_dir: Path) -> RunRecord:
    """The RunRecord; raises RecordError (a sentence) when it is missing, unreadable or of another schema."""
    path = Path(results_dir) / RUN_FILE
    if not path.is_file():
        raise RecordError(f"{RUN_FILE} is missing: the run did not finish or its metadata was not written")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecordError(f"{RUN_FILE} is unreadable: {e}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{RUN_FILE} is unreadable: not a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{RUN_FILE} has schema version {version}, this reader reads version {SCHEMA_VERSION}")
    try:
        return from_data(RunRecord, data)
    except RecordError as e:
        raise RecordError(f"{RUN_FILE} is unreadable: {e}") from None


def append_phase(results_dir: Path, worker: str, phase: Phase) -> None:
    _append(phases_file(results_dir, worker), phase)


def write_inventory(results_dir: Path, worker: str, entries: list[InventoryEntry]) -> Path:
    path = inventory_file(results_dir, worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump(entries) + "\n", encoding="utf-8")
    return path


def append_failure(results_dir: Path, worker: str, failure: FailedTest) -> None:
    _append(failures_file(results_dir, worker), failure)


def append_retry(results_dir: Path, worker: str, retry: Retry) -> None:
    _append(retries_file(results_dir, worker), retry)


def append_evidence(results_dir: Path, worker: str, evidence: Evidence) -> None:
    _append(evidence_file(results_dir, worker), evidence)


def read_inventory(results_dir: Path) -> tuple[list[InventoryEntry], bool]:
    """Inventory entries merged over workers by id (criteria united), and whether any inventory file was found."""
    merged: dict[str, InventoryEntry] = {}
    found = False
    for path in sorted(Path(results_dir).glob("kstack-inventory-*.json")):
        try:
            entries = from_data(list[InventoryEntry], json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, RecordError):
            continue
        found = True
        for e in entries:
            have = merged.setdefault(e.id, InventoryEntry(e.id, e.nodeid, [], deselected=e.deselected))
            have.criteria += [c for c in e.criteria if c not in have.criteria]
            have.deselected = have.deselected and e.deselected    # run by any worker that selected it
    return list(merged.values()), found


def read_results_record(results_dir: Path) -> ResultsRecord:
    results_dir = Path(results_dir)
    try:
        run, problem = read_run(results_dir), None
    except RecordError as e:
        run, problem = None, str(e)
    inventory, found = read_inventory(results_dir)
    return ResultsRecord(
        run=run, run_problem=problem,
        phases=_read_lines(sorted(results_dir.glob("kstack-phases-*.jsonl")), Phase),
        inventory=inventory, inventory_found=found,
        failures=_read_lines(sorted(results_dir.glob("kstack-failures-*.jsonl")), FailedTest),
        retries=_read_lines(sorted(results_dir.glob("kstack-retries-*.jsonl")), Retry),
        evidence=_read_lines(sorted(results_dir.glob("kstack-evidence-*.jsonl")), Evidence))


# -- the controller's handoff to the workers (in the run's work directory) ----------------------------------------------
def write_handoff(workdir: Path, handoff: ClusterHandoff, path: Path | None = None) -> Path:
    """The handoff as `workdir`/cluster.json, or at `path`; readable by its owner only (it may hold the twin's S3
    key pair)."""
    path = Path(path) if path is not None else Path(workdir) / HANDOFF_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "cluster": to_data(handoff),
                                "workdir": str(workdir)}), encoding="utf-8")
    return path


def read_handoff(path: Path) -> tuple[ClusterHandoff, Path]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return from_data(ClusterHandoff, data["cluster"]), Path(data["workdir"])


# The twin's account of itself on its node, for a run that meets it as `--cluster existing` (through a kubeconfig,
# as the least-privilege verifier, which may read Nodes): its parts, limitations, faults and scenario.
SIMULATION_ANNOTATION = "kstack.io/simulation"


def simulation_annotation(simulation: Simulation) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, "simulation": to_data(simulation)}, sort_keys=True)


def simulation_from_node(node: dict) -> Simulation | None:
    """The Simulation a twin wrote on its node, or None (a real node, or an account of another schema version)."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(SIMULATION_ANNOTATION)
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return None
    return from_data(Simulation, data.get("simulation") or {})


def write_install(workdir: Path, result: InstallResult) -> Path:
    path = Path(workdir) / INSTALL_FILE
    path.write_text(_dump(result), encoding="utf-8")
    return path


def read_install(workdir: Path) -> InstallResult | None:
    path = Path(workdir) / INSTALL_FILE
    if not path.is_file():
        return None
    return from_data(InstallResult, json.loads(path.read_text(encoding="utf-8")))
