"""The sign-off document, typed: what reports/evaluation.py decides and reports/signoff_render.py shows.

`SignOff.to_data()` is signoff.json (its field names and shapes are the file's contract: CI jobs and the self-tests
read it); the parts a run recorded (cluster, suite, runner, pods, install, simulation, ...) are stack/record.py's own
types, carried over unchanged. Every string in a SignOff from reports.evaluation.evaluate is already redacted.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stack.record import (ClusterInfo, Download, Fact, HAPosture, ImageRow, InstallResult, Limitation, NamespaceRow,
                          PodRow, RunnerInfo, Simulation, SuiteInfo, SupportFinding, to_data)
from stack.redact import scrub

# A test's outcome: its Allure status, or what the inventory says of a test without a result.
EXECUTED = ("passed", "failed", "broken")
OUTCOMES = (*EXECUTED, "skipped", "deselected", "not_executed")
OUTCOME_LABEL = {"passed": "passed", "failed": "failed", "broken": "broken", "skipped": "skipped",
                 "deselected": "deselected", "not_executed": "not executed"}
# A criterion's status, and how a report says it.
PASSED, FAILED, NOT_RUN = "passed", "failed", "not-run"
STATUS_LABEL = {PASSED: "PASS", FAILED: "FAIL", NOT_RUN: "NOT RUN"}


@dataclass
class CriterionResult:
    id: str
    title: str
    status: str                     # passed | failed | not-run
    applicable: bool
    tests: list[str]                # the ids of the tests that prove it (inventory and results)
    reason: str | None              # not run: why; failed: which tests (and their blockers)
    blocked_by: list[str] = field(default_factory=list)    # failed: the criteria of the components its tests needed


@dataclass
class TestResult:
    id: str
    title: str
    outcome: str                    # OUTCOMES
    criteria: list[str]
    detail: str | None = None       # skipped: the reason

    @property
    def outcome_text(self) -> str:
        return OUTCOME_LABEL[self.outcome] + (f": {self.detail}" if self.detail else "")


@dataclass
class Failure:
    id: str
    name: str
    title: str
    status: str                     # failed | broken
    category: str                   # reports.categories title
    category_source: str            # recorded (by its check) | message (classified by its text)
    criteria: list[str]
    message: str
    blocked_by: str | None = None
    root_cause: str | None = None


@dataclass
class EvidenceRow:
    id: str
    what: str
    status: str                     # the test's Allure status
    criteria: list[str]
    facts: list[Fact]


@dataclass
class PhaseRow:
    name: str
    seconds: float
    budget: float | None
    over_budget: bool
    finished: bool
    error_type: str | None
    status: str                     # ok | OVER BUDGET | TIMED OUT | DID NOT FINISH

    @property
    def status_text(self) -> str:
        if self.status == "DID NOT FINISH" and self.error_type:
            return f"DID NOT FINISH ({self.error_type})"
        return self.status


@dataclass
class RetryReason:
    reason: str                     # "layer: reason"
    count: int


@dataclass
class Retries:
    total: int = 0
    by_layer: dict[str, int] = field(default_factory=dict)
    top_reasons: list[RetryReason] = field(default_factory=list)


@dataclass
class Inventory:
    expected: int
    executed: int
    missing: list[str]
    skipped: list[str]
    deselected: list[str]
    not_executed: list[str]
    outside: list[str]              # results of tests the inventory does not hold
    found: bool                     # False: no inventory file, the expected tests are unknown


@dataclass
class ResultCounts:
    """Every test once: the outcomes add up to the total (the inventory, and results outside it)."""
    total: int = 0
    passed: int = 0
    failed: int = 0
    broken: int = 0
    skipped: int = 0
    deselected: int = 0
    not_executed: int = 0


@dataclass
class SignOff:
    verdict: str                    # PASS | FAIL | INCOMPLETE | ERROR
    verdict_reasons: list[str]
    simulated: bool | None
    profile: str | None
    profile_path: str | None
    versions: dict[str, str]
    running_versions: dict[str, str | None]
    cluster: ClusterInfo
    suite: SuiteInfo | None
    runner: RunnerInfo | None
    started: str | None
    finished: str | None
    duration_seconds: float | None
    criteria: list[CriterionResult]
    inventory: Inventory
    tests: list[TestResult]
    phases: list[PhaseRow]
    namespaces: list[NamespaceRow]
    pods: list[PodRow]
    images: list[ImageRow]
    downloads: list[Download]
    limitations: list[Limitation]
    support: SupportFinding | None
    simulation: Simulation | None
    install: InstallResult | None
    failures: list[Failure]
    evidence: list[EvidenceRow]
    retries: Retries
    run_errors: list[str]
    results: ResultCounts
    ha: HAPosture | None = None     # the stack's HA posture at the run's end (stack/ha.py), AC-HA required or not
    bundle_sha256: str | None = None
    generated: str | None = None

    def criterion(self, criterion_id: str) -> CriterionResult | None:
        return next((c for c in self.criteria if c.id == criterion_id), None)

    def to_data(self) -> dict:
        """signoff.json's content."""
        return to_data(self)


def redacted(value: Any) -> Any:
    """A copy of a document value (dataclasses, dicts, lists) with every string passed through stack.redact.scrub."""
    if isinstance(value, str):
        return scrub(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: redacted(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {redacted(k): redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(v) for v in value)
    return value
