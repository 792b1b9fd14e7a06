"""The exchange in the manifests (deploy/k8s/check_exchange.py, docs/adr/0005, 0012): the real
renders carry it, and each check fails on a manifest missing what it checks: the WebRTC ranges
of ingest and distribution on the node, their public Services, the NetworkPolicy flows to and
from stations, and the secrets control, ingest and distribution share."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.deploy.test_k8s_check import (
    check,
    config_map,
    container,
    deployment,
    objects,
    webrtc_deployment,
    webrtc_env,
)

exchange = check.check_exchange
net = check.check_network
pod_security = check.check_pod_security
Obj = dict[str, Any]
Objects = list[Obj]


@pytest.fixture(scope="module")
def dev() -> Objects:
    result: Objects = check.kustomize("dev")
    return result


@pytest.fixture(scope="module")
def prod() -> Objects:
    result: Objects = check.kustomize("prod")
    return result


def find(objs: Objects, kind: str, name: str) -> Obj:
    """An object by kind and name (a kustomize ConfigMap by its name before the hash)."""
    found: Obj = next(
        o
        for o in objs
        if o["kind"] == kind
        and (
            o["metadata"]["name"] == name
            or check.KUSTOMIZE_HASH.sub("", o["metadata"]["name"]) == name
        )
    )
    return found


def env_of(objs: Objects, service: str) -> list[Obj]:
    result: list[Obj] = find(objs, "Deployment", f"baycast-{service}")["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    return result


def var(objs: Objects, service: str, name: str) -> Obj:
    found: Obj = next(v for v in env_of(objs, service) if v["name"] == name)
    return found


def config(objs: Objects, service: str) -> dict[str, str]:
    data: dict[str, str] = find(objs, "ConfigMap", f"baycast-{service}")["data"]
    return data


def helm_objects(values: dict[str, Any]) -> Objects:
    import helm_python as helm

    with check.quiet_native_stderr(), helm.Chart.load(str(check.CHART)) as chart:
        manifests = chart.render(
            values, name="baycast", namespace="baycast", is_install=True, revision=1
        )
    return [
        obj
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for obj in check.parse_documents(text)
    ]


# -- the real renders ------------------------------------------------------------------------------


def test_the_real_renders_carry_the_exchange(dev: Objects, prod: Objects) -> None:
    for objs, production in ((dev, False), (prod, True)):
        assert exchange.host_port_overlap_violations(objs) == []
        assert pod_security.namespace_violations(objs) == []
        assert pod_security.pod_violations(objs) == []
        assert exchange.public_service_violations(objs, production) == []
        assert exchange.shared_secret_violations(objs) == []
        for service in ("ingest", "distribution"):
            dep = find(objs, "Deployment", f"baycast-{service}")
            assert exchange.host_port_violations(dep, objs) == []
    dist = find(prod, "Deployment", "baycast-distribution")
    host_ports = [p["hostPort"] for p in container(dist)["ports"] if p.get("hostPort")]
    assert host_ports == list(range(40100, 40116))
    assert config(prod, "distribution")["BAYCAST_DISTRIBUTION_MAX_VIEWERS"] == "16"
    assert exchange.webrtc_range(prod, "distribution") == (40100, 40115)
    assert exchange.public_udp_ports(prod, "distribution") == list(range(9200, 9208))
    public = find(prod, "Service", "baycast-distribution-public")["spec"]
    assert (public["type"], public["externalTrafficPolicy"], public["sessionAffinity"]) == (
        "LoadBalancer",
        "Local",
        "ClientIP",
    )
    assert find(dev, "Service", "baycast-distribution-public")["spec"]["type"] == "NodePort"
    # Where people's browsers reach distribution and ingest: one URL each, wherever it is named.
    exchange_url = config(prod, "distribution")["BAYCAST_DISTRIBUTION_PUBLIC_URL"]
    assert config(prod, "ingest")["BAYCAST_INGEST_EXCHANGE_URL"] == exchange_url
    assert config(prod, "control")["BAYCAST_CONTROL_EXCHANGE_URL"] == exchange_url
    assert (
        config(prod, "control")["BAYCAST_CONTROL_INGEST_URL"]
        == config(prod, "ingest")["BAYCAST_INGEST_PUBLIC_URL"]
    )
    for service in ("ingest", "distribution"):
        assert var(prod, service, "BAYCAST_SRT_SECRET")["valueFrom"]["secretKeyRef"] == {
            "name": "baycast-shared-secrets",
            "key": "srt-secret",
        }
    for service in ("control", "ingest", "distribution"):
        assert var(prod, service, "BAYCAST_MEDIA_GRANT_SECRET")["valueFrom"]["secretKeyRef"] == {
            "name": "baycast-shared-secrets",
            "key": "media-grant-secret",
        }


# -- WebRTC on the node ----------------------------------------------------------------------------


def _spec(dep: Obj) -> Obj:
    spec: Obj = dep["spec"]["template"]["spec"]
    return spec


def _drop_env(name: str) -> Callable[[Obj], None]:
    def mutate(dep: Obj) -> None:
        container(dep)["env"] = [v for v in container(dep)["env"] if v["name"] != name]

    return mutate


def _preferred_only(dep: Obj) -> None:
    anti = _spec(dep)["affinity"]["podAntiAffinity"]
    term = anti.pop("requiredDuringSchedulingIgnoredDuringExecution")[0]
    anti["preferredDuringSchedulingIgnoredDuringExecution"] = [
        {"weight": 100, "podAffinityTerm": term}
    ]


def _host_port_differs(dep: Obj) -> None:
    container(dep)["ports"][0]["containerPort"] = 41000


@pytest.mark.parametrize(
    ("mutate", "env", "expected"),
    [
        (_drop_env("BAYCAST_DISTRIBUTION_ICE_HOSTS"), {}, "ICE_HOSTS is not the pod IP"),
        (_drop_env("BAYCAST_DISTRIBUTION_PUBLIC_IP"), {}, "PUBLIC_IP is neither the node's"),
        (lambda d: _spec(d).pop("affinity"), {}, "no required pod anti-affinity"),
        (_preferred_only, {}, "no required pod anti-affinity"),
        (
            lambda d: d["spec"]["strategy"]["rollingUpdate"].update(maxSurge=1),
            {},
            "rolling update with maxSurge 1",
        ),
        (lambda d: d["spec"].pop("strategy"), {}, "rolling update with maxSurge 25%"),
        (
            lambda d: None,
            {"BAYCAST_DISTRIBUTION_MAX_VIEWERS": "64"},
            "BAYCAST_DISTRIBUTION_MAX_VIEWERS 64 is more than the range's 3 ports",
        ),
        (
            lambda d: None,
            {"BAYCAST_DISTRIBUTION_MAX_VIEWERS": ""},
            "BAYCAST_DISTRIBUTION_MAX_VIEWERS is not set",
        ),
        (
            lambda d: None,
            {"BAYCAST_DISTRIBUTION_RTC_PORT_MIN": "0", "BAYCAST_DISTRIBUTION_RTC_PORT_MAX": "0"},
            "no BAYCAST_DISTRIBUTION_RTC_PORT_MIN..MAX",
        ),
        (_host_port_differs, {}, "are not exactly the UDP range"),
    ],
)
def test_each_webrtc_rule_catches_its_violation(
    mutate: Callable[[Obj], None], env: dict[str, str], expected: str
) -> None:
    dep = webrtc_deployment("distribution", [40000, 40001, 40002])
    assert check.workload_violations(dep, objects(dep, **webrtc_env("distribution"))) == []
    mutate(dep)
    settings = {k: v for k, v in (webrtc_env("distribution") | env).items() if v}
    violations = check.workload_violations(dep, objects(dep, **settings))
    assert len(violations) == 1 and expected in violations[0], violations


def test_a_fixed_public_address_replaces_the_nodes() -> None:
    dep = webrtc_deployment("distribution", [40000, 40001, 40002])
    _drop_env("BAYCAST_DISTRIBUTION_PUBLIC_IP")(dep)
    env = webrtc_env("distribution") | {"BAYCAST_DISTRIBUTION_PUBLIC_IP": "198.51.100.4"}
    assert check.workload_violations(dep, objects(dep, **env)) == []


def test_two_workloads_cannot_publish_the_same_host_ports() -> None:
    ingest = webrtc_deployment("ingest", [40000, 40001, 40002])
    dist = webrtc_deployment("distribution", [40100, 40101])
    assert exchange.host_port_overlap_violations([ingest, dist]) == []
    dist = webrtc_deployment("distribution", [40001, 40002, 40003])
    assert exchange.host_port_overlap_violations([ingest, dist]) == [
        "Deployment/baycast-distribution and Deployment/baycast-ingest publish the same "
        "hostPorts (UDP/40001 … UDP/40002, 2 ports): their pods cannot share a node"
    ]


def test_a_namespace_enforcing_baseline_refuses_the_webrtc_pods(prod: Objects) -> None:
    objs = copy.deepcopy(prod)
    find(objs, "Namespace", "baycast-edge")["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"
    ] = "baseline"
    assert pod_security.namespace_violations(objs) == [
        "Namespace/baycast-edge: enforces 'baseline', which refuses the pods of "
        "Deployment/baycast-distribution (they meet 'privileged')",
        "Namespace/baycast-edge: enforces 'baseline', which refuses the pods of "
        "Deployment/baycast-ingest (they meet 'privileged')",
    ]


def test_the_webrtc_services_run_apart_under_privileged(prod: Objects) -> None:
    for service in ("ingest", "distribution"):
        dep = find(prod, "Deployment", f"baycast-{service}")
        assert dep["metadata"]["namespace"] == "baycast-edge"
        # hostPorts are their one departure from "restricted".
        assert set(pod_security.restricted_departures(dep["spec"]["template"])) == {"hostPorts"}
    labels = find(prod, "Namespace", "baycast-edge")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


# -- public Services -------------------------------------------------------------------------------


def _public(objs: Objects) -> Obj:
    spec: Obj = find(objs, "Service", "baycast-distribution-public")["spec"]
    return spec


def _retarget(objs: Objects) -> None:
    _public(objs)["ports"][1]["targetPort"] = "srt-9300"


def _no_http(objs: Objects) -> None:
    _public(objs)["ports"] = _public(objs)["ports"][1:]


def _drop_public(objs: Objects) -> None:
    objs.remove(find(objs, "Service", "baycast-distribution-public"))


WHERE = "Service/baycast-distribution-public: "


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _drop_public,
            "Deployment/baycast-distribution: no public Service (…-distribution-public): "
            "stations cannot reach it",
        ),
        (
            lambda o: _public(o).pop("sessionAffinity"),
            WHERE + "sessionAffinity is not ClientIP: a session's DELETE could reach another "
            "pod than the one that answered its POST",
        ),
        (
            lambda o: _public(o).update(externalTrafficPolicy="Cluster"),
            WHERE + "externalTrafficPolicy is not Local: the pods would see a node's address "
            "instead of the station's (affinity, rate limits)",
        ),
        (
            lambda o: [_public(o).update(type="NodePort"), _public(o).pop("externalTrafficPolicy")],
            WHERE + "a NodePort, not a LoadBalancer, in production",
        ),
        (
            lambda o: _public(o)["selector"].update({"app.kubernetes.io/component": "ingest"}),
            WHERE + "does not select the distribution pods",
        ),
        (_no_http, WHERE + "does not publish the distribution HTTP port"),
        (
            _retarget,
            WHERE + "port srt-9200 leads to UDP/srt-9300, which the distribution pod does not "
            "declare",
        ),
    ],
)
def test_each_public_service_rule_catches_its_violation(
    prod: Objects, mutate: Callable[[Objects], None], expected: str
) -> None:
    objs = copy.deepcopy(prod)
    mutate(objs)
    assert exchange.public_service_violations(objs, production=True) == [expected]


# -- NetworkPolicies -------------------------------------------------------------------------------


def _policy(objs: Objects, name: str) -> Obj:
    spec: Obj = find(objs, "NetworkPolicy", name)["spec"]
    return spec


# A station's network, listed as distribution's outputs (its tally receiver, its SRT decoder).
STATIONS = "198.51.100.0/24"
STATION = net.Peer("station", ip="198.51.100.41")


def _outputs(objs: Objects, cidr: str = STATIONS) -> Objects:
    """`objs` with `cidr` listed as distribution's outputs, as an overlay's egress.yaml does."""
    _policy(objs, "baycast-distribution-outputs")["egress"] = [
        {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}]}
    ]
    return objs


def test_stations_reach_distribution_and_it_reaches_only_listed_outputs(prod: Objects) -> None:
    policies = [o for o in prod if o["kind"] == "NetworkPolicy"]
    dist = net.peer_of("distribution")
    for protocol, port in (("TCP", 8104), ("UDP", 40100), ("UDP", 40115), ("UDP", 9207)):
        # WHEP and the /exchange/... events, WHEP media, an SRT return's decoder calling
        assert net.flow_allowed(policies, net.INTERNET, dist, protocol, port), (protocol, port)
    for protocol, port in (("UDP", 40116), ("UDP", 9208), ("TCP", 9104)):
        assert not net.flow_allowed(policies, net.INTERNET, dist, protocol, port)
    # No output listed: distribution opens no connection outside the cluster.
    assert net.destinations(prod, "distribution") == []
    for protocol, port in (("UDP", 8900), ("TCP", 8900), ("UDP", 9000), ("TCP", 1935)):
        assert not net.flow_allowed(policies, dist, STATION, protocol, port)

    listed = _outputs(copy.deepcopy(prod))
    assert net.destinations(listed, "distribution") == [STATIONS]
    assert net.network_policy_violations(listed) == []
    policies = [o for o in listed if o["kind"] == "NetworkPolicy"]
    for protocol, port in (("UDP", 8900), ("TCP", 8900), ("UDP", 9000)):
        # TSL tally, an SRT return calling the station's decoder
        assert net.flow_allowed(policies, dist, STATION, protocol, port), (protocol, port)
    assert not net.flow_allowed(policies, dist, net.INTERNET, "TCP", 1935)


def _no_whep_ingress(objs: Objects) -> None:
    ports = _policy(objs, "baycast-distribution")["ingress"][0]["ports"]
    ports[:] = [p for p in ports if p.get("port") != 40100]


def _tcp_only_egress(objs: Objects) -> None:
    _policy(_outputs(objs), "baycast-distribution-outputs")["egress"][0]["ports"] = [
        {"protocol": "TCP"}
    ]


def _any_protocol_egress(objs: Objects) -> None:
    _policy(_outputs(objs), "baycast-distribution-outputs")["egress"][0].pop("ports")


def _everywhere(objs: Objects) -> None:
    _outputs(objs, "0.0.0.0/0")


def _no_peer(objs: Objects) -> None:
    _policy(_outputs(objs), "baycast-distribution-outputs")["egress"][0].pop("to")


def _graphics_anywhere_over_tcp(objs: Objects) -> None:
    _policy(objs, "baycast-graphics-bindings")["egress"] = [{"ports": [{"protocol": "TCP"}]}]


def _ingest_over_tcp(objs: Objects) -> None:
    _policy(objs, "baycast-ingest")["egress"][-1]["ports"].append({"protocol": "TCP"})


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_no_whep_ingress, "NetworkPolicies block internet -> distribution UDP/40100"),
        (
            _tcp_only_egress,
            f"NetworkPolicies block distribution -> {STATIONS} UDP/9000, a destination it lists",
        ),
        (_any_protocol_egress, f"NetworkPolicies allow distribution -> {STATIONS} SCTP/8900"),
        (
            _everywhere,
            "NetworkPolicies: distribution may open connections anywhere (0.0.0.0/0): list its "
            "destinations instead",
        ),
        (
            _no_peer,
            "NetworkPolicies: an egress rule of distribution names no peer: it reaches "
            "everywhere, inside the cluster and out",
        ),
        (
            _no_peer,
            "NetworkPolicies allow distribution -> 203.0.113.7 TCP/443, which it does not list",
        ),
        (
            _graphics_anywhere_over_tcp,
            "NetworkPolicies allow graphics -> 203.0.113.7 TCP/443, which it does not list",
        ),
        (
            _ingest_over_tcp,
            "NetworkPolicies allow ingest -> 203.0.113.7 TCP/443, which it does not list",
        ),
    ],
)
def test_a_missing_or_loose_exchange_flow_is_reported(
    prod: Objects, mutate: Callable[[Objects], None], expected: str
) -> None:
    objs = copy.deepcopy(prod)
    mutate(objs)
    assert expected in net.network_policy_violations(objs)


# -- shared secrets --------------------------------------------------------------------------------


def _other_secret(objs: Objects) -> None:
    var(objs, "control", "BAYCAST_MEDIA_GRANT_SECRET")["valueFrom"]["secretKeyRef"]["name"] = (
        "control-own"
    )


def _literal(objs: Objects) -> None:
    found = var(objs, "distribution", "BAYCAST_SRT_SECRET")
    found.pop("valueFrom")
    found["value"] = "hunter2hunter2"


def _missing(objs: Objects) -> None:
    env = env_of(objs, "ingest")
    env[:] = [v for v in env if v["name"] != "BAYCAST_SRT_SECRET"]


def _wrong_key(objs: Objects) -> None:
    ref = var(objs, "ingest", "BAYCAST_MEDIA_GRANT_SECRET")["valueFrom"]["secretKeyRef"]
    ref["key"] = "srt-secret"


def _in_config_map(objs: Objects) -> None:
    config(objs, "ingest")["BAYCAST_INGEST_SRT_SECRET"] = "hunter2hunter2"


def _unused(objs: Objects) -> None:
    env_of(objs, "mixer").append(copy.deepcopy(var(objs, "control", "BAYCAST_MEDIA_GRANT_SECRET")))


def _override(objs: Objects) -> None:
    env_of(objs, "distribution").append(
        {
            "name": "BAYCAST_DISTRIBUTION_SRT_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "baycast-shared-secrets", "key": "srt-secret"}},
        }
    )


def _secret_without_a_key(objs: Objects) -> None:
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "baycast-shared-secrets"},
            "data": {"srt-secret": "eA=="},
        }
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _other_secret,
            "the shared secrets come from several Secrets (baycast-shared-secrets, control-own): "
            "control, ingest and distribution must read the same values",
        ),
        (
            _literal,
            "Deployment/baycast-distribution: BAYCAST_SRT_SECRET is not key srt-secret of the "
            "shared Secret",
        ),
        (
            _missing,
            "Deployment/baycast-ingest: BAYCAST_SRT_SECRET is not key srt-secret of the shared "
            "Secret",
        ),
        (
            _wrong_key,
            "Deployment/baycast-ingest: BAYCAST_MEDIA_GRANT_SECRET is not key media-grant-secret "
            "of the shared Secret",
        ),
        (
            _unused,
            "Deployment/baycast-mixer: mixer gets BAYCAST_MEDIA_GRANT_SECRET, which it does not "
            "use",
        ),
        (
            _override,
            "Deployment/baycast-distribution: BAYCAST_DISTRIBUTION_SRT_SECRET would override the "
            "shared BAYCAST_SRT_SECRET",
        ),
        (_secret_without_a_key, "Secret/baycast-shared-secrets: no key media-grant-secret"),
    ],
)
def test_each_shared_secret_rule_catches_its_violation(
    dev: Objects, mutate: Callable[[Objects], None], expected: str
) -> None:
    objs = copy.deepcopy(dev)
    mutate(objs)
    assert exchange.shared_secret_violations(objs) == [expected]


def test_a_shared_secret_in_a_config_map_is_reported(dev: Objects) -> None:
    objs = copy.deepcopy(dev)
    _in_config_map(objs)
    name = find(objs, "ConfigMap", "baycast-ingest")["metadata"]["name"]
    assert exchange.shared_secret_violations(objs) == [
        f"ConfigMap/{name}: BAYCAST_INGEST_SRT_SECRET in a ConfigMap: it belongs in a Secret"
    ]


def test_a_misspelt_secret_variable_is_not_a_setting(dev: Objects) -> None:
    objs = copy.deepcopy(dev)
    var(objs, "distribution", "BAYCAST_SRT_SECRET")["name"] = "BAYCAST_SRT_SECRETS"
    problems = check.settings_violations(check.Render("dev", objs, production=False))
    assert problems == [
        "dev: Deployment/baycast-distribution: BAYCAST_SRT_SECRETS is not a setting of "
        "DistributionSettings"
    ]


# -- the chart -------------------------------------------------------------------------------------


def test_the_chart_generates_the_shared_secret_and_keeps_it() -> None:
    objs = helm_objects({})
    secret = find(objs, "Secret", "baycast-shared-secrets")
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"srt-secret", "media-grant-secret"}
    assert all(re.fullmatch(r"[A-Za-z0-9]{48}", v) for v in values.values())
    assert values["srt-secret"] != values["media-grant-secret"]
    assert exchange.shared_secret_violations(objs) == []
    # An upgrade reads the live Secret back instead of drawing new values.
    template = (check.CHART / "templates" / "shared-secret.yaml").read_text()
    assert '(lookup "v1" "Secret" .Release.Namespace $name).data' in template


def test_the_chart_uses_an_existing_shared_secret() -> None:
    objs = helm_objects({"sharedSecrets": {"existingSecret": "studio-secrets"}})
    assert not [o for o in objs if o["kind"] == "Secret" and "shared" in o["metadata"]["name"]]
    assert exchange.shared_secret_violations(objs) == []
    for service in ("control", "ingest", "distribution"):
        ref = var(objs, service, "BAYCAST_MEDIA_GRANT_SECRET")["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "studio-secrets", "key": "media-grant-secret"}


def test_the_chart_wires_the_public_urls() -> None:
    objs = helm_objects(
        {
            "services": {
                "ingest": {"publicURL": "https://ingest.example.org"},
                "distribution": {"publicURL": "https://exchange.example.org"},
            }
        }
    )
    assert config(objs, "distribution")["BAYCAST_DISTRIBUTION_PUBLIC_URL"] == (
        "https://exchange.example.org"
    )
    assert config(objs, "ingest")["BAYCAST_INGEST_EXCHANGE_URL"] == "https://exchange.example.org"
    assert config(objs, "control")["BAYCAST_CONTROL_EXCHANGE_URL"] == "https://exchange.example.org"
    assert config(objs, "control")["BAYCAST_CONTROL_INGEST_URL"] == "https://ingest.example.org"
    # One origin for everything (an Ingress): the control room's own values win.
    objs = helm_objects(
        {
            "services": {
                "distribution": {"publicURL": "https://exchange.example.org"},
                "control": {"exchangeURL": "https://studio.example.org"},
            }
        }
    )
    assert config(objs, "control")["BAYCAST_CONTROL_EXCHANGE_URL"] == "https://studio.example.org"
    assert "BAYCAST_CONTROL_INGEST_URL" not in config(objs, "control")
    render = check.Render("t", objs, production=False)
    assert check.settings_violations(render) == []


def test_the_chart_publishes_a_fixed_public_address_and_its_ranges() -> None:
    objs = helm_objects(
        {
            "services": {
                "distribution": {
                    "webrtc": {"portMin": 41000, "portMax": 41003, "publicIP": "198.51.100.4"},
                    "srtReturns": {"portMin": 9300, "portMax": 9301},
                }
            },
            "networkPolicy": {"distributionEgressCIDRs": ["198.51.100.0/24", "203.0.113.0/24"]},
        }
    )
    dist = find(objs, "Deployment", "baycast-distribution")
    assert check.workload_violations(dist, objs) == []
    assert config(objs, "distribution")["BAYCAST_DISTRIBUTION_PUBLIC_IP"] == "198.51.100.4"
    assert config(objs, "distribution")["BAYCAST_DISTRIBUTION_MAX_VIEWERS"] == "4"
    assert exchange.public_udp_ports(objs, "distribution") == [9300, 9301]
    assert exchange.public_service_violations(objs, production=False) == []
    assert net.destinations(objs, "distribution") == ["198.51.100.0/24", "203.0.113.0/24"]
    assert net.network_policy_violations(objs) == []
    egress = _policy(objs, "baycast-distribution-outputs")["egress"][-1]
    assert egress == {
        "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}, {"ipBlock": {"cidr": "203.0.113.0/24"}}],
        "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}],
    }


def test_the_chart_refuses_overlapping_ranges_and_secrets_in_settings() -> None:
    import helm_python as helm

    with check.quiet_native_stderr(), helm.Chart.load(str(check.CHART)) as chart:
        overlap = {"services": {"distribution": {"webrtc": {"portMin": 40010, "portMax": 40020}}}}
        with pytest.raises(helm.HelmError, match="overlap"):
            chart.render(overlap, name="baycast")
        # Extra settings land in a ConfigMap: any other name passes, a secret's does not.
        setting = {"services": {"ingest": {"env": {"BAYCAST_INGEST_WHIP_RATE_BURST": 30}}}}
        chart.validate_schema(chart.merge_values(setting))
        secret_setting = {"services": {"ingest": {"env": {"BAYCAST_SRT_SECRET": "x"}}}}
        with pytest.raises(helm.HelmError):
            chart.validate_schema(chart.merge_values(secret_setting))


def test_a_config_map_cannot_hold_a_shared_secret_in_a_unit_render() -> None:
    dep = deployment("control")
    cm = config_map("baycast-control", {"BAYCAST_MEDIA_GRANT_SECRET": "hunter2hunter2"})
    problems = exchange.shared_secret_violations([dep, cm])
    assert problems == [
        "ConfigMap/baycast-control: BAYCAST_MEDIA_GRANT_SECRET in a ConfigMap: it belongs in a "
        "Secret",
        "Deployment/baycast-control: BAYCAST_MEDIA_GRANT_SECRET is not key media-grant-secret "
        "of the shared Secret",
    ]
