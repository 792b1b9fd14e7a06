"""The policy checker of deploy/k8s/check.py: each rule catches its violation (baycast's own
and, through checkov, the generic pod rules), and the real manifests and chart pass it."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

CHECK_PY = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "check.py"


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_check", CHECK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_check"] = module
    spec.loader.exec_module(module)
    return module


check = _load_check()
net = check.check_network


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "baycast",
        "app.kubernetes.io/instance": "baycast",
        "app.kubernetes.io/component": component,
    }


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(service: str = "mixer", replicas: int = 1) -> dict[str, Any]:
    """A Deployment that meets every pod rule."""
    probe = {"periodSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"baycast-{service}",
            "namespace": "baycast",
            "labels": labels(service),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(service)},
            "template": {
                "metadata": {"labels": labels(service)},
                "spec": {
                    "serviceAccountName": f"baycast-{service}",
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": service,
                            "image": "ghcr.io/baycast/baycast:0.1.0",
                            "args": [service],
                            "envFrom": [{"configMapRef": {"name": f"baycast-{service}"}}],
                            "env": [
                                {
                                    "name": "BAYCAST_INSTANCE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": f"BAYCAST_{service.upper()}_ADVERTISE_HOST",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                            "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}}
                            | probe,
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "1Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def objects(dep: dict[str, Any], **env: str) -> list[dict[str, Any]]:
    service = dep["spec"]["template"]["spec"]["containers"][0]["args"][0]
    data = {"BAYCAST_LOG_FORMAT": "json", "BAYCAST_DRAIN_SECONDS": "10", **env}
    return [dep, config_map(f"baycast-{service}", data)]


def container(dep: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return result


def test_a_compliant_deployment_has_no_violation() -> None:
    dep = deployment()
    assert check.workload_violations(dep, objects(dep)) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: container(d).pop("startupProbe"), "no startupProbe"),
        (
            lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
            "readiness must GET /readyz",
        ),
        (
            lambda d: container(d)["livenessProbe"]["httpGet"].update(path="/readyz"),
            "liveness must GET /healthz",
        ),
        (lambda d: container(d).update(volumeMounts=[]), "no emptyDir at /tmp"),
        (
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
            "terminationGracePeriodSeconds 10 is not longer than the drain (10.0 s)",
        ),
        (lambda d: container(d).update(env=[]), "ADVERTISE_HOST is not the pod IP"),
    ],
)
def test_each_pod_rule_catches_its_violation(mutate: Any, expected: str) -> None:
    dep = deployment()
    mutate(dep)
    violations = check.workload_violations(dep, objects(dep))
    assert any(expected in v for v in violations), violations


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


# The generic pod rules check.py leaves to checkov: a mutation of the compliant Deployment and
# the checks that must catch it.
CHECKOV_CASES: list[tuple[Any, set[str]]] = [
    (lambda d: container(d).pop("livenessProbe"), {"CKV_K8S_8"}),
    (lambda d: container(d).pop("readinessProbe"), {"CKV_K8S_9"}),
    (lambda d: container(d)["resources"]["requests"].pop("cpu"), {"CKV_K8S_10"}),
    (lambda d: container(d)["resources"]["limits"].pop("cpu"), {"CKV_K8S_11"}),
    (lambda d: container(d)["resources"]["requests"].pop("memory"), {"CKV_K8S_12"}),
    (lambda d: container(d)["resources"]["limits"].pop("memory"), {"CKV_K8S_13"}),
    (lambda d: container(d).update(image="ghcr.io/baycast/baycast:latest"), {"CKV_K8S_14"}),
    (lambda d: container(d).update(image="ghcr.io/baycast/baycast"), {"CKV_K8S_14"}),
    (lambda d: container(d)["securityContext"].update(privileged=True), {"CKV_K8S_16"}),
    (lambda d: pod_spec(d).update(hostPID=True), {"CKV_K8S_17"}),
    (lambda d: pod_spec(d).update(hostIPC=True), {"CKV_K8S_18"}),
    (lambda d: pod_spec(d).update(hostNetwork=True), {"CKV_K8S_19"}),
    (lambda d: container(d)["securityContext"].pop("allowPrivilegeEscalation"), {"CKV_K8S_20"}),
    (
        lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        {"CKV_K8S_22"},
    ),
    (
        lambda d: pod_spec(d)["securityContext"].update(runAsNonRoot=False, runAsUser=0),
        {"CKV_K8S_23", "CKV_K8S_40"},
    ),
    (
        lambda d: container(d)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        {"CKV_K8S_25"},
    ),
    (lambda d: pod_spec(d)["securityContext"].pop("seccompProfile"), {"CKV_K8S_31"}),
    (
        lambda d: container(d)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        {"CKV_K8S_37"},
    ),
    (lambda d: pod_spec(d)["securityContext"].update(runAsUser=1000), {"CKV_K8S_40"}),
    (lambda d: pod_spec(d).pop("automountServiceAccountToken"), {"CKV_K8S_38"}),
    # Pods no NetworkPolicy selects (the render's policy selects the mixer's labels).
    (lambda d: d["spec"]["template"]["metadata"].update(labels=labels("other")), {"CKV2_K8S_6"}),
]


def network_policy(selector: dict[str, Any]) -> dict[str, Any]:
    """A default-deny NetworkPolicy over the pods `selector` selects."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "baycast-default-deny", "namespace": "baycast"},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]},
    }


