"""The verifier's role as data: the shipped manifest (deploy/rbac/verifier.yaml) is the one list of permissions, it
covers what every shipped profile's checks do and grants nothing broad; a 403 becomes a permission failure naming
the verb and the resource. No cluster here (tests/test_rbac_twin.py runs the suite as the role on the twin)."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from kubernetes.client.rest import ApiException

from reports.categories import classify
from stack import rbac
from stack.failures import Category, CheckFailure, category_of
from stack.kube import Access, Forbidden, Kube, KubeError, _translate
from stack.profile import Profile, available_profiles
from stack.retry import is_api_transient, race_signature


@pytest.fixture(scope="module")
def manifest() -> rbac.Manifest:
    return rbac.Manifest.load()


def test_the_manifest_has_the_two_roles_a_service_account_and_its_binding(manifest):
    kinds = [d["kind"] for d in manifest.documents]
    assert kinds.count("ClusterRole") == 2 and "ClusterRoleBinding" in kinds and "ServiceAccount" in kinds
    binding = next(d for d in manifest.documents if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == rbac.VERIFIER_ROLE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": manifest.service_account[1],
                                    "namespace": manifest.service_account[0]}]
    # the workspace role is bound by the suite, per test namespace, never cluster-wide
    assert not any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == rbac.WORKSPACE_ROLE
                   for d in manifest.documents)


def test_no_rule_is_broad(manifest):
    for role in (manifest.verifier, manifest.workspace):
        for rule in role.rules:
            assert "*" not in rule.verbs + rule.resources + rule.api_groups, (role.name, rule)
            assert not {"escalate", "impersonate", "update", "deletecollection"} & set(rule.verbs), (role.name, rule)
    cluster = manifest.verifier.permissions()
    # never Secrets cluster-wide, of ConfigMaps only Knative's autoscaler settings; the only cluster-wide writes are
    # namespaces and the workspace binding (a SubjectAccessReview persists nothing: it asks the authorizer)
    assert not [p for p in cluster if p.resource == "secrets"]
    assert [(p.verb, p.name) for p in cluster if p.resource == "configmaps"] == [("get", "config-autoscaler")]
    writes = {(p.verb, p.resource) for p in cluster if p.verb not in ("get", "list", "watch")}
    assert writes == {("create", "namespaces"), ("patch", "namespaces"), ("delete", "namespaces"),
                      ("create", "rolebindings"), ("bind", "clusterroles"), ("create", "subjectaccessreviews")}
    assert [p.name for p in cluster if p.resource == "clusterroles"] == [rbac.WORKSPACE_ROLE] * 2


def _resource(profile: Profile, api_version: str, kind: str) -> tuple[str, str]:
    """(group, plural) of a kind of the profile's CRDs."""
    group = api_version.rpartition("/")[0]
    name = next(c["name"] for _, c in profile.inventory("crds") if c["kind"] == kind and c["name"].endswith("." + group))
    return group, name.split(".")[0]


@pytest.mark.parametrize("name", available_profiles())
def test_the_workspace_role_covers_every_admission_probe_and_the_round_trip(manifest, name):
    profile = Profile.load(name)
    _, workspace = rbac.needed(manifest, profile)
    role = rbac.Role("needed", (rbac.Rule(tuple({p.group for p in workspace}), tuple({p.resource for p in workspace}),
                                          ("create",)),))
    for comp in profile.components.values():
        for probe in comp.admission_probes:
            for obj in (probe["admit"], probe["deny"]):
                group, plural = _resource(profile, obj["apiVersion"], obj["kind"])
                assert manifest.workspace.covers(rbac.Permission("create", group, plural)), (name, obj["kind"])
                assert role.covers(rbac.Permission("create", group, plural))
    for verb in ("list", "watch", "create", "patch"):
        for plural in ("issuers", "certificates"):
            assert manifest.workspace.covers(rbac.Permission(verb, "cert-manager.io", plural))
        assert manifest.workspace.covers(rbac.Permission(verb, "serving.kserve.io", "inferenceservices"))
    assert manifest.workspace.covers(rbac.Permission("get", "", "secrets"))


