"""NetworkPolicies in the rendered manifests: the policy checks of check.py for who reaches whom.

The policies are evaluated as Kubernetes does, across namespaces: a pod is isolated in a
direction once a policy of its namespace selects it for that direction, and a flow passes when
the sender's egress and the receiver's ingress both allow it (replies to an allowed connection
pass on their own). Peers outside the cluster are addresses, matched against `ipBlock`s.

* Every namespace that runs a workload denies everything by default (`podSelector: {}`, both
  directions, no rule), and every workload has a policy of its own.
* The flows the design needs pass: DNS, NATS (clients from both namespaces, routes), the media
  plane's gRPC, Prometheus' scrapes, the public edges (WHIP, RTMP, SRT and WebRTC media of
  ingest; HLS, WHEP and SRT returns of distribution; the control room; with TLS, the HTTPS port
  of each of the three beside its plain one); a sample of flows it does not need is stopped.
* Outside the cluster: ingest sends ICE checks over UDP (stations are anywhere); distribution
  and graphics open connections only to the destinations their policies list (outputs, binding
  hosts: none by default, never everywhere), and reach every one they list; nothing else opens
  a connection outside the cluster. WHEP viewers, HLS players and decoders calling SRT returns
  need no egress: distribution answers their connections.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import check_exchange
from check_objects import SERVICES, Obj, component, ident, pod_template, selects

RELEASE = "baycast"
NAMESPACE = "baycast"  # everything but the WebRTC services (docs/adr/0005)
EDGE_NAMESPACE = "baycast-edge"  # ingest and distribution: their hostPort ranges
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label Kubernetes gives every namespace


@dataclass(frozen=True)
class Peer:
    """A traffic end: a pod (its labels, its namespace), or an address outside the cluster."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    namespace: str | None = None
    ip: str | None = None  # outside the cluster

    @property
    def in_cluster(self) -> bool:
        return self.ip is None

    def namespace_labels(self) -> dict[str, str]:
        return {NAMESPACE_NAME: self.namespace} if self.namespace else {}


def default_namespace(component_name: str) -> str:
    return EDGE_NAMESPACE if component_name in check_exchange.WEBRTC_SERVICES else NAMESPACE


def peer_of(component_name: str, namespace: str | None = None) -> Peer:
    """The pods of a baycast component, in `namespace` (default: where the base puts it)."""
    return Peer(
        component_name,
        (
            ("app.kubernetes.io/component", component_name),
            ("app.kubernetes.io/instance", RELEASE),
            ("app.kubernetes.io/name", "baycast"),
        ),
        namespace or default_namespace(component_name),
    )


PROMETHEUS = Peer("prometheus", (("app.kubernetes.io/name", "prometheus"),), "monitoring")
KUBE_DNS = Peer("kube-dns", (("k8s-app", "kube-dns"),), "kube-system")
INTERNET = Peer("internet", ip="203.0.113.7")
# Addresses outside the cluster to sample "anywhere else" with: the first one no listed
# destination covers stands for the rest of the Internet.
ELSEWHERE = ("203.0.113.7", "198.51.100.7", "192.0.2.7", "8.8.8.8", "2001:db8::7")


def policy_namespace(policy: Obj) -> str:
    return str(policy.get("metadata", {}).get("namespace") or NAMESPACE)