@pytest.fixture(scope="module")
def checkov_findings() -> dict[str, set[str]]:
    """checkov over the compliant Deployment (baycast-mixer) and each case's (baycast-mixer-<i>),
    in one run: check ids by Deployment."""
    deployments = [deployment()]
    for i, (mutate, _) in enumerate(CHECKOV_CASES):
        dep = deployment()
        dep["metadata"]["name"] = f"baycast-mixer-{i}"
        mutate(dep)
        deployments.append(dep)
    findings: dict[str, set[str]] = {d["metadata"]["name"]: set() for d in deployments}
    policy = network_policy({"matchLabels": labels("mixer")})
    for violation in check.checkov_violations(check.Render("t", [*deployments, policy], False)):
        _, resource, finding = violation.split(": ", 2)
        findings.setdefault(resource.split("/", 1)[1], set()).add(finding.split()[0])
    return findings


def test_checkov_passes_the_compliant_deployment(checkov_findings: dict[str, set[str]]) -> None:
    assert checkov_findings["baycast-mixer"] == set()


@pytest.mark.parametrize("case", range(len(CHECKOV_CASES)))
def test_checkov_catches_each_generic_pod_rule(
    checkov_findings: dict[str, set[str]], case: int
) -> None:
    expected = CHECKOV_CASES[case][1]
    assert expected <= checkov_findings[f"baycast-mixer-{case}"], checkov_findings


def test_every_rule_handed_to_checkov_is_exercised_and_none_is_skipped() -> None:
    exercised = set().union(*(ids for _, ids in CHECKOV_CASES))
    assert set(check.CHECKOV_REPLACES) <= exercised
    assert not set(check.CHECKOV_REPLACES) & set(check.CHECKOV_SKIPS)
    assert all(reason.strip() for reason in check.CHECKOV_SKIPS.values())


def test_grace_period_is_compared_with_the_drain_from_the_config_map() -> None:
    dep = deployment()
    assert check.workload_violations(dep, objects(dep, BAYCAST_DRAIN_SECONDS="45")) == [
        "Deployment/baycast-mixer: terminationGracePeriodSeconds 30 is not longer than the "
        "drain (45.0 s)"
    ]


# The setting that bounds each WebRTC service's peers (one UDP port each).
CAPACITY = {"ingest": "MAX_SESSIONS", "distribution": "MAX_VIEWERS"}


def webrtc_deployment(service: str, ports: list[int], protocol: str = "UDP") -> dict[str, Any]:
    """A WebRTC service's Deployment as docs/adr/0005 has it, publishing `ports` on the node."""
    dep = deployment(service)
    S = service.upper()
    dep["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    dep["spec"]["template"]["spec"]["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": labels(service)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    container(dep)["ports"] = [
        {"name": f"rtc-{p}", "containerPort": p, "hostPort": p, "protocol": protocol} for p in ports
    ]
    container(dep)["env"] += [
        {
            "name": f"BAYCAST_{S}_ICE_HOSTS",
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        },
        {
            "name": f"BAYCAST_{S}_PUBLIC_IP",
            "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}},
        },
    ]
    return dep


