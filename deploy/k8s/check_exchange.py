"""The exchange in the rendered manifests: the policy checks of check.py for what stations reach.

* WebRTC on the node (docs/adr/0005, 0012): ingest (WHIP) and distribution (WHEP) publish
  exactly their configured UDP range as hostPorts, UDP only, hostPort = containerPort; the pod
  takes no more sessions or viewers than the range has ports; ICE binds the pod address and the
  SDP answer announces the node's (or a fixed one); a required anti-affinity keeps one pod per
  node and rollouts replace in place (a surge pod would find no node with the ports free). No
  other container publishes a hostPort, and no two workloads publish the same one. (That their
  namespace's Pod Security level admits the hostPorts: check_pod_security.)
* Their public Services: each selects its pods (in their namespace), keeps a client on one pod
  (ClientIP: a WHIP or WHEP DELETE reaches the pod that answered the POST), keeps the client's
  address (externalTrafficPolicy Local on a LoadBalancer), publishes the HTTP port (HTTPS with
  TLS on, check_tls) and leads only to ports the pod declares; a production render makes them
  LoadBalancers.
* Shared secrets: BAYCAST_SRT_SECRET (ingest, distribution: a station's SRT passphrase derives
  from it) and BAYCAST_MEDIA_GRANT_SECRET (control, ingest, distribution: media grants) come
  from one Secret, the same keys for every pod that uses them, never from a ConfigMap or a
  literal, never overridden by a service-specific variable, and reach no pod that does not use
  them.
"""

from __future__ import annotations

import re

from check_objects import (
    Obj,
    component,
    env_settings,
    field_ref,
    ident,
    is_baycast_container,
    pod_template,
    secret_ref,
    selects,
)

# The services that publish a WebRTC range, and the setting that bounds their peers (one UDP
# port each: WHIP and WHEP bundle audio and video).
WEBRTC_SERVICES = {"ingest": "MAX_SESSIONS", "distribution": "MAX_VIEWERS"}
HOSTNAME = "kubernetes.io/hostname"

# Variable -> (key in the shared Secret, services that use it).
SHARED_SECRETS = {
    "BAYCAST_SRT_SECRET": ("srt-secret", ("ingest", "distribution")),
    "BAYCAST_MEDIA_GRANT_SECRET": ("media-grant-secret", ("control", "ingest", "distribution")),
}
# Any variable that sets one of them: the platform-wide name or a service's own.
SHARED_SETTING = re.compile(r"^BAYCAST_(?:[A-Z]+_)?(SRT_SECRET|MEDIA_GRANT_SECRET)$")


def rtc_range(env: dict[str, str], service: str) -> tuple[int, int] | None:
    """BAYCAST_<SERVICE>_RTC_PORT_MIN..MAX, when both are set (0 means unset)."""
    prefix = f"BAYCAST_{service.upper()}_RTC_PORT_"
    try:
        low, high = int(env[prefix + "MIN"]), int(env[prefix + "MAX"])
    except (KeyError, ValueError):
        return None
    return (low, high) if low else None


def workload_of(objects: list[Obj], service: str) -> Obj | None:
    return next(
        (o for o in objects if o.get("kind") == "Deployment" and component(o) == service), None
    )


def webrtc_range(objects: list[Obj], service: str) -> tuple[int, int] | None:
    """The WebRTC range the service's Deployment is configured with, if any."""
    obj = workload_of(objects, service)
    if obj is None:
        return None
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return rtc_range(env_settings(container, objects), service)


def public_services(objects: list[Obj], service: str) -> list[Obj]:
    return [
        o
        for o in objects
        if o.get("kind") == "Service"
        and component(o) == service
        and o["metadata"]["name"].endswith(f"-{service}-public")
    ]


def public_udp_ports(objects: list[Obj], service: str) -> list[int]:
    """The UDP ports the service's public Service publishes (SRT listeners)."""
    return sorted(
        int(p["port"])
        for svc in public_services(objects, service)
        for p in svc["spec"].get("ports", [])
        if p.get("protocol", "TCP") == "UDP"
    )


def _one_pod_per_node(spec: Obj, labels: dict[str, str]) -> bool:
    terms = (
        spec.get("affinity", {})
        .get("podAntiAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", [])
    )
    return any(
        term.get("topologyKey") == HOSTNAME and selects(term.get("labelSelector", {}), labels)
        for term in terms
    )


