"""TLS in the rendered manifests (docs/adr/0019): the policy checks of check.py for a render that
runs on TLS (overlays/prod with components/tls, the chart with tls.enabled, its default).

* Every service mounts the internal Secret (baycast-internal-tls: tls.crt, tls.key, ca.crt)
  read-only, and its BAYCAST_TLS_CA_FILE, _CERT_FILE and _KEY_FILE name files inside that mount:
  gRPC is mutual TLS, and the CA checks the NATS servers.
* ingest, distribution and control also mount the edge Secret (baycast-edge-tls: tls.crt,
  tls.key) read-only, listen for HTTPS (BAYCAST_<SVC>_HTTPS_ADDR) on the port their pod declares
  as `https`, with BAYCAST_HTTPS_CERT_FILE and _KEY_FILE inside that mount; their probes stay on
  the plain `http` port (with HTTPS on, it answers /healthz, /readyz and /metrics only), and
  their public Services (…-public, control's own) lead to `https`, never to `http`.
* No NATS URL of any service is plain: BAYCAST_NATS_URL and the control room's role URLs
  (BAYCAST_CONTROL_<ROLE>_NATS_URL) are tls://.
* The NATS servers mount the internal Secret read-only; their nats.conf has a `tls` block for
  clients and, clustered, a `tls` block in `cluster` with `verify: true` (routes mutually
  authenticated), each naming cert_file, key_file and ca_file inside that mount.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from check_objects import Obj, component, env_settings, ident, is_baycast_container, pod_template

INTERNAL_SECRET = "baycast-internal-tls"
EDGE_SECRET = "baycast-edge-tls"
# The services with an HTTPS edge: WHIP (ingest), WHEP and the exchange (distribution), the
# control room's API and pages (control).
HTTPS_SERVICES = ("ingest", "distribution", "control")
INTERNAL_SETTINGS = ("TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE")
EDGE_SETTINGS = ("HTTPS_CERT_FILE", "HTTPS_KEY_FILE")
# Any NATS URL setting: BAYCAST_NATS_URL, BAYCAST_<SVC>_NATS_URL, BAYCAST_CONTROL_<ROLE>_NATS_URL.
NATS_URL_SETTING = re.compile(r"^BAYCAST_(?:[A-Z_]+_)?NATS_URL$")
SECURE_NATS_SCHEMES = ("tls", "wss")
CONF_FILES = ("cert_file", "key_file", "ca_file")


def setting(env: dict[str, str], service: str, name: str) -> str:
    """A setting as the service reads it: its own variable first, then the platform-wide one."""
    return env.get(f"BAYCAST_{service.upper()}_{name}", env.get(f"BAYCAST_{name}", ""))


def _secret_mounts(pod_spec: Obj, container: Obj, secret: str) -> list[Obj]:
    """The container's mounts of volumes of Secret `secret`."""
    volumes = {
        v["name"]
        for v in pod_spec.get("volumes", [])
        if v.get("secret", {}).get("secretName") == secret
    }
    return [m for m in container.get("volumeMounts", []) if m["name"] in volumes]


def _inside(path: str, mount: Obj) -> bool:
    return path.startswith(str(mount["mountPath"]).rstrip("/") + "/")


def mount_violations(
    pod_spec: Obj, container: Obj, secret: str, paths: dict[str, str]
) -> list[str]:
    """`secret` is mounted read-only in the container and every path of `paths` (setting ->
    path) is a file inside that mount."""
    mounts = _secret_mounts(pod_spec, container, secret)
    name = container.get("name")
    if not mounts:
        return [f"container {name}: does not mount the Secret {secret}"]
    problems = [
        f"container {name}: the Secret {secret} is mounted writable at {m['mountPath']}"
        for m in mounts
        if not m.get("readOnly")
    ]
    for var, path in paths.items():
        if not path:
            problems.append(f"container {name}: {var} is not set")
        elif not any(_inside(path, m) for m in mounts):
            problems.append(f"container {name}: {var} ({path}) is not in the Secret {secret}")
    return problems


def nats_url_violations(env: dict[str, str]) -> list[str]:
    problems = []
    for var, value in sorted(env.items()):
        if not NATS_URL_SETTING.match(var):
            continue
        for url in value.split(","):
            scheme = urlsplit(url.strip()).scheme
            if scheme not in SECURE_NATS_SCHEMES:
                problems.append(f"{var} is {scheme}://, not tls://")
    return problems


def _port_of(addr: str) -> int | None:
    _, _, port = addr.rpartition(":")
    return int(port) if port.isdigit() else None


