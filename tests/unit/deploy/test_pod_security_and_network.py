"""Pod Security and NetworkPolicies by default (deploy/k8s/check_pod_security.py and
check_network.py): every pod meets `restricted` but for the WebRTC hostPorts, every namespace
enforces the strictest level its pods meet, both renderings carry default deny and the design's
flows, and distribution and graphics reach outside the cluster only what is listed for them.
Each rule fails on a manifest that breaks it: a rendered object changed in memory, or a copy of
deploy/ whose files are edited, rendered and checked end to end."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.test_k8s_check import check, container, deployment, pod_spec

psa = check.check_pod_security
net = check.check_network
Obj = dict[str, Any]
Objects = list[Obj]
PSA = "pod-security.kubernetes.io"


def find(objs: Objects, kind: str, name: str) -> Obj:
    """An object by kind and name (a kustomize ConfigMap by its name before the hash)."""
    found: Obj = next(
        o
        for o in objs
        if o["kind"] == kind and check.KUSTOMIZE_HASH.sub("", o["metadata"]["name"]) == name
    )
    return found


def template(obj: Obj) -> Obj:
    result: Obj = obj["spec"]["template"]
    return result


@pytest.fixture(scope="module")
def renders() -> dict[str, check.Render]:
    """The four renders `make k8s-check` checks, the Helm ones with the release namespace as
    their NOTES tell the operator to label it."""
    result = {
        "kustomize dev": check.Render("kustomize dev", check.kustomize("dev"), False),
        "kustomize prod": check.Render("kustomize prod", check.kustomize("prod"), True),
    }
    for label, values in (("helm defaults", {}), ("helm production", "values-production.yaml")):
        loaded = check.load_values(values) if isinstance(values, str) else values
        objects, _, notes = check.helm_render_notes(loaded, label)
        result[label] = check.Render(
            label,
            objects,
            "production" in label,
            assumed_namespaces=check.helm_release_namespaces(notes),
        )
    return result


def helm(values: Obj) -> tuple[Objects, list[Obj]]:
    """The chart's objects with `values`, and the namespaces its NOTES say to label."""
    objects, _, notes = check.helm_render_notes(values)
    return objects, check.helm_release_namespaces(notes)


# -- the Pod Security Standards on one pod --------------------------------------------------------


def test_the_compliant_pod_meets_restricted() -> None:
    dep = deployment()
    assert psa.restricted_departures(template(dep)) == {}
    assert psa.strictest_level(template(dep)) == "restricted"
    # NET_BIND_SERVICE is the one capability "restricted" lets a container add.
    container(dep)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert psa.strictest_level(template(dep)) == "restricted"


def _context(dep: Obj) -> Obj:
    result: Obj = container(dep)["securityContext"]
    return result