def host_port_violations(obj: Obj, objects: list[Obj]) -> list[str]:
    """One workload's hostPorts: only a WebRTC range, exactly as configured, and what the range
    needs around it (docs/adr/0005). Messages without the workload's name (the caller adds it)."""
    pod = pod_template(obj)
    if pod is None:
        return []
    spec = pod["spec"]
    labels = pod["metadata"].get("labels", {})
    problems = []
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        name = container.get("name")
        host_ports = [p for p in container.get("ports", []) if p.get("hostPort")]
        published = sorted(p["hostPort"] for p in host_ports)
        service = container["args"][0] if is_baycast_container(container) else None
        if service not in WEBRTC_SERVICES:
            if host_ports:
                problems.append(
                    f"container {name}: hostPorts {published}: only ingest's and "
                    "distribution's WebRTC ranges are published on the node"
                )
            continue
        S = service.upper()
        env = env_settings(container, objects)
        window = rtc_range(env, service)
        if window is None:
            problems.append(
                f"container {name}: no BAYCAST_{S}_RTC_PORT_MIN..MAX: ICE would bind ports "
                "no station can reach"
            )
            continue
        if (
            any(p.get("protocol") != "UDP" for p in host_ports)
            or published != list(range(window[0], window[1] + 1))
            or any(p["hostPort"] != p["containerPort"] for p in host_ports)
        ):
            problems.append(
                f"container {name}: hostPorts {published} are not exactly the UDP range "
                f"BAYCAST_{S}_RTC_PORT_MIN..MAX {window}"
            )
        size = window[1] - window[0] + 1
        capacity = f"BAYCAST_{S}_{WEBRTC_SERVICES[service]}"
        value = env.get(capacity, "")
        if not value.isdigit():
            problems.append(
                f"container {name}: {capacity} is not set: a pod takes at most one peer per "
                f"port of its range ({size})"
            )
        elif int(value) > size:
            problems.append(
                f"container {name}: {capacity} {value} is more than the range's {size} ports "
                "(one per peer)"
            )
        variables = {v["name"]: v for v in container.get("env", [])}
        if field_ref(variables.get(f"BAYCAST_{S}_ICE_HOSTS")) != "status.podIP":
            problems.append(f"BAYCAST_{S}_ICE_HOSTS is not the pod IP (status.podIP)")
        public_ip = f"BAYCAST_{S}_PUBLIC_IP"
        if field_ref(variables.get(public_ip)) != "status.hostIP" and not env.get(public_ip):
            problems.append(
                f"{public_ip} is neither the node's address (status.hostIP) nor a fixed one: "
                "SDP answers would announce the pod address"
            )
        if not _one_pod_per_node(spec, labels):
            problems.append(
                f"no required pod anti-affinity on {HOSTNAME}: one {service} pod per node, "
                "whose address its SDP answers announce"
            )
        if obj.get("kind") == "Deployment":
            surge = obj["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
            if str(surge) not in ("0", "0%"):
                problems.append(
                    f"rolling update with maxSurge {surge}: once every node runs one, a surge "
                    f"{service} pod finds no node with the ports free (replace in place: 0)"
                )
    return problems


def host_port_overlap_violations(objects: list[Obj]) -> list[str]:
    """Two workloads publishing the same hostPort could never share a node."""
    owners: dict[tuple[str, int], set[str]] = {}
    for obj in objects:
        pod = pod_template(obj)
        for container in (pod or {}).get("spec", {}).get("containers", []):
            for port in container.get("ports", []):
                if port.get("hostPort"):
                    key = (port.get("protocol", "TCP"), int(port["hostPort"]))
                    owners.setdefault(key, set()).add(ident(obj))
    shared: dict[tuple[str, ...], list[str]] = {}
    for (protocol, port), names in sorted(owners.items()):
        if len(names) > 1:
            shared.setdefault(tuple(sorted(names)), []).append(f"{protocol}/{port}")
    return [
        f"{' and '.join(names)} publish the same hostPorts ({ports[0]}"
        + (f" … {ports[-1]}, {len(ports)} ports" if len(ports) > 1 else "")
        + "): their pods cannot share a node"
        for names, ports in shared.items()
    ]


def _declares(container: Obj, target: int | str, protocol: str) -> bool:
    for port in container.get("ports", []):
        if port.get("protocol", "TCP") != protocol:
            continue
        if target in (port.get("name"), port.get("containerPort")):
            return True
    return False


def public_service_violations(objects: list[Obj], production: bool) -> list[str]:
    """Each WebRTC service's public Service: stations reach its HTTP port, a session stays on its
    pod, the pod sees the station's address, and every port leads somewhere."""
    problems = []
    for service in WEBRTC_SERVICES:
        obj = workload_of(objects, service)
        if obj is None:
            continue
        pod = obj["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        container = pod["spec"]["containers"][0]
        publics = public_services(objects, service)
        if not publics:
            problems.append(
                f"{ident(obj)}: no public Service (…-{service}-public): stations cannot reach it"
            )
        for svc in publics:
            spec = svc["spec"]
            where = ident(svc)
            if not spec.get("selector") or not selects({"matchLabels": spec["selector"]}, labels):
                problems.append(f"{where}: does not select the {service} pods")
            elif svc["metadata"].get("namespace") != obj["metadata"].get("namespace"):
                problems.append(
                    f"{where}: is not in the namespace of the {service} pods "
                    f"({obj['metadata'].get('namespace')}): it selects none of them"
                )
            if spec.get("sessionAffinity") != "ClientIP":
                problems.append(
                    f"{where}: sessionAffinity is not ClientIP: a session's DELETE could reach "
                    "another pod than the one that answered its POST"
                )
            kind = spec.get("type", "ClusterIP")
            if kind == "LoadBalancer" and spec.get("externalTrafficPolicy") != "Local":
                problems.append(
                    f"{where}: externalTrafficPolicy is not Local: the pods would see a node's "
                    "address instead of the station's (affinity, rate limits)"
                )
            if production and kind != "LoadBalancer":
                problems.append(f"{where}: a {kind}, not a LoadBalancer, in production")
            ports = spec.get("ports", [])
            # With TLS (docs/adr/0019) the public port leads to the HTTPS listener (check_tls).
            http = ("http", _http_port(container), "https", _http_port(container, "https"))
            if not any(
                p.get("protocol", "TCP") == "TCP" and p.get("targetPort", p["port"]) in http
                for p in ports
            ):
                problems.append(f"{where}: does not publish the {service} HTTP port")
            for port in ports:
                protocol = port.get("protocol", "TCP")
                target = port.get("targetPort", port["port"])
                if not _declares(container, target, protocol):
                    problems.append(
                        f"{where}: port {port.get('name', port['port'])} leads to "
                        f"{protocol}/{target}, which the {service} pod does not declare"
                    )
    return problems


def _http_port(container: Obj, name: str = "http") -> int | None:
    return next(
        (p.get("containerPort") for p in container.get("ports", []) if p.get("name") == name),
        None,
    )


def shared_secret_violations(objects: list[Obj]) -> list[str]:
    """BAYCAST_SRT_SECRET and BAYCAST_MEDIA_GRANT_SECRET: from one Secret, in every pod that uses
    them and no other, never in plain sight, never overridden per service."""
    problems = []
    for obj in objects:
        if obj.get("kind") == "ConfigMap":
            for key in obj.get("data") or {}:
                if SHARED_SETTING.match(key):
                    problems.append(f"{ident(obj)}: {key} in a ConfigMap: it belongs in a Secret")
    secrets: set[str] = set()
    for obj in objects:
        pod = pod_template(obj)
        for container in (pod or {}).get("spec", {}).get("containers", []):
            if not is_baycast_container(container):
                continue
            service = container["args"][0]
            variables = {v["name"]: v for v in container.get("env", [])}
            for name in variables:
                found = SHARED_SETTING.match(name)
                if found and name not in SHARED_SECRETS:
                    problems.append(
                        f"{ident(obj)}: {name} would override the shared BAYCAST_{found.group(1)}"
                    )
            for name, (key, users) in SHARED_SECRETS.items():
                var = variables.get(name)
                if service not in users:
                    if var is not None:
                        problems.append(
                            f"{ident(obj)}: {service} gets {name}, which it does not use"
                        )
                    continue
                ref = secret_ref(var)
                if ref is None or ref[1] != key:
                    problems.append(f"{ident(obj)}: {name} is not key {key} of the shared Secret")
                    continue
                secrets.add(ref[0])
    if len(secrets) > 1:
        problems.append(
            f"the shared secrets come from several Secrets ({', '.join(sorted(secrets))}): "
            "control, ingest and distribution must read the same values"
        )
    for obj in objects:
        if obj.get("kind") == "Secret" and obj["metadata"]["name"] in secrets:
            keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            for key, _ in SHARED_SECRETS.values():
                if key not in keys:
                    problems.append(f"{ident(obj)}: no key {key}")
    return problems
