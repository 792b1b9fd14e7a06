"""NATS users in Kubernetes (deploy/k8s/check.py, docs/adr/0009): the rendered authorization is
GRANTS, drift is caught, each service connects as its own user, no password is rendered outside a
Secret, and the rendered config really runs: a real nats-server with it lets each service in with
the password Kubernetes puts in its URL, refuses a client without one, and keeps graphics off the
mixer's commands."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from services.common import nats_accounts
from services.common.bus import inbox_prefix
from services.common.nats_accounts import GRANTS, USERS, permissions
from tests.support.nats import NatsServer, free_port
from tests.unit.deploy.test_k8s_check import check

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def dev() -> Objects:
    result: Objects = check.kustomize("dev")
    return result


def nats_config(objects: Objects) -> dict[str, Any]:
    found: dict[str, Any] = next(
        o for o in objects if o["kind"] == "ConfigMap" and "nats.conf" in o.get("data", {})
    )
    return found


def deployment(objects: Objects, service: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(service)
    )
    return found


def env_var(obj: dict[str, Any], name: str) -> dict[str, Any]:
    env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
    found: dict[str, Any] = next(v for v in env if v["name"] == name)
    return found


def test_the_authorization_block_is_grants_with_password_variables() -> None:
    auth = check.parse_authorization(check.nats_auth_conf())
    assert auth is not None
    users = {u["user"]: u for u in auth["users"]}
    assert (
        tuple(users)
        == USERS
        == (
            "ingest",
            "mixer",
            "graphics",
            "distribution",
            "monitoring",
            "control",
            "role_director",
            "role_graphics",
            "role_audio",
            "role_viewer",
            "admin",
        )
    )
    for user in USERS:
        assert users[user]["permissions"] == permissions(user)
        assert users[user]["password"] == f"${user.upper()}_NATS_PASSWORD"
    # Unquoted: nats-server expands $VAR only outside quotes.
    assert '"password": $MIXER_NATS_PASSWORD,' in check.nats_auth_conf()


def test_the_real_renders_have_every_user_and_no_password(dev: Objects) -> None:
    assert check.nats_auth_violations(dev) == []
    assert check.password_literal_violations(dev) == []
    assert check.nats_config_violations(check.Render("dev", dev, production=False)) == []
    mixer = deployment(dev, "mixer")
    assert env_var(mixer, "BAYCAST_NATS_URL")["value"] == (
        "nats://mixer:$(NATS_PASSWORD)@baycast-nats:4222"
    )
    # From the edge namespace, the NATS Service by its namespace-qualified name.
    assert env_var(deployment(dev, "ingest"), "BAYCAST_NATS_URL")["value"] == (
        "nats://ingest:$(NATS_PASSWORD)@baycast-nats.baycast.svc:4222"
    )
    assert env_var(mixer, "NATS_PASSWORD")["valueFrom"]["secretKeyRef"] == {
        "name": "baycast-nats-users",
        "key": "mixer",
    }


def test_a_change_to_grants_makes_the_generated_files_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not [p for p in check.stale_generated_files()[0] if p in check.nats_auth_files()]
    wider = dataclasses.replace(GRANTS["graphics"], sends=("prod.*.mixer.cmd",))
    monkeypatch.setitem(nats_accounts.GRANTS, "graphics", wider)
    stale = check.stale_generated_files()[0]
    assert check.NATS_AUTH_CONF in stale and check.NATS_AUTH_CHART in stale
    assert "baycast.v1.prod.*.mixer.cmd" in stale[check.NATS_AUTH_CONF]


def test_drift_in_a_rendered_config_is_reported(
    dev: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = copy.deepcopy(dev)
    data = nats_config(objects)["data"]
    data["auth.conf"] = data["auth.conf"].replace('"user": "monitoring"', '"user": "monitor"')
    data["nats.conf"] = data["nats.conf"].replace("include auth.conf", "")
    assert check.nats_auth_violations(objects) == [
        f"{check.ident(nats_config(objects))}: nats.conf does not include auth.conf",
        f"{check.ident(nats_config(objects))}: no NATS user monitoring",
        f"{check.ident(nats_config(objects))}: NATS user monitor is not in GRANTS",
    ]
    wider = dataclasses.replace(GRANTS["graphics"], sends=("prod.*.mixer.cmd",))
    monkeypatch.setitem(nats_accounts.GRANTS, "graphics", wider)
    problems = check.nats_auth_violations(dev)
    assert len(problems) == 1 and "permissions of graphics differ" in problems[0]
    assert "check.py --sync" in problems[0]


def test_each_service_must_connect_as_its_own_user(dev: Objects) -> None:
    objects = copy.deepcopy(dev)
    graphics = deployment(objects, "graphics")
    env_var(graphics, "BAYCAST_NATS_URL")["value"] = (
        "nats://admin:$(NATS_PASSWORD)@baycast-nats:4222"
    )
    env_var(deployment(objects, "mixer"), "NATS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = (
        "admin"
    )
    env_var(deployment(objects, "ingest"), "BAYCAST_NATS_URL")["value"] = "nats://baycast-nats:4222"
    nats_pod = next(o for o in objects if o["kind"] == "StatefulSet")
    env_var(nats_pod, "ADMIN_NATS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "ingest"
    assert sorted(check.nats_auth_violations(objects)) == [
        "Deployment/baycast-graphics: BAYCAST_NATS_URL does not name the NATS user graphics",
        "Deployment/baycast-ingest: BAYCAST_NATS_URL does not name the NATS user ingest",
        "Deployment/baycast-mixer: NATS_PASSWORD is not key mixer of the NATS Secret",
        "StatefulSet/baycast-nats: ADMIN_NATS_PASSWORD is not key admin of a Secret",
    ]


def test_a_password_anywhere_but_a_secret_is_reported(dev: Objects) -> None:
    objects = copy.deepcopy(dev)
    mixer = deployment(objects, "mixer")
    env_var(mixer, "BAYCAST_NATS_URL")["value"] = "nats://mixer:hunter2@baycast-nats:4222"
    env_var(mixer, "NATS_PASSWORD").pop("valueFrom")
    env_var(mixer, "NATS_PASSWORD")["value"] = "hunter2"
    config = nats_config(objects)
    config["data"]["auth.conf"] = config["data"]["auth.conf"].replace(
        "$INGEST_NATS_PASSWORD", '"hunter2"'
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "baycast-nats-users"},
        "stringData": {"url": "nats://mixer:hunter2@baycast-nats:4222"},
    }
    assert check.password_literal_violations([*objects, secret]) == [
        f"{check.ident(config)}: a password literal in auth.conf",
        "Deployment/baycast-mixer: a password in the URL of user mixer",
        "Deployment/baycast-mixer: NATS_PASSWORD has a literal value",
    ]


def test_a_secret_without_every_user_is_reported(dev: Objects) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "baycast-nats-users"},
        "data": {user: "eA==" for user in USERS if user != "admin"},
    }
    assert check.nats_auth_violations([*dev, secret]) == [
        "Secret/baycast-nats-users: no password for NATS user admin"
    ]


def test_the_nats_config_check_needs_the_included_file(dev: Objects) -> None:
    objects = copy.deepcopy(dev)
    nats_config(objects)["data"].pop("auth.conf")
    problems = check.nats_config_violations(check.Render("dev", objects, production=False))
    assert len(problems) == 1 and "nats-server refuses it" in problems[0]


def runnable(config: dict[str, Any], tmp: Path, http_port: int) -> Path:
    """The rendered ConfigMap's files, with the pod's paths moved under `tmp`."""
    for name, text in config["data"].items():
        (tmp / name).write_text(text, encoding="utf-8")
    conf = tmp / "nats.conf"
    text = conf.read_text(encoding="utf-8")
    # NatsServer gives the store directory (-sd) and the port (-p).
    text = text.replace("/var/run/nats/", f"{tmp}/").replace("store_dir: /data", "")
    text = re.sub(r"http_port: \d+", f"http_port: {http_port}", text)
    conf.write_text(text, encoding="utf-8")
    return conf


async def test_the_rendered_config_runs_with_a_user_per_service(
    dev: Objects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwords = nats_accounts.generate_passwords()
    monkeypatch.setenv("POD_NAME", "baycast-nats-0")  # the downward API
    for user, password in passwords.items():  # what the Secret gives the NATS pod
        monkeypatch.setenv(f"{user.upper()}_NATS_PASSWORD", password)
    conf = runnable(nats_config(dev), tmp_path, free_port())
    server = NatsServer(store_dir=str(tmp_path), config=str(conf)).start()
    try:
        urls = {}
        for service in ("ingest", "mixer", "graphics", "distribution", "monitoring", "control"):
            url = env_var(deployment(dev, service), "BAYCAST_NATS_URL")["value"]
            # What Kubernetes does with $(NATS_PASSWORD); the test reaches the server locally.
            url = url.replace("$(NATS_PASSWORD)", passwords[service])
            # ingest and distribution name it from their namespace (baycast-edge).
            urls[service] = re.sub(
                r"@baycast-nats(\.baycast\.svc)?:4222$", f"@127.0.0.1:{server.port}", url
            )
            assert urls[service] != url
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)

        for url in urls.values():  # every service's user gets in with its URL
            client = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
            await client.close()

        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        # Each with its own reply inbox, as the services' bus connects.
        mixer = await nats.connect(
            urls["mixer"], allow_reconnect=False, inbox_prefix=inbox_prefix("mixer")
        )
        graphics = await nats.connect(
            urls["graphics"],
            allow_reconnect=False,
            error_cb=on_error,
            inbox_prefix=inbox_prefix("graphics"),
        )
        try:
            kv = await mixer.jetstream().create_key_value(bucket="mixer-state")
            assert await kv.put("p1", b"on air") == 1
            await graphics.publish("baycast.v1.prod.p1.mixer.cmd.cut", b"cut")
            await graphics.flush()
            for _ in range(50):
                if errors:
                    break
                await asyncio.sleep(0.05)
            assert any("permissions violation" in e.lower() for e in errors), errors
        finally:
            await graphics.close()
            await mixer.close()
    finally:
        server.stop()


def test_generated_passwords_start_with_a_letter() -> None:
    # nats-server reads them from the environment and takes a value starting with a digit for a
    # number: the whole configuration then fails to parse.
    for _ in range(50):
        for password in nats_accounts.generate_passwords().values():
            assert re.fullmatch(r"[a-z][0-9a-f]{48}", password)
    template = Path("deploy/k8s/helm/baycast/templates/nats-secret.yaml").read_text()
    assert 'printf "p%s" (randAlphaNum 31)' in template
