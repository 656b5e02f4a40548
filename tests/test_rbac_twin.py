"""The verifier's role on the twin's real kube-apiserver (RBAC on): the whole acceptance suite in `existing` mode passes
as the ServiceAccount bound only to deploy/rbac/verifier.yaml; a rule removed is named by preflight, and nothing
else; an identity with no permissions gets one preflight message; a check meeting a 403 names verb and resource; the
guard policy keeps the verifier's writes in its own namespaces. One twin for the module."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures import preflight
from stack import rbac
from stack.checks import admission_probe, namespaces, workloads
from stack.failures import Category, category_of
from stack.kube import Forbidden, Kube, KubeError
from stack.profile import Profile
from stack.deadline import Deadline
from stack.wait import require, wait_for
from tests.helpers import ROOT, run_pytest

pytestmark = [pytest.mark.slow, pytest.mark.twin, pytest.mark.xdist_group("rbac-twin")]   # one worker: its twin

# The seed stack, accepted on the twin's v1.34 kube-apiserver (seed's own range is 1.25-1.27; the twin has one
# control plane for every profile: twin/toolchain.yaml), requiring the mesh's security too, so that the verifier
# runs the mesh checks (the twin secures its mesh for such a profile: STRICT, the activator injected).
PROFILE = "seed"
MANAGED = "app.kubernetes.io/managed-by=kstack"


def profile_on_the_twin(directory: Path) -> Path:
    data = yaml.safe_load((ROOT / "profiles" / f"{PROFILE}.yaml").read_text())
    data["kubernetes"]["max"] = "1.34"
    data["require"] = ["AC-MESH-MTLS"]
    data["authorization_policy"] = {"rules": [{"from": [{"source": {"namespaces": ["knative-serving"]}}]}]}
    path = directory / f"{PROFILE}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


class Cluster:
    def __init__(self, twin, workdir: Path, profile_path: Path):
        self.twin, self.workdir, self.profile_path = twin, workdir, profile_path
        self.admin = Kube(twin.kubeconfig_path, twin.context)
        self.profile = Profile.load(str(profile_path))
        self.manifest = rbac.Manifest.load()

    def mint(self, name: str, service_account: tuple[str, str] | None = None) -> Path:
        out = self.workdir / f"{name}.kubeconfig"
        rbac.mint_kubeconfig(self.admin, out, admin_kubeconfig=self.twin.kubeconfig_path,
                             admin_context=self.twin.context, service_account=service_account, seconds=3600)
        return out

    def as_user(self, kubeconfig: Path) -> Kube:
        return Kube(kubeconfig, "kstack-verifier")

    def set_role(self, name: str, rules: list[dict]) -> None:
        doc = copy.deepcopy(next(d for d in self.manifest.documents
                                 if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name))
        doc["rules"] = rules
        self.admin.apply(doc)

    def shipped_rules(self, name: str) -> list[dict]:
        return copy.deepcopy(next(d for d in self.manifest.documents
                                  if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name)["rules"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from twin import Twin
    workdir = tmp_path_factory.mktemp("rbac")
    profile_path = profile_on_the_twin(workdir)
    twin = Twin(Profile.load(str(profile_path)), workdir=workdir / "twin").start()
    try:
        c = Cluster(twin, workdir, profile_path)
        # the documented commands, as a cluster admin: apply the role and the guard, mint the verifier's kubeconfig
        applied = subprocess.run([sys.executable, "-m", "stack.rbac", "apply", "--guard", "--kubeconfig",
                                  str(twin.kubeconfig_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert applied.returncode == 0, applied.stderr
        minted = subprocess.run([sys.executable, "-m", "stack.rbac", "kubeconfig", "--kubeconfig",
                                 str(twin.kubeconfig_path), "--out", str(workdir / "verifier.kubeconfig")],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert minted.returncode == 0, minted.stderr
        c.minted_output = minted.stdout + minted.stderr
        c.verifier = workdir / "verifier.kubeconfig"
        c.admin.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "nobody", "namespace": "kstack-verifier"}})
        c.nobody = c.mint("nobody", ("kstack-verifier", "nobody"))
        yield c
    finally:
        twin.stop()


def run_suite(cluster: Cluster, kubeconfig: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_pytest("suites/acceptance", "--cluster", "existing", "--kubeconfig", str(kubeconfig),
                      "--context", "kstack-verifier", "--profile", str(cluster.profile_path), "--alluredir", str(tmp_path / "results"),
                      "--signoff-dir", str(tmp_path / "out"), "-p", "no:randomly", *args,
                      env={"KSTACK_INGRESS_URL": cluster.twin.gateway_url}, timeout=420)


def test_the_minted_kubeconfig_is_private_and_never_printed(cluster):
    token = yaml.safe_load(cluster.verifier.read_text())["users"][0]["user"]["token"]
    assert token and token not in cluster.minted_output
    assert cluster.verifier.stat().st_mode & 0o077 == 0
    assert "kstack-verifier" in cluster.minted_output


def test_the_whole_suite_passes_as_the_verifier_and_uses_what_the_role_grants(cluster, tmp_path):
    import json
    log = cluster.twin.api.request_log
    log.reset()
    proc = run_suite(cluster, cluster.verifier, tmp_path)
    output = proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "out" / "signoff.json").read_text())
    assert doc["verdict"] == "PASS", output[-5000:]
    # every check ran but those of the criteria that do not apply (the optional ones without what they need: S3
    # settings, a Prometheus, declared monitors; those the profile does not require), each skipped with its reason
    inapplicable = sorted({t for c in doc["criteria"] if not c["applicable"] for t in c["tests"]})
    assert doc["inventory"]["missing"] == doc["inventory"]["skipped"] == inapplicable
    assert "inference.test_iris_from_s3" in inapplicable and "availability.test_the_stack_is_highly_available" in \
        inapplicable
    left, _ = cluster.admin.list("v1", "Namespace", label_selector=MANAGED)
    assert [n["metadata"]["name"] for n in left if n["status"].get("phase") != "Terminating"] == []
    # Minimal: every permission of the role was used by this passing run, but those a healthy cluster does not make
    # the checks use. RBAC authorises a server-side apply (the proxy's verb "apply") as a patch, and one that creates
    # as a create too; a patch that creates is authorised as a create; `bind` is authorised on the RoleBinding's
    # create, not requested.
    used = {(e.verb, e.resource) for e in log.entries() if e.status != 403}
    used |= {("patch", r) for v, r in used if v == "apply"}
    used |= {("create", r) for v, r in used if v == "patch"}
    used |= {("bind", "clusterroles")} if ("create", "rolebindings") in used else set()
    only_when = {("list", "events"), ("get", "pods/log"),            # diagnostics of a failed check
                 ("get", "customresourcedefinitions"), ("get", "validatingwebhookconfigurations"),
                 ("get", "mutatingwebhookconfigurations"),
                 ("watch", "customresourcedefinitions"), ("watch", "deployments"),   # waits that the first list
                 ("watch", "daemonsets"), ("watch", "issuers"),                      # already satisfied
                 ("get", "daemonsets"), ("list", "daemonsets"),       # profiles with DaemonSets (latest's KServe node agent)
                 ("get", "services"),                                 # no KSTACK_INGRESS_URL: the gateway's address
                 ("create", "services/proxy"),                        # route service-proxy (latest-standard)
                 ("create", "secrets"), ("patch", "secrets"),         # the S3 variant (KSTACK_S3_*)
                 ("create", "serviceaccounts"), ("patch", "serviceaccounts"),
                 ("get", "horizontalpodautoscalers"),                 # AC-AUTOSCALING in Standard mode
                 ("list", "services")}                                # AC-MONITORS: declared ServiceMonitors
    cluster_wide, workspace = rbac.needed(cluster.manifest, cluster.profile)
    unused = [p for p in cluster_wide + workspace if (p.verb, p.resource) not in used | only_when]
    assert unused == [], f"granted but not used by a passing run: {unused}"
    # nothing refused but the invalid objects of the admission probes (a webhook denies with 403 too)
    assert not [e for e in log.entries() if e.status == 403 and not e.dry_run], "a request was refused"


def test_without_selfsubjectreview_the_verifier_is_known_by_its_token_and_passes_with_the_shipped_role(cluster,
                                                                                                     tmp_path):
    """Kubernetes 1.25 and 1.26 serve no SelfSubjectReview (the twin's API fault no-selfsubjectreview hides it, as
    their discovery does): preflight names the identity from the ServiceAccount token's claims, so the verifier passes
    with exactly the shipped role, and the workspace role bound to it lets a check work in its test namespace."""
    import json
    cluster.twin.set_faults(["no-selfsubjectreview"])
    try:
        log = cluster.twin.api.request_log
        log.reset()
        proc = run_suite(cluster, cluster.verifier, tmp_path, "-k", "test_certificate_roundtrip")
        output = proc.stdout + proc.stderr
        doc = json.loads((tmp_path / "out" / "signoff.json").read_text())
        assert not doc["failures"] and "preflight failed" not in output, output[-4000:]
        roundtrip = next(c for c in doc["criteria"] if c["id"] == "AC-CERT-ROUNDTRIP")
        assert roundtrip["status"] == "passed", output[-4000:]
        # no SelfSubjectReview answered, and the workspace role was bound (to the identity the token names)
        assert not any(e.resource == "selfsubjectreviews" and e.status == 201 for e in log.entries())
        assert any(e.verb == "create" and e.resource == "rolebindings" and e.status == 201 for e in log.entries())
    finally:
        cluster.twin.clear_faults()


def _preflight_without(cluster, role: str, removed) -> preflight.PreflightError:
    """Preflight's error with the first rule of `role` that `removed` selects taken out (put back afterwards)."""
    rules = cluster.shipped_rules(role)
    rule = next(r for r in rules if removed(r))
    try:
        cluster.set_role(role, [r for r in rules if r is not rule])
        with pytest.raises(preflight.PreflightError) as e:
            preflight.check_permissions(cluster.as_user(cluster.verifier), cluster.profile)
    finally:
        cluster.set_role(role, rules)
    return e.value