# A change to the compliant pod, the controls it breaks and the strictest level it still meets.
POD_CASES: list[tuple[Callable[[Obj], Any], str, str]] = [
    (lambda d: pod_spec(d).update(hostNetwork=True), "hostNamespaces", "privileged"),
    (lambda d: pod_spec(d).update(hostPID=True), "hostNamespaces", "privileged"),
    (lambda d: _context(d).update(privileged=True), "privileged", "privileged"),
    (lambda d: _context(d)["capabilities"].update(add=["SYS_ADMIN"]), "capabilities", "privileged"),
    (
        lambda d: pod_spec(d)["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "hostPathVolumes volumeTypes",
        "privileged",
    ),
    (
        lambda d: container(d).update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "hostPorts",
        "privileged",
    ),
    (lambda d: _context(d).update(procMount="Unmasked"), "procMount", "privileged"),
    (
        lambda d: pod_spec(d)["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
        "sysctls",
        "privileged",
    ),
    (
        lambda d: _context(d).update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
        "privileged",
    ),
    (
        lambda d: _context(d).update(appArmorProfile={"type": "Unconfined"}),
        "appArmorProfile",
        "privileged",
    ),
    (
        lambda d: _context(d).update(seLinuxOptions={"user": "system_u"}),
        "seLinuxOptions",
        "privileged",
    ),
    (lambda d: _context(d).pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation", "baseline"),
    (lambda d: pod_spec(d)["securityContext"].pop("runAsNonRoot"), "runAsNonRoot", "baseline"),
    (lambda d: _context(d).update(runAsUser=0), "runAsUser", "baseline"),
    (lambda d: pod_spec(d)["securityContext"].pop("seccompProfile"), "seccompProfile", "baseline"),
    (lambda d: _context(d)["capabilities"].update(drop=["NET_RAW"]), "capabilities", "baseline"),
    (
        lambda d: pod_spec(d)["volumes"].append(
            {"name": "share", "nfs": {"server": "nas", "path": "/"}}
        ),
        "volumeTypes",
        "baseline",
    ),
]


@pytest.mark.parametrize("case", range(len(POD_CASES)))
def test_each_pod_security_control_is_checked(case: int) -> None:
    mutate, controls, level = POD_CASES[case]
    dep = deployment()
    mutate(dep)
    departures = psa.restricted_departures(template(dep))
    assert set(departures) == set(controls.split())
    assert psa.strictest_level(template(dep)) == level
    assert psa.pod_violations([dep]) == [
        f"Deployment/baycast-mixer: Pod Security restricted: {control}: {departures[control]}"
        for control in sorted(departures)
        if control != "hostPorts"  # the one departure the design has (docs/adr/0005)
    ]


# -- the namespaces -------------------------------------------------------------------------------


def test_every_render_enforces_the_strictest_level_its_pods_meet(
    renders: dict[str, check.Render],
) -> None:
    for render in renders.values():
        assert psa.pod_violations(render.objects) == [], render.label
        assert psa.namespace_violations(render.objects, render.assumed_namespaces) == [], (
            render.label
        )
        namespaces = {
            o["metadata"]["name"]: o["metadata"]["labels"]
            for o in [*render.assumed_namespaces, *render.objects]
            if o["kind"] == "Namespace"
        }
        assert {n: given[f"{PSA}/enforce"] for n, given in namespaces.items()} == {
            "baycast": "restricted",
            "baycast-edge": "privileged",
        }, render.label
        where = net.component_namespaces(render.objects)
        assert where == {
            "nats": "baycast",
            "mixer": "baycast",
            "graphics": "baycast",
            "monitoring": "baycast",
            "control": "baycast",
            "ingest": "baycast-edge",
            "distribution": "baycast-edge",
        }, render.label


def _label(name: str, key: str, value: str | None) -> Callable[[Objects], None]:
    def mutate(objs: Objects) -> None:
        given = find(objs, "Namespace", name)["metadata"]["labels"]
        if value is None:
            given.pop(key)
        else:
            given[key] = value

    return mutate


def _move(name: str, namespace: str) -> Callable[[Objects], None]:
    def mutate(objs: Objects) -> None:
        find(objs, "Deployment", name)["metadata"]["namespace"] = namespace

    return mutate


def _drop_namespace(objs: Objects) -> None:
    objs.remove(find(objs, "Namespace", "baycast"))


ENFORCE = f"{PSA}/enforce"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _label("baycast", ENFORCE, "baseline"),
            "Namespace/baycast: enforces only 'baseline', but the pods of "
            "Deployment/baycast-control meet 'restricted': they belong in a namespace enforcing "
            "'restricted'",
        ),
        (
            _label("baycast-edge", ENFORCE, "restricted"),
            "Namespace/baycast-edge: enforces 'restricted', which refuses the pods of "
            "Deployment/baycast-distribution (they meet 'privileged')",
        ),
        (
            _label("baycast", ENFORCE, None),
            f"Namespace/baycast: enforces no Pod Security level ({ENFORCE})",
        ),
        (
            _label("baycast", f"{ENFORCE}-version", "latest"),
            f"Namespace/baycast: {ENFORCE}-version is 'latest', not a pinned v1.<minor>",
        ),
        (
            _label("baycast-edge", f"{PSA}/audit", "baseline"),
            f"Namespace/baycast-edge: {PSA}/audit is not 'restricted'",
        ),
        (
            _move("baycast-mixer", "baycast-edge"),
            "Namespace/baycast-edge: enforces only 'privileged', but the pods of "
            "Deployment/baycast-mixer meet 'restricted': they belong in a namespace enforcing "
            "'restricted'",
        ),
        (
            _move("baycast-ingest", "baycast"),
            "Namespace/baycast: enforces 'restricted', which refuses the pods of "
            "Deployment/baycast-ingest (they meet 'privileged')",
        ),
        (
            _drop_namespace,
            "namespace baycast: runs Deployment/baycast-control, Deployment/baycast-graphics, "
            "Deployment/baycast-mixer, Deployment/baycast-monitoring, StatefulSet/baycast-nats "
            "but the render does not label it: no Pod Security level is enforced there",
        ),
    ],
)
def test_each_namespace_rule_catches_its_violation(
    renders: dict[str, check.Render], mutate: Callable[[Objects], None], expected: str
) -> None:
    objs = copy.deepcopy(renders["kustomize prod"].objects)
    mutate(objs)
    assert expected in psa.namespace_violations(objs)