def test_a_profile_needs_no_permission_on_a_component_it_does_not_have(manifest):
    _, workspace = rbac.needed(manifest, Profile.load("latest-standard"))
    assert not [p for p in workspace if p.group in ("networking.istio.io", "serving.knative.dev")]
    _, workspace = rbac.needed(manifest, Profile.load("latest"))
    assert {p.group for p in workspace} >= {"networking.istio.io", "serving.knative.dev"}


def _without_ha(profile: Profile) -> dict:
    components = {name: {k: v for k, v in comp.items() if k != "ha"} for name, comp in profile.data["components"].items()}
    return {**profile.data, "components": components}


def test_the_area_permissions_are_needed_only_where_the_profile_uses_the_area(manifest):
    """Monitors' permissions where the profile declares monitors, the HA posture's where it lists HA workloads."""
    seed = Profile.load("seed")
    bare = _without_ha(seed)
    cluster_wide, _ = rbac.needed(manifest, Profile(bare))
    assert not [p for p in cluster_wide if p.group in rbac.AREA_GROUPS]
    monitored = dict(bare, monitors=[{"kind": "PodMonitor", "namespace": "kserve", "name": "kserve"}])
    cluster_wide, _ = rbac.needed(manifest, Profile(monitored))
    assert {(p.verb, p.group, p.resource) for p in cluster_wide if p.group in rbac.AREA_GROUPS} == {
        ("get", "monitoring.coreos.com", "servicemonitors"), ("get", "monitoring.coreos.com", "podmonitors"),
        ("list", "discovery.k8s.io", "endpointslices")}
    assert rbac.Permission("list", "", "services") in cluster_wide
    assert seed.ha_workloads()
    cluster_wide, _ = rbac.needed(manifest, seed)
    assert {(p.verb, p.group, p.resource) for p in cluster_wide if p.group in rbac.AREA_GROUPS} == {
        ("list", "policy", "poddisruptionbudgets"), ("get", "coordination.k8s.io", "leases"),
        ("list", "coordination.k8s.io", "leases"), ("list", "discovery.k8s.io", "endpointslices")}


def test_rules_match_as_rbac_matches_them():
    rule = rbac.Rule(("",), ("pods", "pods/log"), ("get",))
    assert rule.covers(rbac.Permission("get", "", "pods/log"))
    assert not rule.covers(rbac.Permission("get", "", "pods/exec"))
    assert not rule.covers(rbac.Permission("list", "", "pods"))
    assert rbac.Rule(("*",), ("*",), ("*",)).covers(rbac.Permission("delete", "apps", "deployments"))
    assert rbac.Rule(("*",), ("*",), ("*",)).covers(rbac.Permission("get", "", "pods/log"))   # "*": subresources too
    assert rbac.Rule(("",), ("*/log",), ("get",)).covers(rbac.Permission("get", "", "pods/log"))
    named = rbac.Rule(("rbac.authorization.k8s.io",), ("clusterroles",), ("bind",), ("a",))
    assert named.covers(rbac.Permission("bind", "rbac.authorization.k8s.io", "clusterroles", "a"))
    assert not named.covers(rbac.Permission("bind", "rbac.authorization.k8s.io", "clusterroles", "b"))