def webrtc_env(service: str, low: int = 40000, high: int = 40002) -> dict[str, str]:
    S = service.upper()
    return {
        f"BAYCAST_{S}_RTC_PORT_MIN": str(low),
        f"BAYCAST_{S}_RTC_PORT_MAX": str(high),
        f"BAYCAST_{S}_{CAPACITY[service]}": str(high - low + 1),
    }


@pytest.mark.parametrize("service", ["ingest", "distribution"])
@pytest.mark.parametrize(
    ("ports", "protocol", "ok"),
    [
        ([40000, 40001, 40002], "UDP", True),
        ([40000, 40001], "UDP", False),  # the range says 40000..40002
        ([40000, 40001, 40002, 40003], "UDP", False),
        ([40000, 40001, 40002], "TCP", False),
    ],
)
def test_host_ports_must_be_exactly_the_udp_rtc_range(
    service: str, ports: list[int], protocol: str, ok: bool
) -> None:
    dep = webrtc_deployment(service, ports, protocol)
    violations = check.workload_violations(dep, objects(dep, **webrtc_env(service)))
    assert (violations == []) is ok, violations
    if not ok:
        assert violations == [
            f"Deployment/baycast-{service}: container {service}: hostPorts {ports} are not "
            f"exactly the UDP range BAYCAST_{service.upper()}_RTC_PORT_MIN..MAX (40000, 40002)"
        ]


def test_only_the_webrtc_services_publish_host_ports() -> None:
    dep = deployment("mixer")
    container(dep)["ports"] = [{"containerPort": 9102, "hostPort": 9102, "protocol": "TCP"}]
    assert check.workload_violations(dep, objects(dep)) == [
        "Deployment/baycast-mixer: container mixer: hostPorts [9102]: only ingest's and "
        "distribution's WebRTC ranges are published on the node"
    ]


def test_multi_replica_workloads_need_a_pdb() -> None:
    two = deployment("graphics", replicas=2)
    assert check.pdb_violations([two]) == ["Deployment/baycast-graphics: 2 replicas and no PDB"]
    pdb: dict[str, Any] = {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "baycast-graphics"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels("graphics")}},
    }
    assert check.pdb_violations([two, pdb]) == []
    wrong = copy.deepcopy(pdb)
    wrong["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "mixer"
    assert len(check.pdb_violations([two, wrong])) == 1


def test_an_hpa_minimum_above_one_needs_a_pdb() -> None:
    one = deployment("distribution", replicas=1)
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "baycast-distribution"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "baycast-distribution"},
            "minReplicas": 2,
        },
    }
    assert check.pdb_violations([one]) == []
    assert check.pdb_violations([one, hpa]) == [
        "Deployment/baycast-distribution: 2 replicas and no PDB"
    ]


@pytest.fixture(scope="module")
def prod_kustomize() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = check.kustomize("prod")
    return result


def _policies(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == "NetworkPolicy"]


def test_the_network_policies_allow_the_design_flows_and_nothing_sampled_else(
    prod_kustomize: list[dict[str, Any]],
) -> None:
    assert net.network_policy_violations(prod_kustomize) == []
    policies = _policies(prod_kustomize)
    # mixer in baycast, ingest in baycast-edge: the flow crosses the namespaces.
    mixer, ingest = net.peer_of("mixer"), net.peer_of("ingest")
    assert (mixer.namespace, ingest.namespace) == ("baycast", "baycast-edge")
    assert net.flow_allowed(policies, mixer, ingest, "TCP", 9101)
    assert not net.flow_allowed(policies, ingest, mixer, "TCP", 9102)
    assert net.flow_allowed(policies, net.INTERNET, ingest, "UDP", 40015)
    assert not net.flow_allowed(policies, net.INTERNET, ingest, "UDP", 40016)
    # The same labels in another namespace are other pods.
    stranger = net.peer_of("mixer", "default")
    assert not net.flow_allowed(policies, stranger, ingest, "TCP", 9101)