def test_the_chart_tells_the_operator_how_to_label_its_namespaces() -> None:
    objects, assumed = helm({})
    # The release namespace: labelled by the operator as the NOTES say; the edge one: rendered.
    assert [n["metadata"]["name"] for n in assumed] == ["baycast"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["baycast-edge"]
    assert psa.namespace_violations(objects) == [
        "namespace baycast: runs Deployment/baycast-control, Deployment/baycast-graphics, "
        "Deployment/baycast-mixer, Deployment/baycast-monitoring, StatefulSet/baycast-nats but "
        "the render does not label it: no Pod Security level is enforced there"
    ]
    # An edge namespace the operator makes: the NOTES give its labels too.
    values = {"podSecurity": {"edgeNamespace": {"name": "studio-edge", "create": False}}}
    objects, assumed = helm(values)
    assert [n["metadata"]["name"] for n in assumed] == ["baycast", "studio-edge"]
    assert not [o for o in objects if o["kind"] == "Namespace"]
    assert psa.namespace_violations(objects, assumed) == []
    assert net.component_namespaces(objects)["ingest"] == "studio-edge"
    assert net.network_policy_violations(objects) == []
    assert check.namespace_reference_violations(objects) == []


def test_the_chart_refuses_one_namespace_for_both_levels() -> None:
    import helm_python as helm_sdk

    with check.quiet_native_stderr(), helm_sdk.Chart.load(str(check.CHART)) as chart:
        same = {"podSecurity": {"edgeNamespace": {"name": "baycast"}}}
        with pytest.raises(helm_sdk.HelmError, match="must differ from the release namespace"):
            chart.render(same, name="baycast", namespace="baycast")
        with pytest.raises(helm_sdk.HelmError, match="version"):
            chart.validate_schema(chart.merge_values({"podSecurity": {"version": "latest"}}))


# -- NetworkPolicies by default -------------------------------------------------------------------


def test_both_renderings_carry_the_network_policies_by_default(
    renders: dict[str, check.Render],
) -> None:
    for render in renders.values():
        assert net.network_policy_violations(render.objects) == [], render.label
        # Nothing listed: distribution and graphics reach nothing outside the cluster.
        assert net.destinations(render.objects, "distribution") == [], render.label
        assert net.destinations(render.objects, "graphics") == [], render.label
        assert net.destinations(render.objects, "ingest") == ["0.0.0.0/0"]  # ICE checks, UDP
    # Turned off, the check says what is missing.
    objects, _ = helm({"networkPolicy": {"enabled": False}})
    problems = net.network_policy_violations(objects)
    assert (
        "NetworkPolicies: no default deny in namespace baycast (podSelector {}, Ingress and "
        "Egress, no rules)" in problems
    )
    assert "Deployment/baycast-mixer: no NetworkPolicy of its own allows its flows" in problems
    assert "NetworkPolicies allow internet -> nats TCP/4222" in problems


def test_the_chart_limits_egress_to_the_listed_destinations() -> None:
    values = {
        "networkPolicy": {
            "distributionEgressCIDRs": ["203.0.113.0/24", "2001:db8:1::/48"],
            "graphicsEgressCIDRs": ["198.51.100.20/32"],
        }
    }
    objects, _ = helm(values)
    assert net.network_policy_violations(objects) == []
    assert net.destinations(objects, "distribution") == ["203.0.113.0/24", "2001:db8:1::/48"]
    assert net.destinations(objects, "graphics") == ["198.51.100.20/32"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    graphics, dist = net.peer_of("graphics"), net.peer_of("distribution")
    feed = net.Peer("feed", ip="198.51.100.20")
    assert net.flow_allowed(policies, graphics, feed, "TCP", 443)
    assert not net.flow_allowed(policies, graphics, feed, "UDP", 443)
    assert not net.flow_allowed(policies, graphics, net.Peer("x", ip="198.51.100.21"), "TCP", 443)
    assert net.flow_allowed(policies, dist, net.Peer("cdn", ip="2001:db8:1::9"), "TCP", 1935)
    assert not net.flow_allowed(policies, dist, feed, "TCP", 1935)


def test_the_chart_refuses_everywhere_as_a_destination() -> None:
    import helm_python as helm_sdk

    with check.quiet_native_stderr(), helm_sdk.Chart.load(str(check.CHART)) as chart:
        for key in ("distributionEgressCIDRs", "graphicsEgressCIDRs"):
            for cidr in ("0.0.0.0/0", "::/0", "scores.example.com"):
                values = {"networkPolicy": {key: [cidr]}}
                with pytest.raises(helm_sdk.HelmError):
                    chart.validate_schema(chart.merge_values(values))


def test_an_external_nats_must_be_placed_for_the_policies() -> None:
    import helm_python as helm_sdk

    external = {"nats": {"enabled": False, "url": "nats://nats.infra:4333"}}
    with (
        check.quiet_native_stderr(),
        helm_sdk.Chart.load(str(check.CHART)) as chart,
        pytest.raises(helm_sdk.HelmError, match=r"networkPolicy\.externalNats"),
    ):
        chart.render(external, name="baycast", namespace="baycast")
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "infra"}},
        "podSelector": {"matchLabels": {"app": "nats"}},
    }
    objects, _ = helm({**external, "networkPolicy": {"externalNats": [peer]}})
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    nats = net.Peer("nats", (("app", "nats"),), "infra")
    for service in ("mixer", "ingest"):
        assert net.flow_allowed(policies, net.peer_of(service), nats, "TCP", 4333)
        assert not net.flow_allowed(policies, net.peer_of(service), nats, "TCP", 4222)