def test_the_preflight_message_groups_verbs_per_resource_and_scope():
    crd = ("apiextensions.k8s.io", "customresourcedefinitions")
    review = rbac.Review(rbac.Identity("system:serviceaccount:ns:sa"), 50, [
        rbac.Missing(rbac.Permission(v, *crd), "cluster-wide") for v in ("get", "list", "watch")] + [
        rbac.Missing(rbac.Permission("get", "", "secrets"), "in each test namespace", "not in ClusterRole x")])
    text = review.problem("latest")
    assert text.startswith("system:serviceaccount:ns:sa lacks 4 of the 50 permissions")
    assert "    - get, list, watch customresourcedefinitions.apiextensions.k8s.io (cluster-wide)" in text
    assert "    - get secrets (in each test namespace; not in ClusterRole x)" in text
    assert "deploy/rbac/verifier.yaml" in review.remedy()


def test_a_service_account_is_bound_as_a_service_account():
    assert rbac.Identity("system:serviceaccount:kstack-verifier:v").subject() == ("ServiceAccount", "v",
                                                                                "kstack-verifier")
    assert rbac.Identity("jane@example.com").subject() == ("User", "jane@example.com", None)


def _forbidden(message: str = 'pods is forbidden: User "u" cannot list resource "pods"') -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                         "message": message, "details": {"kind": "pods"}})
    return e


class _Kube(Kube):
    """A Kube whose authorizer answers from a set of (verb, resource) it allows, without a cluster."""

    def __init__(self, allows: set[tuple[str, str]]):
        self.allows = allows
        self.requests = Counter()

    def _may(self, verb: str, access: Access) -> bool:
        return (verb, access.resource) in self.allows


def _refused(kube: _Kube, access: Access, message: str = 'pods is forbidden: User "u" cannot list resource "pods"'):
    return kube._refused(_translate(_forbidden(message), "list pod kserve", "https://api"), access)


def test_a_403_of_the_authorizer_is_a_permission_failure_naming_the_verb_and_the_resource():
    error = _refused(_Kube(set()), Access(("list",), "", "pods", "kserve"))
    assert isinstance(error, Forbidden) and isinstance(error, KubeError) and isinstance(error, CheckFailure)
    assert error.status == 403 and error.access.verbs == ("list",) and error.access.resource == "pods"
    assert category_of(error) is Category.PERMISSION
    assert str(error).startswith("[permission] forbidden: this identity may not list pods in namespace kserve")
    assert classify("failed", f"stack.kube.Forbidden: {error}") == Category.PERMISSION.title
    assert is_api_transient(error) is None and race_signature(error) is None   # never retried
    # a server-side apply is a patch and, for a new object, a create: the one refused is named
    applied = _refused(_Kube({("patch", "issuers")}),
                       Access(("patch", "create"), "cert-manager.io", "issuers", "ns1", "selfsigned"))
    assert "may not create issuers.cert-manager.io selfsigned in namespace ns1" in str(applied)
    cluster = Access(("watch",), "apiextensions.k8s.io", "customresourcedefinitions")
    assert str(cluster) == "watch customresourcedefinitions.apiextensions.k8s.io cluster-wide"


def test_a_403_of_admission_stays_the_webhooks_answer():
    """A webhook denies with 403 too: when the authorizer allows the request, it is no permission failure."""
    denial = 'admission webhook "validator" denied the request: name must start with a letter'
    error = _refused(_Kube({("create", "inferenceservices")}),
                     Access(("create",), "serving.kserve.io", "inferenceservices", "ns1"), denial)
    assert type(error) is KubeError and error.status == 403 and error.message == denial
    assert category_of(error) is None


def test_other_answers_stay_api_errors():
    e = ApiException(status=404, reason="Not Found")
    e.body = json.dumps({"kind": "Status", "reason": "NotFound", "message": "x not found"})
    error = _Kube(set())._refused(_translate(e, "get x", "https://api"), Access(("get",), "", "pods"))
    assert type(error) is KubeError and error.status == 404


# -- who am I where SelfSubjectReview is not served (Kubernetes 1.25 and 1.26) ----------------------------------------
class _Config:
    def __init__(self, token: str | None = None, cert_file: str | None = None):
        self.api_key = {"BearerToken": f"Bearer {token}"} if token else {}     # as kubernetes' client keeps it
        self.cert_file = cert_file