def test_missing_default_deny_or_a_dropped_flow_is_reported(
    prod_kustomize: list[dict[str, Any]],
) -> None:
    no_deny = [o for o in prod_kustomize if o["metadata"]["name"] != "baycast-default-deny"]
    assert [v for v in net.network_policy_violations(no_deny) if "no default deny" in v] == [
        "NetworkPolicies: no default deny in namespace baycast (podSelector {}, Ingress and "
        "Egress, no rules)",
        "NetworkPolicies: no default deny in namespace baycast-edge (podSelector {}, Ingress and "
        "Egress, no rules)",
    ]

    no_graphics_ingress = copy.deepcopy(prod_kustomize)
    for obj in no_graphics_ingress:
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "baycast-graphics":
            obj["spec"]["ingress"] = []
    violations = net.network_policy_violations(no_graphics_ingress)
    assert "NetworkPolicies block mixer -> graphics TCP/9103" in violations

    open_mixer = copy.deepcopy(prod_kustomize)
    for obj in open_mixer:
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "baycast-mixer":
            obj["spec"]["ingress"].append({})  # from anywhere, any port
    violations = net.network_policy_violations(open_mixer)
    assert "NetworkPolicies allow internet -> mixer TCP/8102" in violations


def test_parity_ignores_the_kustomize_hash_and_reports_real_differences() -> None:
    k_dep, h_dep = deployment(), deployment()
    container(k_dep)["envFrom"][0]["configMapRef"]["name"] = "baycast-mixer-5f7m2g9h4k"
    kustomized = check.Render(
        "k", [k_dep, config_map("baycast-mixer-5f7m2g9h4k", {"A": "1"})], production=False
    )
    helmed = check.Render("h", [h_dep, config_map("baycast-mixer", {"A": "1"})], False)
    assert check.parity_violations(kustomized, helmed) == []

    container(h_dep)["image"] = "ghcr.io/baycast/baycast:0.2.0"
    helmed.objects.append(config_map("baycast-extra", {}))
    assert check.parity_violations(kustomized, helmed) == [
        "k vs h: ConfigMap/baycast-extra only in Helm",
        "k vs h: Deployment/baycast-mixer.spec.template.spec.containers[0].image: kustomize "
        '"ghcr.io/baycast/baycast:0.1.0" != Helm "ghcr.io/baycast/baycast:0.2.0"',
    ]
    # The same object in another namespace is another object.
    container(h_dep)["image"] = "ghcr.io/baycast/baycast:0.1.0"
    helmed.objects.pop()
    h_dep["metadata"]["namespace"] = "baycast-edge"
    assert check.parity_violations(kustomized, helmed) == [
        "k vs h: Deployment/baycast-mixer only in kustomize",
        "k vs h: Deployment/baycast-mixer (baycast-edge) only in Helm",
    ]


def test_the_chart_refuses_a_grace_period_not_longer_than_the_drain() -> None:
    import helm_python as helm

    with helm.Chart.load(str(check.CHART)) as chart:
        with pytest.raises(helm.HelmError, match=r"longer than common\.drainSeconds"):
            chart.render({"common": {"terminationGracePeriodSeconds": 10}}, name="baycast")
        with pytest.raises(helm.HelmError, match="replicas"):
            chart.validate_schema(chart.merge_values({"nats": {"replicas": 2}}))


