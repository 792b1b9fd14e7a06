"""Reading rendered Kubernetes objects: what check.py and its companion checks share.

deploy/k8s is not a package: check.py puts this directory on sys.path (run as a script, Python
does so itself) and imports these by module name.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

SERVICES = ("ingest", "mixer", "graphics", "distribution", "monitoring", "control")
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})


def ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def component(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", ""))


def pod_template(obj: Obj) -> Obj | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        template: Obj = obj["spec"]["template"]
        return template
    return None


def env_settings(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """The literal environment of a container: its ConfigMaps (envFrom), then its `env`."""
    by_name = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and ref["name"] in by_name:
            env.update({k: str(v) for k, v in by_name[ref["name"]].get("data", {}).items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
    return env


def is_baycast_container(container: Obj) -> bool:
    return bool(container.get("args")) and container["args"][0] in SERVICES


def secret_ref(var: Obj | None) -> tuple[str, str] | None:
    """(Secret, key) a variable takes its value from, or None."""
    ref = (var or {}).get("valueFrom", {}).get("secretKeyRef")
    return (ref.get("name", ""), ref.get("key", "")) if ref else None


def field_ref(var: Obj | None) -> str | None:
    """The downward-API field a variable takes its value from, or None."""
    path: str | None = (var or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    return path


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels/matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (
            op == "NotIn" and value in expr["values"]
        ):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True