class _OldApiServer:
    """An API server before 1.27: no SelfSubjectReview served, so whoami must not create one."""

    def __init__(self, configuration):
        self.api_client = type("Client", (), {"configuration": configuration})()
        self.created: list[dict] = []

    def serves(self, api_version: str, kind: str) -> bool:
        return False

    def create(self, obj: dict) -> dict:
        self.created.append(obj)
        raise AssertionError("SelfSubjectReview is not served")


def _jwt(claims: dict) -> str:
    import base64

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_token_is_read_where_the_kubernetes_client_keeps_it(tmp_path):
    """From a kubeconfig as the client loads it, not from how a test thinks it stores it."""
    from kubernetes import config
    token = _jwt({"sub": "system:serviceaccount:kstack-verifier:kstack-verifier"})
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": token}}]}))
    who = rbac.identity_from_credentials(config.new_client_from_config(config_file=str(path)).configuration)
    assert who is not None and who.subject() == ("ServiceAccount", "kstack-verifier", "kstack-verifier")


def test_a_service_account_token_says_who_it_is_without_selfsubjectreview():
    # a bound token as `kubectl create token` mints it (pkg/serviceaccount/claims.go: sub, kubernetes.io)
    token = _jwt({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:kstack-verifier:kstack-verifier",
                  "kubernetes.io": {"namespace": "kstack-verifier", "serviceaccount": {"name": "kstack-verifier"}}})
    who = rbac.whoami(_OldApiServer(_Config(token)))
    assert who.subject() == ("ServiceAccount", "kstack-verifier", "kstack-verifier")
    assert who.groups == ("system:serviceaccounts", "system:serviceaccounts:kstack-verifier", "system:authenticated")
    assert who.source == "the ServiceAccount token's claims"


def test_a_client_certificate_says_who_it_is_without_selfsubjectreview(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "platform-verifiers"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    import base64

    from kubernetes import config
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = tmp_path / "kubeconfig"          # as a kubeconfig holds it, loaded as the client loads it
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}],
        "users": [{"name": "u", "user": {"client-certificate-data": base64.b64encode(pem).decode(),
                                         "client-key-data": base64.b64encode(key_pem).decode()}}]}))
    loaded = config.new_client_from_config(config_file=str(path)).configuration
    who = rbac.whoami(_OldApiServer(loaded))
    assert (who.username, who.groups) == ("alice", ("platform-verifiers", "system:authenticated"))
    assert who.subject() == ("User", "alice", None)


def test_an_opaque_token_is_never_guessed_and_the_option_names_the_subject():
    oidc = _jwt({"iss": "https://dex.example", "sub": "CgVhbGljZRIEbG9jYWw", "email": "alice@example.com"})
    assert rbac.whoami(_OldApiServer(_Config(oidc))).username is None     # the API server maps OIDC, not we
    named = rbac.whoami(_OldApiServer(_Config(oidc)), "ServiceAccount:kstack-verifier/kstack-verifier")
    assert named.subject() == ("ServiceAccount", "kstack-verifier", "kstack-verifier")
    assert named.source == "--verifier-subject"
    assert rbac.parse_subject("User:alice").subject() == ("User", "alice", None)
    for bad in ("alice", "User:", "ServiceAccount:verifier", "Group:admins"):
        with pytest.raises(rbac.SubjectError):
            rbac.parse_subject(bad)


def test_an_unknown_identity_asks_for_the_option_not_for_a_permission_no_role_can_grant():
    review = rbac.Review(rbac.Identity(None, (), "nothing"), 10, unknown_identity=True)
    assert review.blocked
    assert "serves no SelfSubjectReview before Kubernetes 1.27" in review.problem("seed")
    assert "selfsubjectreviews" not in review.problem("seed")
    assert "--verifier-subject ServiceAccount:kstack-verifier/kstack-verifier" in review.remedy()