# -- a broken copy of deploy/, rendered and checked ------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of deploy/ (its links kept) that check.py renders instead of the real one."""
    copied = tmp_path / "deploy"
    shutil.copytree(check.ROOT / "deploy", copied, symlinks=True)
    monkeypatch.setattr(check, "K8S", copied / "k8s")
    monkeypatch.setattr(check, "CHART", copied / "k8s" / "helm" / "baycast")
    return copied / "k8s"


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == count, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


def policy(render: check.Render) -> list[str]:
    return check.policy_violations(render)


def test_a_copy_with_a_namespace_enforcing_too_little_fails(tree: Path) -> None:
    edit(tree / "base/namespaces.yaml", f"{ENFORCE}: restricted", f"{ENFORCE}: baseline")
    problems = policy(check.Render("copy", check.kustomize("dev"), False))
    assert (
        "copy: Namespace/baycast: enforces only 'baseline', but the pods of "
        "Deployment/baycast-mixer meet 'restricted': they belong in a namespace enforcing "
        "'restricted'" in problems
    )


def test_a_copy_with_a_pod_that_may_escalate_fails(tree: Path) -> None:
    edit(
        tree / "base/graphics/deployment.yaml",
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    )
    edit(
        tree / "helm/baycast/templates/deployment.yaml",
        "capabilities:\n            drop: [ALL]",
        "capabilities:\n            drop: [NET_RAW]",
    )
    problems = policy(check.Render("copy", check.kustomize("dev"), False))
    assert (
        "copy: Deployment/baycast-graphics: Pod Security restricted: allowPrivilegeEscalation: "
        "container graphics does not set it false" in problems
    )
    objects, _ = check.helm_render_values({})
    problems = policy(check.Render("chart", objects, False))
    for name in ("ingest", "mixer"):
        assert (
            f"chart: Deployment/baycast-{name}: Pod Security restricted: capabilities: container "
            f"{name} does not drop ALL" in problems
        )