def test_the_real_manifests_and_chart_pass(prod_kustomize: list[dict[str, Any]]) -> None:
    helm_objects, lint, notes = check.helm_render_notes(
        check.load_values("values-production.yaml"), "values-production.yaml"
    )
    dashboards = [check.file_stem(p) for p in check.dashboard_sources()]
    rules = [check.file_stem(p) for p in check.rule_sources()]
    kustomized = check.Render("kustomize prod", prod_kustomize, True, dashboards, rules)
    helmed = check.Render(
        "helm production",
        helm_objects,
        True,
        dashboards,
        rules,
        assumed_namespaces=check.helm_release_namespaces(notes),
    )
    assert lint == []
    assert check.policy_violations(kustomized) == []
    assert check.policy_violations(helmed) == []
    assert check.parity_violations(kustomized, helmed) == []
    deployments = {o["metadata"]["name"]: o for o in helm_objects if o["kind"] == "Deployment"}
    # The HPAs own ingest's, mixer's and distribution's counts (at least 2 each).
    assert {name: check.replica_count(d, helm_objects) for name, d in deployments.items()} == {
        "baycast-ingest": 2,
        "baycast-mixer": 2,
        "baycast-graphics": 2,
        "baycast-distribution": 2,
        "baycast-monitoring": 2,
        "baycast-control": 2,
    }
    for name in ("baycast-ingest", "baycast-mixer", "baycast-distribution"):
        assert "replicas" not in deployments[name]["spec"]
    assert check.hpa_violations(helm_objects) == []
    assert check.hpa_violations(prod_kustomize) == []


def test_schema_validation_is_strict_against_the_1_32_schemas() -> None:
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 8102}]
    render = check.Render("t", [dep], production=False)
    assert check.schema_violations(render, set()) == ([], 1)

    container(dep)["livenessprobe"] = {}  # a typo the API server would drop silently
    problems, _ = check.schema_violations(check.Render("t", [dep], False), set())
    assert len(problems) == 1
    assert "'livenessprobe' was unexpected" in problems[0]


def test_settings_are_loaded_with_the_service_code(prod_kustomize: list[dict[str, Any]]) -> None:
    render = check.Render("t", copy.deepcopy(prod_kustomize), production=True)
    assert check.settings_violations(render) == []
    ingest_config = next(
        o
        for o in render.objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("baycast-ingest-")
    )
    ingest_config["data"]["BAYCAST_INGEST_RTC_PORT_MAX"] = "39999"  # below the minimum
    ingest_config["data"]["BAYCAST_INGEST_MAX_SESION"] = "8"  # a typo
    problems = check.settings_violations(render)
    assert len(problems) == 2, problems
    assert "BAYCAST_INGEST_MAX_SESION is not a setting of IngestSettings" in problems[0]
    assert "ingest would not start: BAYCAST_INGEST_RTC_PORT_MIN/MAX" in problems[1]


# -- autoscaling on units of work ----------------------------------------------------------------


def hpa(service: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"baycast-{service}"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"baycast-{service}",
            },
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": metrics,
        },
    }


CPU = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
}


def units(name: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": "800m"},
        },
    }


def adapter_config(text: str) -> dict[str, Any]:
    return config_map("baycast-prometheus-adapter", {"config.yaml": text})


def rules_text() -> str:
    return check.ADAPTER_RULES.read_text(encoding="utf-8")


@pytest.mark.parametrize("service", check.UNIT_SERVICES)
def test_the_units_metric_is_served_from_gauges_the_service_exports(service: str) -> None:
    exported = check.exported_metrics(service)
    assert f"baycast_{service}_units_available" in exported  # services/common/capacity.py
    rule = check.adapter_rules(rules_text())[check.units_metric(service)]
    assert check.adapter_rule_violations(check.units_metric(service), rule, service) == []
    objs = [deployment(service), hpa(service, [units(check.units_metric(service)), CPU])]
    assert check.hpa_violations(objs) == []
    assert check.hpa_violations([*objs, adapter_config(rules_text())]) == []


def test_graphics_exports_no_units_gauge_of_its_own() -> None:
    # graphics takes no CPU budget (services/graphics does not import capacity): no metric to
    # scale on, and the check knows it.
    assert "baycast_graphics_units_available" not in check.exported_metrics("graphics")
    assert "baycast_graphics_ready" in check.exported_metrics("graphics")


