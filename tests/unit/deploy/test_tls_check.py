"""`make k8s-check`'s TLS rules (deploy/k8s/check_tls.py, docs/adr/0019): the production renders
mount both Secrets read-only with every TLS setting inside them and speak tls:// to NATS; a
missing mount, a writable one, a setting outside the mount and a plain NATS URL are each caught;
the plain renders (overlays/dev, the chart with tls.enabled false) stay the same objects."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.deploy.test_k8s_check import check, prod_kustomize  # noqa: F401 (fixture)

tls = check.check_tls
net = check.check_network
Obj = dict[str, Any]
Objects = list[Obj]


@pytest.fixture(scope="module")
def helm_defaults() -> Objects:
    objects, _ = check.helm_render_values({})
    return objects


def workload(objs: Objects, name: str) -> Obj:
    found: Obj = next(
        o
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name
    )
    return found


def pod_spec(objs: Objects, name: str) -> Obj:
    spec: Obj = workload(objs, name)["spec"]["template"]["spec"]
    return spec


def env_var(objs: Objects, name: str, var: str) -> Obj:
    found: Obj = next(v for v in pod_spec(objs, name)["containers"][0]["env"] if v["name"] == var)
    return found


def nats_conf(objs: Objects) -> Obj:
    found: Obj = next(
        o for o in objs if o["kind"] == "ConfigMap" and "nats.conf" in o.get("data", {})
    )
    return found


def broken(objs: Objects, change: Callable[[Objects], None]) -> list[str]:
    copied = copy.deepcopy(objs)
    change(copied)
    problems: list[str] = tls.tls_violations(copied)
    return problems


def test_the_production_renders_and_the_chart_defaults_run_on_tls(
    prod_kustomize: Objects,  # noqa: F811
    helm_defaults: Objects,
) -> None:
    production, _ = check.helm_render("values-production.yaml")
    for objs in (prod_kustomize, helm_defaults, production):
        assert tls.tls_violations(objs) == []
        assert check.settings_violations(check.Render("t", objs, production=False)) == []
        assert check.nats_config_violations(check.Render("t", objs, production=False)) == []
        mixer = pod_spec(objs, "baycast-mixer")
        assert {
            "name": "internal-tls",
            "mountPath": "/etc/baycast/tls/internal",
            "readOnly": True,
        } in (mixer["containers"][0]["volumeMounts"])
        assert {
            "name": "internal-tls",
            "secret": {"secretName": "baycast-internal-tls", "defaultMode": 0o440},
        } in mixer["volumes"]
        assert env_var(objs, "baycast-ingest", "BAYCAST_NATS_URL")["value"] == (
            "tls://ingest:$(NATS_PASSWORD)@baycast-nats.baycast.svc:4222"
        )
        assert env_var(objs, "baycast-control", "BAYCAST_CONTROL_DIRECTOR_NATS_URL")["value"] == (
            "tls://role_director:$(ROLE_DIRECTOR_NATS_PASSWORD)@baycast-nats:4222"
        )
        # Probes keep the plain port; people reach the HTTPS one.
        ingest = pod_spec(objs, "baycast-ingest")["containers"][0]
        assert ingest["readinessProbe"]["httpGet"]["port"] == "http"
        assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in ingest["ports"]
    # The production render's public URLs are https://.
    config = next(
        o
        for o in prod_kustomize
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("baycast-control-")
    )
    assert config["data"]["BAYCAST_CONTROL_INGEST_URL"].startswith("https://")


def test_the_clustered_nats_authenticates_its_routes(prod_kustomize: Objects) -> None:  # noqa: F811
    text = nats_conf(prod_kustomize)["data"]["nats.conf"]
    cluster = tls.conf_block(text, "cluster")
    assert cluster is not None
    assert tls.conf_values(tls.conf_block(cluster, "tls") or "") == {
        "cert_file": "/etc/nats-tls/tls.crt",
        "key_file": "/etc/nats-tls/tls.key",
        "ca_file": "/etc/nats-tls/ca.crt",
        "verify": "true",
        "timeout": "2",
    }
    assert tls.conf_values(tls.conf_block(text, "tls") or "")["ca_file"] == "/etc/nats-tls/ca.crt"
    # The monitoring port (probes) stays plain: no https_port.
    assert "http_port: 8222" in text and "https_port" not in text


def test_a_missing_mount_is_reported(prod_kustomize: Objects) -> None:  # noqa: F811
    def no_internal(objs: Objects) -> None:
        spec = pod_spec(objs, "baycast-mixer")
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "internal-tls"]
        container = spec["containers"][0]
        container["volumeMounts"] = [
            m for m in container["volumeMounts"] if m["name"] != "internal-tls"
        ]

    def no_edge(objs: Objects) -> None:
        container = pod_spec(objs, "baycast-control")["containers"][0]
        container["volumeMounts"] = [
            m for m in container["volumeMounts"] if m["name"] != "edge-tls"
        ]

    def no_nats_mount(objs: Objects) -> None:
        container = pod_spec(objs, "baycast-nats")["containers"][0]
        container["volumeMounts"] = [
            m for m in container["volumeMounts"] if m["name"] != "internal-tls"
        ]

    assert broken(prod_kustomize, no_internal) == [
        "Deployment/baycast-mixer: container mixer: does not mount the Secret baycast-internal-tls"
    ]
    assert broken(prod_kustomize, no_edge) == [
        "Deployment/baycast-control: container control: does not mount the Secret baycast-edge-tls"
    ]
    problems = broken(prod_kustomize, no_nats_mount)
    assert problems[0] == (
        "StatefulSet/baycast-nats: container nats: does not mount the Secret baycast-internal-tls"
    )
    assert (
        "StatefulSet/baycast-nats: nats.conf cluster.tls.cert_file (/etc/nats-tls/tls.crt) is not "
        "in the Secret baycast-internal-tls" in problems
    )


def test_a_writable_mount_is_reported(prod_kustomize: Objects) -> None:  # noqa: F811
    def writable(objs: Objects) -> None:
        for mount in pod_spec(objs, "baycast-ingest")["containers"][0]["volumeMounts"]:
            mount.pop("readOnly", None)

    assert broken(prod_kustomize, writable) == [
        "Deployment/baycast-ingest: container ingest: the Secret baycast-internal-tls is mounted "
        "writable at /etc/baycast/tls/internal",
        "Deployment/baycast-ingest: container ingest: the Secret baycast-edge-tls is mounted "
        "writable at /etc/baycast/tls/edge",
    ]


def test_a_setting_outside_the_mount_or_missing_is_reported(
    prod_kustomize: Objects,  # noqa: F811
) -> None:
    def elsewhere(objs: Objects) -> None:
        env_var(objs, "baycast-graphics", "BAYCAST_TLS_KEY_FILE")["value"] = "/tmp/tls.key"

    def unset(objs: Objects) -> None:
        container = pod_spec(objs, "baycast-distribution")["containers"][0]
        container["env"] = [v for v in container["env"] if v["name"] != "BAYCAST_HTTPS_CERT_FILE"]

    assert broken(prod_kustomize, elsewhere) == [
        "Deployment/baycast-graphics: container graphics: BAYCAST_TLS_KEY_FILE (/tmp/tls.key) is "
        "not in the Secret baycast-internal-tls"
    ]
    assert broken(prod_kustomize, unset) == [
        "Deployment/baycast-distribution: container distribution: BAYCAST_HTTPS_CERT_FILE is not "
        "set"
    ]


def test_a_plain_nats_url_is_reported(prod_kustomize: Objects) -> None:  # noqa: F811
    def plain(objs: Objects) -> None:
        var = env_var(objs, "baycast-monitoring", "BAYCAST_NATS_URL")
        var["value"] = var["value"].replace("tls://", "nats://")

    def plain_role(objs: Objects) -> None:
        var = env_var(objs, "baycast-control", "BAYCAST_CONTROL_VIEWER_NATS_URL")
        var["value"] = var["value"].replace("tls://", "nats://")

    assert broken(prod_kustomize, plain) == [
        "Deployment/baycast-monitoring: container monitoring: BAYCAST_NATS_URL is nats://, not "
        "tls://"
    ]
    assert broken(prod_kustomize, plain_role) == [
        "Deployment/baycast-control: container control: BAYCAST_CONTROL_VIEWER_NATS_URL is "
        "nats://, not tls://"
    ]


def test_plain_routes_a_plain_public_port_and_an_https_probe_are_reported(
    prod_kustomize: Objects,  # noqa: F811
) -> None:
    def unverified_routes(objs: Objects) -> None:
        data = nats_conf(objs)["data"]
        data["nats.conf"] = data["nats.conf"].replace("verify: true", "verify: false")

    def plain_clients(objs: Objects) -> None:
        data = nats_conf(objs)["data"]
        data["nats.conf"] = data["nats.conf"].replace("\ntls {", "\nplain {")

    def public_http(objs: Objects) -> None:
        for obj in objs:
            if obj["kind"] == "Service" and obj["metadata"]["name"] == "baycast-ingest-public":
                obj["spec"]["ports"][0]["targetPort"] = "http"

    def https_probe(objs: Objects) -> None:
        container = pod_spec(objs, "baycast-control")["containers"][0]
        container["livenessProbe"]["httpGet"]["port"] = "https"

    assert broken(prod_kustomize, unverified_routes) == [
        "StatefulSet/baycast-nats: nats.conf cluster.tls has no verify: true: routes are not "
        "mutually authenticated"
    ]
    assert broken(prod_kustomize, plain_clients) == [
        "StatefulSet/baycast-nats: nats.conf has no tls block: clients are plain"
    ]
    assert broken(prod_kustomize, public_http) == [
        "Service/baycast-ingest-public: no port leads to `https`",
        "Service/baycast-ingest-public: a public port leads to the plain `http` port (probes and "
        "metrics only)",
    ]
    assert broken(prod_kustomize, https_probe) == [
        "Deployment/baycast-control: container control: livenessProbe is on https, not the plain "
        "`http` port (the kubelet does not check certificates)"
    ]


def test_the_network_policies_let_the_https_ports_in(prod_kustomize: Objects) -> None:  # noqa: F811
    assert net.https_ports(prod_kustomize) == {
        "ingest": 8443,
        "distribution": 8443,
        "control": 8443,
    }
    closed = copy.deepcopy(prod_kustomize)
    for obj in closed:
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == "baycast-control":
            obj["spec"]["ingress"][0]["ports"] = [{"protocol": "TCP", "port": 8106}]
    assert net.network_policy_violations(closed) == [
        "NetworkPolicies block internet -> control TCP/8443"
    ]


def test_the_plain_chart_is_the_dev_overlay_and_carries_no_tls() -> None:
    plain, lint = check.helm_render_values(check.PLAIN_VALUES, "plain")
    assert lint == []
    dev = check.Render("kustomize dev", check.kustomize("dev"), production=False)
    assert check.parity_violations(dev, check.Render("helm plain", plain, False)) == []
    text = str(plain)
    for word in ("tls://", "internal-tls", "edge-tls", "HTTPS_ADDR", "nats-tls"):
        assert word not in text


def test_the_chart_names_the_secrets_from_its_values() -> None:
    values = {
        "tls": {"edgeSecret": "public-cert", "internalSecret": "mesh-cert", "httpsPort": 9443}
    }
    objects, lint = check.helm_render_values(values)
    assert lint == []
    control = pod_spec(objects, "baycast-control")
    assert {v["name"]: v["secret"]["secretName"] for v in control["volumes"] if "secret" in v} == {
        "internal-tls": "mesh-cert",
        "edge-tls": "public-cert",
    }
    assert env_var(objects, "baycast-control", "BAYCAST_CONTROL_HTTPS_ADDR")["value"] == (
        "0.0.0.0:9443"
    )
    nats = pod_spec(objects, "baycast-nats")
    assert [v["secret"]["secretName"] for v in nats["volumes"] if "secret" in v] == ["mesh-cert"]
