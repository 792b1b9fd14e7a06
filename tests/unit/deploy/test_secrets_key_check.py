"""`make k8s-check`'s checks of distribution's secrets key (docs/adr/0020): named, in a Secret's
volume mounted read-only; a `*_FILE` setting pointing there is not a secret literal."""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.deploy.test_k8s_check import check, prod_kustomize  # noqa: F401 (fixture)

KEY = "BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE"


def distribution(objs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-distribution")
    )
    return found


def test_the_real_manifests_mount_the_key_read_only(
    prod_kustomize: list[dict[str, Any]],  # noqa: F811
) -> None:
    assert check.secrets_key_violations(prod_kustomize) == []
    assert check.password_literal_violations(prod_kustomize) == []
    spec = distribution(prod_kustomize)["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "secrets-key")
    assert volume["secret"] == {"secretName": "baycast-distribution-key", "defaultMode": 0o440}


def test_a_missing_writable_or_misplaced_key_is_reported(
    prod_kustomize: list[dict[str, Any]],  # noqa: F811
) -> None:
    def broken(change: Any) -> list[str]:
        objs = copy.deepcopy(prod_kustomize)
        change(distribution(objs)["spec"]["template"]["spec"])
        return check.secrets_key_violations(objs) + check.password_literal_violations(objs)

    def env(spec: dict[str, Any]) -> list[dict[str, Any]]:
        return list(spec["containers"][0]["env"])

    def drop_setting(spec: dict[str, Any]) -> None:
        spec["containers"][0]["env"] = [v for v in env(spec) if v["name"] != KEY]

    def writable(spec: dict[str, Any]) -> None:
        for mount in spec["containers"][0]["volumeMounts"]:
            mount.pop("readOnly", None)

    def elsewhere(spec: dict[str, Any]) -> None:
        for var in env(spec):
            if var["name"] == KEY:
                var["value"] = "/var/lib/baycast/key"

    assert broken(drop_setting) == ["Deployment/baycast-distribution: no " + KEY]
    assert broken(writable) == [
        "Deployment/baycast-distribution: the secrets key's volume is not read-only"
    ]
    assert broken(elsewhere) == [
        f"Deployment/baycast-distribution: {KEY} is in no Secret's volume",
        f"Deployment/baycast-distribution: {KEY} has a literal value",
    ]