def test_an_hpa_on_a_metric_nobody_serves_or_nobody_exports_is_reported() -> None:
    mixer = deployment("mixer")
    unknown = check.hpa_violations([mixer, hpa("mixer", [units("baycast_mixer_load"), CPU])])
    assert unknown == [
        "HorizontalPodAutoscaler/baycast-mixer: no prometheus-adapter rule serves "
        "baycast_mixer_load"
    ]
    # A rule reading a gauge the mixer does not export (a typo), rendered in the ConfigMap.
    typo = rules_text().replace("baycast_mixer_productions", "baycast_mixer_production")
    problems = check.hpa_violations(
        [mixer, hpa("mixer", [units("baycast_mixer_units_used_ratio"), CPU]), adapter_config(typo)]
    )
    assert len(problems) == 1
    assert "reads baycast_mixer_production, which services/mixer does not export" in problems[0]
    # The distribution's metric on the mixer's HPA.
    crossed = check.hpa_violations(
        [mixer, hpa("mixer", [units("baycast_distribution_units_used_ratio"), CPU])]
    )
    assert any("which services/mixer does not export" in p for p in crossed), crossed
    assert any("is not a metric of mixer" in p for p in crossed), crossed


def test_an_hpa_keeps_cpu_beside_the_units_metric() -> None:
    objs = [deployment("mixer"), hpa("mixer", [units("baycast_mixer_units_used_ratio")])]
    assert check.hpa_violations(objs) == [
        "HorizontalPodAutoscaler/baycast-mixer: no CPU metric (the fallback when a custom metric "
        "is gone)"
    ]


def test_a_replica_following_units_has_units_in_its_budget() -> None:
    """A 2-core limit holds five productions at 0.35 (the mixer's MAX_PRODUCTIONS caps its gauge
    at four in the service itself); a limit below one production gives the HPA nothing."""
    dep = deployment("mixer")
    container(dep)["resources"]["limits"]["cpu"] = "2"
    scaler = hpa("mixer", [units("baycast_mixer_units_used_ratio"), CPU])
    assert check.units_budget_violations([dep, scaler, *objects(dep)[1:]]) == []
    container(dep)["resources"]["limits"]["cpu"] = "300m"  # not one production
    problems = check.units_budget_violations([dep, scaler, *objects(dep)[1:]])
    assert len(problems) == 1 and "holds no unit" in problems[0], problems
    # An HPA on CPU alone follows no units: nothing to hold it to.
    assert check.units_budget_violations([dep, hpa("mixer", [CPU]), *objects(dep)[1:]]) == []


def test_a_rendered_adapter_config_must_be_the_one_copy() -> None:
    assert check.one_copy_violations([adapter_config(rules_text())]) == []
    edited = rules_text().replace("clamp_min", "clamp_max")
    source = check.ADAPTER_RULES.relative_to(check.ROOT)
    assert check.one_copy_violations([adapter_config(edited)]) == [
        f"ConfigMap/baycast-prometheus-adapter: differs from {source}"
    ]


def _promql(query: str) -> str:
    """A rule's metricsQuery as prometheus-adapter sends it for the pods of namespace baycast."""
    return query.replace("<<.GroupBy>>", "namespace, pod").replace(
        "<<.LabelMatchers>>", 'namespace="baycast",pod=~"a|b|c|d"'
    )