def service_violations(obj: Obj, objects: list[Obj]) -> list[str]:
    """One workload's baycast containers: the internal identity, the edge, the NATS URLs."""
    pod = pod_template(obj)
    if pod is None:
        return []
    spec = pod["spec"]
    problems = []
    for container in spec.get("containers", []):
        if not is_baycast_container(container):
            continue
        service = container["args"][0]
        env = env_settings(container, objects)
        internal = {f"BAYCAST_{s}": setting(env, service, s) for s in INTERNAL_SETTINGS}
        problems += mount_violations(spec, container, INTERNAL_SECRET, internal)
        problems += [f"container {container['name']}: {p}" for p in nats_url_violations(env)]
        if service not in HTTPS_SERVICES:
            continue
        edge = {f"BAYCAST_{s}": setting(env, service, s) for s in EDGE_SETTINGS}
        problems += mount_violations(spec, container, EDGE_SECRET, edge)
        addr_var = f"BAYCAST_{service.upper()}_HTTPS_ADDR"
        port = _port_of(setting(env, service, "HTTPS_ADDR"))
        declared = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        if port is None:
            problems.append(f"container {container['name']}: {addr_var} is not set")
        elif declared.get("https") != port:
            problems.append(
                f"container {container['name']}: {addr_var} listens on {port}, which its port "
                f"`https` ({declared.get('https')}) is not"
            )
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe_port = container.get(kind, {}).get("httpGet", {}).get("port")
            if probe_port is not None and probe_port not in ("http", declared.get("http")):
                problems.append(
                    f"container {container['name']}: {kind} is on {probe_port}, not the plain "
                    "`http` port (the kubelet does not check certificates)"
                )
    return [f"{ident(obj)}: {p}" for p in problems]


def public_service_violations(objects: list[Obj]) -> list[str]:
    """The public Services of the HTTPS services (…-ingest-public, …-distribution-public, and
    control's own Service, which people reach through an Ingress or a port-forward) lead a TCP
    port to `https`; the public ones none to `http` (it answers probes and metrics only)."""
    problems = []
    for obj in objects:
        if obj.get("kind") != "Service" or component(obj) not in HTTPS_SERVICES:
            continue
        name = obj["metadata"]["name"]
        public = name.endswith("-public")
        if not public and component(obj) != "control":
            continue
        targets = [
            p.get("targetPort")
            for p in obj["spec"].get("ports", [])
            if p.get("protocol", "TCP") == "TCP"
        ]
        if "https" not in targets:
            problems.append(f"{ident(obj)}: no port leads to `https`")
        if public and "http" in targets:
            problems.append(
                f"{ident(obj)}: a public port leads to the plain `http` port (probes and "
                "metrics only)"
            )
    return problems


def _strip_comments(text: str) -> str:
    return "\n".join(re.sub(r"(^|\s)(#|//).*$", "", line) for line in text.splitlines())


def conf_block(text: str, name: str) -> str | None:
    """The body of the first block `name { ... }` at the top level of a nats-server config
    (`name: {`, `name {` and `name = {` alike), or None."""
    text = _strip_comments(text)
    depth = 0
    i = 0
    pattern = re.compile(rf"\b{re.escape(name)}\s*[:=]?\s*\{{")
    while i < len(text):
        if depth == 0:
            found = pattern.match(text, i)
            if found and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                start = found.end()
                level = 1
                j = start
                while j < len(text) and level:
                    level += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                return text[start : j - 1]
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return None


def conf_values(block: str) -> dict[str, str]:
    """`key: value` pairs of a block's own level (nested blocks skipped)."""
    values: dict[str, str] = {}
    depth = 0
    for line in block.splitlines():
        if depth == 0:
            found = re.match(r"\s*([a-z_]+)\s*[:=]\s*\"?([^\s\"{]+)\"?\s*$", line)
            if found:
                values[found.group(1)] = found.group(2)
        depth += line.count("{") - line.count("}")
    return values


def nats_violations(objects: list[Obj]) -> list[str]:
    """The NATS servers: the internal Secret mounted read-only, clients on TLS, routes on mutual
    TLS, every certificate file inside that mount."""
    configs = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    problems = []
    for obj in objects:
        if obj.get("kind") != "StatefulSet" or component(obj) != "nats":
            continue
        spec = obj["spec"]["template"]["spec"]
        container = spec["containers"][0]
        mounts = _secret_mounts(spec, container, INTERNAL_SECRET)
        problems += [
            f"{ident(obj)}: {p}" for p in mount_violations(spec, container, INTERNAL_SECRET, {})
        ]
        texts = [
            str(configs[v["configMap"]["name"]].get("data", {}).get("nats.conf", ""))
            for v in spec.get("volumes", [])
            if v.get("configMap", {}).get("name") in configs
        ]
        for text in [t for t in texts if t]:
            blocks = {"tls": conf_block(text, "tls")}
            cluster = conf_block(text, "cluster")
            if cluster is not None:
                blocks["cluster.tls"] = conf_block(cluster, "tls")
            for where, block in blocks.items():
                if block is None:
                    what = "routes are" if where == "cluster.tls" else "clients are"
                    problems.append(f"{ident(obj)}: nats.conf has no {where} block: {what} plain")
                    continue
                values = conf_values(block)
                for key in CONF_FILES:
                    path = values.get(key, "")
                    if not any(_inside(path, m) for m in mounts):
                        problems.append(
                            f"{ident(obj)}: nats.conf {where}.{key} ({path or 'unset'}) is not in "
                            f"the Secret {INTERNAL_SECRET}"
                        )
                if where == "cluster.tls" and values.get("verify") != "true":
                    problems.append(
                        f"{ident(obj)}: nats.conf cluster.tls has no verify: true: routes are "
                        "not mutually authenticated"
                    )
    return problems


def tls_violations(objects: list[Obj]) -> list[str]:
    """Everything above, for a render that runs on TLS."""
    problems = []
    for obj in objects:
        problems += service_violations(obj, objects)
    problems += public_service_violations(objects)
    problems += nats_violations(objects)
    return problems