def _in_block(block: Obj, ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    try:
        network = ipaddress.ip_network(block["cidr"], strict=False)
    except (KeyError, ValueError):
        return False
    if address.version != network.version or address not in network:
        return False
    for excluded in block.get("except", []):
        net = ipaddress.ip_network(excluded, strict=False)
        if address.version == net.version and address in net:
            return False
    return True


def _peer_matches(rule_peer: Obj, peer: Peer, namespace: str) -> bool:
    """Whether one `from`/`to` entry of a policy in `namespace` names `peer`."""
    if "ipBlock" in rule_peer:
        return peer.ip is not None and _in_block(rule_peer["ipBlock"], peer.ip)
    if not peer.in_cluster:
        return False
    ns_sel = rule_peer.get("namespaceSelector")
    if ns_sel is None:
        if peer.namespace != namespace:
            return False
    elif not selects(ns_sel, peer.namespace_labels()):
        return False
    return selects(rule_peer.get("podSelector", {}), dict(peer.labels))


def _ports_match(ports: list[Obj] | None, protocol: str, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        low = int(p["port"])
        if low <= port <= int(p.get("endPort", low)):
            return True
    return False


def selecting(policies: list[Obj], subject: Peer, direction: str) -> list[Obj]:
    """The policies of the subject's namespace that isolate it in `direction`."""
    return [
        p
        for p in policies
        if subject.in_cluster
        and policy_namespace(p) == subject.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"].get("podSelector", {}), dict(subject.labels))
    ]


def _direction_allows(
    policies: list[Obj], subject: Peer, other: Peer, protocol: str, port: int, direction: str
) -> bool:
    """Whether `subject` (a pod) may exchange traffic with `other` in `direction`."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    chosen = selecting(policies, subject, direction)
    if not chosen:
        return True  # no policy isolates this pod in this direction
    for policy in chosen:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            namespace = policy_namespace(policy)
            if peers and not any(_peer_matches(rp, other, namespace) for rp in peers):
                continue
            if _ports_match(rule.get("ports"), protocol, port):
                return True
    return False


def flow_allowed(policies: list[Obj], src: Peer, dst: Peer, protocol: str, port: int) -> bool:
    egress = not src.in_cluster or _direction_allows(policies, src, dst, protocol, port, "Egress")
    ingress = not dst.in_cluster or _direction_allows(policies, dst, src, protocol, port, "Ingress")
    return egress and ingress


HTTP = {
    "ingest": 8101,
    "mixer": 8102,
    "graphics": 8103,
    "distribution": 8104,
    "monitoring": 8105,
    "control": 8106,
}
GRPC = {
    "ingest": 9101,
    "mixer": 9102,
    "graphics": 9103,
    "distribution": 9104,
    "monitoring": 9105,
    "control": 9106,
}


# What stations reach from outside when a render does not say: ingest's WebRTC range,
# distribution's (WHEP) and the UDP ports of SRT returns in listener mode.
INGEST_RTC = (40000, 40015)
DISTRIBUTION_RTC = (40100, 40115)
SRT_RETURNS = (9200, 9207)
# Ports of what distribution connects to outside: an RTMP and an RTMPS ingest, an SRT decoder
# (a push, or a return in caller mode), a TSL tally receiver (any port a station's tally_url
# names, over UDP or TCP).
RTMP_PORT = 1935
RTMPS_PORT = 443
DECODER_PORT = 9000
TALLY_PORT = 8900
# What each service opens outside the cluster, to the destinations its policies list: the
# (protocol, port) samples that must pass to each of them.
CONFIGURED_EGRESS = {
    "distribution": (
        ("TCP", RTMP_PORT),
        ("TCP", RTMPS_PORT),
        ("UDP", DECODER_PORT),
        ("UDP", TALLY_PORT),
        ("TCP", TALLY_PORT),
    ),
    "graphics": (("TCP", 443), ("TCP", 80), ("TCP", 8080)),  # HTTP(S) data bindings
}
# ICE connectivity checks to stations, wherever they are: ingest's one way out (docs/adr/0005).
ANYWHERE_EGRESS = {"ingest": "UDP"}
# What must not pass anywhere else (and to a configured destination, SCTP).
OUTSIDE_PROBES = (("TCP", 443), ("TCP", 80), ("TCP", RTMP_PORT), ("UDP", DECODER_PORT))


def component_namespaces(objects: list[Obj]) -> dict[str, str]:
    """Where each component's pods run in the render."""
    return {
        component(o): str(o["metadata"].get("namespace") or NAMESPACE)
        for o in objects
        if pod_template(o) is not None and component(o)
    }


def https_ports(objects: list[Obj]) -> dict[str, int]:
    """The HTTPS port (the container port named `https`) of each service that has one: with TLS
    on (docs/adr/0019), ingest, distribution and control."""
    ports: dict[str, int] = {}
    for obj in objects:
        for container in (pod_template(obj) or {}).get("spec", {}).get("containers", []):
            for port in container.get("ports", []):
                if port.get("name") == "https" and component(obj) in SERVICES:
                    ports[component(obj)] = int(port["containerPort"])
    return ports


def required_flows(
    rtc: tuple[int, int] = INGEST_RTC,
    whep: tuple[int, int] = DISTRIBUTION_RTC,
    srt_returns: tuple[int, int] = SRT_RETURNS,
    where: dict[str, str] | None = None,
    https: dict[str, int] | None = None,
) -> list[tuple[Peer, Peer, str, int]]:
    def peer(name: str) -> Peer:
        return peer_of(name, (where or {}).get(name))

    nats = peer("nats")
    flows = [(peer(s), nats, "TCP", 4222) for s in SERVICES]
    flows += [(nats, nats, "TCP", 6222)]
    flows += [
        (peer(s), KUBE_DNS, protocol, 53)
        for s in (*SERVICES, "nats")
        for protocol in ("UDP", "TCP")
    ]
    flows += [
        (peer("mixer"), peer("ingest"), "TCP", GRPC["ingest"]),
        (peer("mixer"), peer("graphics"), "TCP", GRPC["graphics"]),
        (peer("distribution"), peer("mixer"), "TCP", GRPC["mixer"]),
        (peer("monitoring"), peer("mixer"), "TCP", GRPC["mixer"]),
        (peer("monitoring"), peer("ingest"), "TCP", GRPC["ingest"]),
    ]
    flows += [(PROMETHEUS, peer(s), "TCP", HTTP[s]) for s in SERVICES]
    flows += [(PROMETHEUS, nats, "TCP", 8222)]
    flows += [
        (INTERNET, peer("ingest"), "TCP", HTTP["ingest"]),  # WHIP
        (INTERNET, peer("ingest"), "TCP", 1935),  # RTMP
        (INTERNET, peer("ingest"), "UDP", 9000),  # SRT
        (INTERNET, peer("ingest"), "UDP", rtc[0]),  # WebRTC media
        (INTERNET, peer("ingest"), "UDP", rtc[1]),
        # HLS, WHEP, the /exchange/... event streams
        (INTERNET, peer("distribution"), "TCP", HTTP["distribution"]),
        (INTERNET, peer("distribution"), "UDP", whep[0]),  # WHEP media
        (INTERNET, peer("distribution"), "UDP", whep[1]),
        (INTERNET, peer("distribution"), "UDP", srt_returns[0]),  # SRT returns, listener
        (INTERNET, peer("distribution"), "UDP", srt_returns[1]),
        (INTERNET, peer("control"), "TCP", HTTP["control"]),  # the control room
        (peer("ingest"), INTERNET, "UDP", rtc[0]),  # ICE checks
    ]
    # With TLS, WHIP, WHEP, the exchange and the control room over HTTPS, beside the plain port.
    flows += [(INTERNET, peer(s), "TCP", port) for s, port in sorted((https or {}).items())]
    return flows


def forbidden_flows(
    rtc: tuple[int, int] = INGEST_RTC,
    whep: tuple[int, int] = DISTRIBUTION_RTC,
    srt_returns: tuple[int, int] = SRT_RETURNS,
    where: dict[str, str] | None = None,
) -> list[tuple[Peer, Peer, str, int]]:
    """Flows the design does not need: a sample of what default deny must stop."""

    def peer(name: str) -> Peer:
        return peer_of(name, (where or {}).get(name))

    return [
        (peer("graphics"), peer("ingest"), "TCP", GRPC["ingest"]),
        (peer("distribution"), peer("ingest"), "TCP", GRPC["ingest"]),
        (peer("distribution"), peer("graphics"), "TCP", GRPC["graphics"]),
        (peer("ingest"), peer("mixer"), "TCP", GRPC["mixer"]),
        (peer("ingest"), peer("distribution"), "TCP", GRPC["distribution"]),
        (peer("monitoring"), peer("graphics"), "TCP", GRPC["graphics"]),
        (peer("mixer"), peer("distribution"), "TCP", GRPC["distribution"]),
        (peer("ingest"), peer("nats"), "TCP", 6222),
        (INTERNET, peer("mixer"), "TCP", HTTP["mixer"]),
        (INTERNET, peer("ingest"), "TCP", GRPC["ingest"]),
        (INTERNET, peer("ingest"), "UDP", rtc[1] + 1),
        (INTERNET, peer("nats"), "TCP", 4222),
        (peer("control"), peer("mixer"), "TCP", GRPC["mixer"]),
        (peer("control"), peer("ingest"), "TCP", HTTP["ingest"]),
        (INTERNET, peer("control"), "TCP", GRPC["control"]),
        (INTERNET, peer("distribution"), "TCP", GRPC["distribution"]),
        (INTERNET, peer("distribution"), "UDP", whep[1] + 1),
        (INTERNET, peer("distribution"), "UDP", srt_returns[1] + 1),
    ]


def _is_default_deny(policy: Obj) -> bool:
    spec = policy["spec"]
    return (
        spec.get("podSelector") == {}
        and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def coverage_violations(objects: list[Obj]) -> list[str]:
    """Default deny in every namespace that runs a workload, and a policy of its own for each."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    problems = []
    denied = {policy_namespace(p) for p in policies if _is_default_deny(p)}
    for namespace in sorted(set(component_namespaces(objects).values()) - denied):
        problems.append(
            f"NetworkPolicies: no default deny in namespace {namespace} (podSelector {{}}, "
            "Ingress and Egress, no rules)"
        )
    for obj in objects:
        pod = pod_template(obj)
        if pod is None:
            continue
        labels = pod["metadata"].get("labels", {})
        namespace = str(obj["metadata"].get("namespace") or NAMESPACE)
        own = [
            p
            for p in policies
            if policy_namespace(p) == namespace
            and p["spec"].get("podSelector")
            and selects(p["spec"]["podSelector"], labels)
        ]
        if not own:
            problems.append(f"{ident(obj)}: no NetworkPolicy of its own allows its flows")
    return problems


def _egress_blocks(policies: list[Obj], subject: Peer) -> tuple[list[Obj], bool]:
    """The ipBlocks the subject's egress rules name, and whether a rule names no peer at all
    (which lets it reach everywhere)."""
    blocks: list[Obj] = []
    unbounded = False
    for policy in selecting(policies, subject, "Egress"):
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if not peers:
                unbounded = True
            for peer in peers or []:
                if "ipBlock" in peer:
                    blocks.append(peer["ipBlock"])
    return blocks, unbounded


def _inside(block: Obj) -> str | None:
    """An address the block covers (and none of its exceptions)."""
    try:
        network = ipaddress.ip_network(block["cidr"], strict=False)
    except (KeyError, ValueError):
        return None
    for index, address in enumerate(network):
        if index > 64:
            break
        if _in_block(block, str(address)):
            return str(address)
    return None


def destinations(objects: list[Obj], service: str) -> list[str]:
    """The CIDRs outside the cluster a service's egress rules list."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    where = component_namespaces(objects)
    blocks, _ = _egress_blocks(policies, peer_of(service, where.get(service)))
    return [str(b.get("cidr")) for b in blocks]


def egress_violations(objects: list[Obj]) -> list[str]:
    """Outside the cluster, each pod opens connections only where the design says: ingest's ICE
    checks over UDP, distribution's and graphics' listed destinations (each of which it
    reaches, none of which is everywhere), nothing for the rest."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    where = component_namespaces(objects)
    problems = []
    for service in sorted(set(where) & {*SERVICES, "nats"}):
        subject = peer_of(service, where[service])
        blocks, unbounded = _egress_blocks(policies, subject)
        if unbounded:
            problems.append(
                f"NetworkPolicies: an egress rule of {service} names no peer: it reaches "
                "everywhere, inside the cluster and out"
            )
        listed = [] if service in ANYWHERE_EGRESS else blocks
        if service not in CONFIGURED_EGRESS and listed:
            cidrs = ", ".join(str(b.get("cidr")) for b in listed)
            problems.append(
                f"NetworkPolicies: {service} may open connections outside the cluster ({cidrs}); "
                "it needs none"
            )
        for block in listed if service in CONFIGURED_EGRESS else []:
            cidr = str(block.get("cidr"))
            if cidr.endswith("/0"):
                problems.append(
                    f"NetworkPolicies: {service} may open connections anywhere ({cidr}): list "
                    "its destinations instead"
                )
                continue
            inside = _inside(block)
            if inside is None:
                continue
            there = Peer(cidr, ip=inside)
            for protocol, port in CONFIGURED_EGRESS.get(service, ()):
                if not flow_allowed(policies, subject, there, protocol, port):
                    problems.append(
                        f"NetworkPolicies block {service} -> {cidr} {protocol}/{port}, a "
                        "destination it lists"
                    )
            if flow_allowed(policies, subject, there, "SCTP", TALLY_PORT):
                problems.append(f"NetworkPolicies allow {service} -> {cidr} SCTP/{TALLY_PORT}")
        elsewhere = next(
            (ip for ip in ELSEWHERE if not any(_in_block(b, ip) for b in listed)), None
        )
        if elsewhere is None:
            continue  # every sample is listed: reported above as everywhere, or close to it
        outside = Peer("elsewhere", ip=elsewhere)
        for protocol, port in OUTSIDE_PROBES:
            if protocol == ANYWHERE_EGRESS.get(service):
                continue
            if flow_allowed(policies, subject, outside, protocol, port):
                problems.append(
                    f"NetworkPolicies allow {service} -> {elsewhere} {protocol}/{port}, which it "
                    "does not list"
                )
    return problems


def network_policy_violations(objects: list[Obj]) -> list[str]:
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    problems = coverage_violations(objects)
    where = component_namespaces(objects)
    rtc = check_exchange.webrtc_range(objects, "ingest") or INGEST_RTC
    whep = check_exchange.webrtc_range(objects, "distribution") or DISTRIBUTION_RTC
    listeners = check_exchange.public_udp_ports(objects, "distribution")
    srt_returns = (listeners[0], listeners[-1]) if listeners else SRT_RETURNS
    https = https_ports(objects)
    for src, dst, protocol, port in required_flows(rtc, whep, srt_returns, where, https):
        if not flow_allowed(policies, src, dst, protocol, port):
            problems.append(f"NetworkPolicies block {src.name} -> {dst.name} {protocol}/{port}")
    for src, dst, protocol, port in forbidden_flows(rtc, whep, srt_returns, where):
        if flow_allowed(policies, src, dst, protocol, port):
            problems.append(f"NetworkPolicies allow {src.name} -> {dst.name} {protocol}/{port}")
    problems += egress_violations(objects)
    return problems