@pytest.mark.parametrize("service", check.UNIT_SERVICES)
def test_the_adapter_rule_computes_the_share_of_units_in_use(service: str, tmp_path: Path) -> None:
    """promtool evaluates the rule's query on four pods: one unit of four in use, all five in use,
    none available and none held (CPU alone fills it), none in use."""
    rule = check.adapter_rules(rules_text())[check.units_metric(service)]
    held = next(
        m for m in check.PROMQL_METRIC.findall(rule["metricsQuery"]) if "available" not in m
    )
    available = f"baycast_{service}_units_available"
    pods = {"a": (3, 1), "b": (0, 5), "c": (0, 0), "d": (5, 0)}  # (available, held)
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "t",
                        "rules": [{"record": "used", "expr": _promql(rule["metricsQuery"])}],
                    }
                ]
            }
        )
    )
    series = []
    for pod, (free, used) in pods.items():
        where = f'namespace="baycast", pod="{pod}"'
        series.append({"series": f"{available}{{{where}}}", "values": f"{free}x3"})
        series.append({"series": f"{held}{{{where}}}", "values": f"{used}x3"})
    expected = {"a": 0.25, "b": 1, "c": 1, "d": 0}
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "used",
                        "eval_time": "1m",
                        "exp_samples": [
                            {"labels": f'used{{namespace="baycast", pod="{pod}"}}', "value": value}
                            for pod, value in expected.items()
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        ["/usr/bin/promtool", "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_schema_knows_the_autoscaling_metric() -> None:
    import helm_python as helm

    with helm.Chart.load(str(check.CHART)) as chart:
        chart.validate_schema(chart.merge_values({"autoscaling": {"metric": "units"}}))
        with pytest.raises(helm.HelmError, match="metric"):
            chart.validate_schema(chart.merge_values({"autoscaling": {"metric": "memory"}}))
        with pytest.raises(helm.HelmError, match="unitsUsedTarget"):
            chart.validate_schema(chart.merge_values({"autoscaling": {"unitsUsedTarget": "0.8"}}))


def test_the_chart_scales_on_cpu_only_unless_told_units() -> None:
    on = {"services": {s: {"autoscaling": {"enabled": True}} for s in ("mixer", "distribution")}}
    cpu_only, _ = check.helm_render_values(on)
    hpas = [o for o in cpu_only if o["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 2
    assert all(h["spec"]["metrics"] == [CPU] for h in hpas)
    assert not [o for o in cpu_only if check.is_adapter_config(o)]

    with_units, _ = check.helm_render_values({**on, "autoscaling": {"metric": "units"}})
    assert check.hpa_violations(with_units) == []
    assert check.one_copy_violations(with_units) == []
    for obj in with_units:
        if obj["kind"] == "HorizontalPodAutoscaler":
            service = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            assert check.follows_units(obj, service)
    assert [o for o in with_units if check.is_adapter_config(o)]
    without_rules, _ = check.helm_render_values(
        {**on, "autoscaling": {"metric": "units", "prometheusAdapterRules": False}}
    )
    assert not [o for o in without_rules if check.is_adapter_config(o)]


# -- the dashboards live once --------------------------------------------------------------------


def test_a_second_copy_of_a_dashboard_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "deploy/k8s/components/dashboards/dashboards"
    home.mkdir(parents=True)
    board = {"title": "baycast / x", "panels": [], "schemaVersion": 39}
    (home / "x.json").write_text(json.dumps(board))
    (tmp_path / "package.json").write_text("{}")  # a JSON file that is no dashboard
    # Fuzzing corpora: JSON no parser takes in whole is no dashboard either.
    (tmp_path / "huge-integer.json").write_text("1" * 4301)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "broken.json").write_text("{")
    link = tmp_path / "deploy/k8s/helm/baycast/files/dashboards"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(home, link.parent))
    assert check.dashboard_copy_violations(tmp_path, home) == []

    (tmp_path / "deploy/observability/dashboards").mkdir(parents=True)
    (tmp_path / "deploy/observability/dashboards/x.json").write_text(json.dumps(board))
    (tmp_path / "grafana.json").write_text(json.dumps({**board, "title": "renamed"}))
    problems = check.dashboard_copy_violations(tmp_path, home)
    assert [p.split(":")[0] for p in problems] == [
        "grafana.json",
        "deploy/observability/dashboards/x.json",
    ]


def test_the_dashboards_live_once_and_the_renders_carry_them_as_they_are() -> None:
    assert check.dashboard_copy_violations() == []
    assert (check.CHART / "files/dashboards").resolve() == check.DASHBOARDS.resolve()
    assert (check.CHART / "files/prometheus-adapter.yaml").resolve() == check.ADAPTER_RULES
    assert {p.name for p in check.dashboard_sources()} == {
        "platform-overview.json",
        "program-and-outputs.json",
        "service-internals.json",
        "sources.json",
    }
    objects, _ = check.helm_render("values-production.yaml")
    boards = [o for o in objects if "-dashboard-" in o["metadata"]["name"]]
    assert len(boards) == 4 and check.one_copy_violations(objects) == []
    tampered = copy.deepcopy(boards[0])
    key = next(iter(tampered["data"]))
    tampered["data"][key] += " "
    assert check.one_copy_violations([tampered]) == [
        f"ConfigMap/{tampered['metadata']['name']}: {key} differs from "
        f"{(check.DASHBOARDS / key).relative_to(check.ROOT)}"
    ]