def test_preflight_names_exactly_a_removed_cluster_wide_rule(cluster):
    error = _preflight_without(cluster, rbac.VERIFIER_ROLE, lambda r: r["resources"] == ["customresourcedefinitions"])
    listed = [line for line in error.problem.splitlines() if line.startswith("    - ")]
    assert listed == ["    - get, list, watch customresourcedefinitions.apiextensions.k8s.io (cluster-wide)"]
    assert error.problem.startswith("system:serviceaccount:kstack-verifier:kstack-verifier lacks 3 of the")
    assert "deploy/rbac/verifier.yaml" in error.remedy


def test_preflight_names_exactly_a_removed_workspace_rule(cluster):
    error = _preflight_without(cluster, rbac.WORKSPACE_ROLE,
                               lambda r: r["resources"] == ["secrets"] and r["verbs"] == ["get"])
    listed = [line for line in error.problem.splitlines() if line.startswith("    - ")]
    assert listed == [f"    - get secrets (in each test namespace; not in ClusterRole {rbac.WORKSPACE_ROLE} on the "
                      "cluster)"]
    # restored: preflight passes again and asks for the workspace role to be bound per test namespace
    grant = preflight.check_permissions(cluster.as_user(cluster.verifier), cluster.profile)
    assert grant is not None and (grant.subject_kind, grant.subject_name) == ("ServiceAccount", "kstack-verifier")