def test_a_copy_without_default_deny_in_the_edge_namespace_fails(tree: Path) -> None:
    path = tree / "base/network-policies/baycast-edge.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    kept = [d for d in docs if d["metadata"]["name"] != "baycast-default-deny"]
    assert len(kept) == len(docs) - 1
    path.write_text(yaml.safe_dump_all(kept), encoding="utf-8")
    problems = policy(check.Render("copy", check.kustomize("prod"), True))
    assert (
        "copy: NetworkPolicies: no default deny in namespace baycast-edge (podSelector {}, "
        "Ingress and Egress, no rules)" in problems
    )


EGRESS = """  egress:
  - to:
    - ipBlock: {{cidr: {cidr}}}
    ports:
    - {{protocol: TCP}}
    - {{protocol: UDP}}
"""


def test_the_overlay_lists_distributions_outputs(tree: Path) -> None:
    egress = tree / "overlays/prod/egress.yaml"
    first = "spec:\n  egress: []\n"
    text = egress.read_text(encoding="utf-8")
    egress.write_text(text.replace(first, "spec:\n" + EGRESS.format(cidr="203.0.113.0/24"), 1))
    objects = check.kustomize("prod")
    assert net.destinations(objects, "distribution") == ["203.0.113.0/24"]
    assert net.destinations(objects, "graphics") == []
    assert net.network_policy_violations(objects) == []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    platform = net.Peer("platform", ip="203.0.113.50")
    assert net.flow_allowed(policies, net.peer_of("distribution"), platform, "TCP", 1935)
    assert not net.flow_allowed(policies, net.peer_of("mixer"), platform, "TCP", 1935)

    # Everywhere is refused.
    egress.write_text(text.replace(first, "spec:\n" + EGRESS.format(cidr="0.0.0.0/0"), 1))
    problems = policy(check.Render("copy", check.kustomize("prod"), True))
    assert (
        "copy: NetworkPolicies: distribution may open connections anywhere (0.0.0.0/0): list its "
        "destinations instead" in problems
    )


def test_a_copy_whose_nats_policy_forgets_the_edge_namespace_fails(tree: Path) -> None:
    # A peer without its namespaceSelector names pods of the policy's own namespace.
    path = tree / "base/network-policies/baycast.yaml"
    text = path.read_text(encoding="utf-8")
    edge_peer = re.compile(
        r"    - namespaceSelector:\n        matchLabels:\n          "
        r"kubernetes.io/metadata.name: baycast-edge\n      podSelector:"
    )
    # nats (from ingest, distribution), mixer (from distribution, to ingest), monitoring (to ingest)
    assert len(edge_peer.findall(text)) == 5
    path.write_text(edge_peer.sub("    - podSelector:", text), encoding="utf-8")
    problems = policy(check.Render("copy", check.kustomize("dev"), False))
    for flow in (
        "ingest -> nats TCP/4222",
        "distribution -> nats TCP/4222",
        "distribution -> mixer TCP/9102",
        "mixer -> ingest TCP/9101",
        "monitoring -> ingest TCP/9101",
    ):
        assert f"copy: NetworkPolicies block {flow}" in problems, problems
