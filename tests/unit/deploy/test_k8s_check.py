"""The policy checker of deploy/k8s/check.py: each rule catches its violation, and the real
manifests and chart pass it."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CHECK_PY = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "check.py"


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_check", CHECK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_check"] = module
    spec.loader.exec_module(module)
    return module


check = _load_check()


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
        "metadata": {"name": f"baycast-{service}", "labels": labels(service)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(service)},
            "template": {
                "metadata": {"labels": labels(service)},
                "spec": {
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
        (lambda d: container(d).pop("livenessProbe"), "no livenessProbe"),
        (lambda d: container(d).pop("readinessProbe"), "no readinessProbe"),
        (lambda d: container(d).pop("startupProbe"), "no startupProbe"),
        (
            lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
            "readiness must GET /readyz",
        ),
        (lambda d: container(d)["resources"].pop("limits"), "no cpu limit"),
        (lambda d: container(d)["resources"]["requests"].pop("memory"), "no memory request"),
        (
            lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
            "runAsNonRoot is not true",
        ),
        (
            lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "readOnlyRootFilesystem is not true",
        ),
        (
            lambda d: container(d)["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation is not false",
        ),
        (
            lambda d: container(d)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
            "capabilities do not drop ALL",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"),
            "seccomp profile is not RuntimeDefault",
        ),
        (lambda d: container(d).update(volumeMounts=[]), "no emptyDir at /tmp"),
        (
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
            "terminationGracePeriodSeconds 10 is not longer than the drain (10.0 s)",
        ),
        (lambda d: container(d).update(image="ghcr.io/baycast/baycast:latest"), "no fixed tag"),
        (lambda d: container(d).update(env=[]), "ADVERTISE_HOST is not the pod IP"),
        (lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True), "hostNetwork is on"),
    ],
)
def test_each_pod_rule_catches_its_violation(mutate: Any, expected: str) -> None:
    dep = deployment()
    mutate(dep)
    violations = check.workload_violations(dep, objects(dep))
    assert any(expected in v for v in violations), violations


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
    assert check.network_policy_violations(prod_kustomize) == []
    policies = _policies(prod_kustomize)
    mixer, ingest = check.peer_of("mixer"), check.peer_of("ingest")
    assert check.flow_allowed(policies, mixer, ingest, "TCP", 9101)
    assert not check.flow_allowed(policies, ingest, mixer, "TCP", 9102)
    assert check.flow_allowed(policies, check.INTERNET, ingest, "UDP", 40015)
    assert not check.flow_allowed(policies, check.INTERNET, ingest, "UDP", 40016)


def test_missing_default_deny_or_a_dropped_flow_is_reported(
    prod_kustomize: list[dict[str, Any]],
) -> None:
    no_deny = [o for o in prod_kustomize if o["metadata"]["name"] != "baycast-default-deny"]
    assert any("no default-deny" in v for v in check.network_policy_violations(no_deny))

    no_graphics_ingress = copy.deepcopy(prod_kustomize)
    for obj in no_graphics_ingress:
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "baycast-graphics":
            obj["spec"]["ingress"] = []
    violations = check.network_policy_violations(no_graphics_ingress)
    assert "NetworkPolicies block mixer -> graphics TCP/9103" in violations

    open_mixer = copy.deepcopy(prod_kustomize)
    for obj in open_mixer:
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "baycast-mixer":
            obj["spec"]["ingress"].append({})  # from anywhere, any port
    violations = check.network_policy_violations(open_mixer)
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


def test_the_chart_refuses_a_grace_period_not_longer_than_the_drain() -> None:
    import helm_python as helm

    with helm.Chart.load(str(check.CHART)) as chart:
        with pytest.raises(helm.HelmError, match=r"longer than common\.drainSeconds"):
            chart.render({"common": {"terminationGracePeriodSeconds": 10}}, name="baycast")
        with pytest.raises(helm.HelmError, match="replicas"):
            chart.validate_schema(chart.merge_values({"nats": {"replicas": 2}}))


def test_the_real_manifests_and_chart_pass(prod_kustomize: list[dict[str, Any]]) -> None:
    helm_objects, lint = check.helm_render("values-production.yaml")
    dashboards = [check.file_stem(p) for p in check.dashboard_sources()]
    rules = [check.file_stem(p) for p in check.rule_sources()]
    kustomized = check.Render("kustomize prod", prod_kustomize, True, dashboards, rules)
    helmed = check.Render("helm production", helm_objects, True, dashboards, rules)
    assert lint == []
    assert check.policy_violations(kustomized) == []
    assert check.policy_violations(helmed) == []
    assert check.parity_violations(kustomized, helmed) == []
    deployments = {o["metadata"]["name"]: o for o in helm_objects if o["kind"] == "Deployment"}
    # The HPAs own ingest's and distribution's counts (at least 2 each).
    assert {name: check.replica_count(d, helm_objects) for name, d in deployments.items()} == {
        "baycast-ingest": 2,
        "baycast-mixer": 2,
        "baycast-graphics": 2,
        "baycast-distribution": 2,
        "baycast-monitoring": 2,
        "baycast-control": 2,
    }
    assert "replicas" not in deployments["baycast-ingest"]["spec"]


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