def test_cluster_admin_needs_no_workspace_binding(cluster):
    assert preflight.check_permissions(cluster.admin, cluster.profile) is None


def test_an_identity_without_permissions_gets_one_preflight_message_before_any_test(cluster, tmp_path):
    proc = run_suite(cluster, cluster.nobody, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert output.count("preflight failed") == 1, output[-3000:]
    assert "system:serviceaccount:kstack-verifier:nobody lacks" in output
    assert "get, list, watch customresourcedefinitions.apiextensions.k8s.io (cluster-wide)" in output
    assert "remedy: bind the identity to the suite's shipped role" in output
    assert "Traceback" not in output and not re.search(r"\d+ (passed|failed|error)", output), output[-3000:]
    left, _ = cluster.admin.list("v1", "Namespace", label_selector=MANAGED)
    assert [n for n in left if n["status"].get("phase") != "Terminating"] == []


def test_a_check_meeting_a_403_fails_naming_the_verb_and_the_resource(cluster):
    nobody = cluster.as_user(cluster.nobody)
    with pytest.raises(Forbidden) as e:
        require(nobody, namespaces(["kserve"]))
    assert category_of(e.value) is Category.PERMISSION
    assert str(e.value).startswith("[permission] forbidden: this identity may not list namespaces cluster-wide")
    with pytest.raises(Forbidden) as e:
        wait_for(nobody, workloads(cluster.profile.components["kserve"].workloads), Deadline(10))
    assert "may not list deployments.apps in namespace kserve" in str(e.value)
    # an admission probe refused by the authorizer is the suite's permission, not the webhook's fault
    probe = cluster.profile.components["kserve"].admission_probes[0]
    with pytest.raises(Forbidden) as e:
        wait_for(nobody, admission_probe(probe, "default"), Deadline(10))
    assert "may not create inferenceservices.serving.kserve.io in namespace default" in str(e.value)


def test_the_verifier_writes_and_reads_secrets_only_in_its_own_namespaces(cluster):
    verifier = cluster.as_user(cluster.verifier)
    with pytest.raises(Forbidden):                     # RBAC: no Secrets outside the workspace binding
        verifier.list("v1", "Secret", "kserve")
    refused = []                                       # the guard: namespaces and bindings that are not its own
    for attempt in (lambda: verifier.delete("v1", "Namespace", "kserve"),
                    lambda: verifier.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "not-ours"}}),
                    lambda: verifier.merge_patch("v1", "Namespace", "kserve", None,
                                                 {"metadata": {"labels": {"app.kubernetes.io/managed-by": "kstack"}}}),
                    lambda: rbac.bind_workspace(verifier, "kserve", rbac.WorkspaceGrant(
                        rbac.WORKSPACE_ROLE, "ServiceAccount", "kstack-verifier", "kstack-verifier"))):
        with pytest.raises(KubeError) as e:
            attempt()
        refused.append(e.value)
    assert all("writes only in its own namespaces" in err.message for err in refused), [str(x) for x in refused]
    assert cluster.admin.get("v1", "Namespace", "kserve") is not None
