"""Pod Security in the rendered manifests: the policy checks of check.py for Pod Security Admission.

* The Pod Security Standards (Kubernetes 1.32) evaluated on each pod template, as the admission
  controller would: `baseline` (no host namespaces, no privileged containers, no added
  capabilities beyond the default set, no hostPath, no hostPorts, ...) and `restricted` (also
  allowPrivilegeEscalation false, runAsNonRoot, no UID 0, seccomp RuntimeDefault or Localhost,
  capabilities dropped to nothing but NET_BIND_SERVICE, the safe volume types only).
* Every pod meets `restricted` but for one thing, the WebRTC ranges ingest and distribution
  publish as hostPorts (docs/adr/0005; check_exchange checks the ranges themselves): no other
  departure is allowed anywhere.
* Every namespace the render uses exists with its labels (kustomize renders its Namespaces; the
  Helm release namespace is labelled by the command the chart's NOTES print) and enforces the
  strictest level each of its pods meets, no looser, no stricter: a pod that meets `restricted`
  never runs where only `privileged` is enforced. Audit and warn are `restricted` everywhere, and
  every level is pinned to a Kubernetes version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from check_objects import Obj, ident, pod_template

LEVELS = ("privileged", "baseline", "restricted")  # loosest first
PSA = "pod-security.kubernetes.io"
MODES = ("enforce", "audit", "warn")
# What audit and warn report against, in every namespace: the departures from `restricted` show
# in the audit log and at `kubectl apply` even where they are admitted.
REPORT_LEVEL = "restricted"
VERSION = re.compile(r"^v1\.\d+$")  # pinned: `latest` would tighten under a running show
# The departure from `restricted` the design has (docs/adr/0005): the WebRTC hostPort ranges.
ALLOWED_DEPARTURES = frozenset({"hostPorts"})

# The Pod Security Standards' lists (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
CONFINED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})


def _containers(spec: Obj) -> Iterator[Obj]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key, [])


def _context(container: Obj) -> Obj:
    context: Obj = container.get("securityContext") or {}
    return context


def baseline_departures(pod: Obj) -> dict[str, str]:
    """The `baseline` controls a pod template fails: control -> what fails it."""
    spec = pod.get("spec", {})
    pod_context = spec.get("securityContext") or {}
    found: dict[str, str] = {}

    def note(control: str, what: str) -> None:
        found[control] = f"{found[control]}; {what}" if control in found else what

    for namespace in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(namespace):
            note("hostNamespaces", f"{namespace}=true")
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        note("hostProcess", "the pod is a Windows host process")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            note("hostPathVolumes", f"volume {volume.get('name')} is a hostPath")
    if pod_context.get("seccompProfile", {}).get("type") == "Unconfined":
        note("seccompProfile", "the pod's seccomp profile is Unconfined")
    selinux = pod_context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        note("seLinuxOptions", "the pod sets a forbidden SELinux type, user or role")
    apparmor = (pod_context.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        note("appArmorProfile", f"the pod's AppArmor profile is {apparmor}")
    for key, value in (pod.get("metadata", {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            note("appArmorProfile", f"{key}={value}")
    for sysctl in pod_context.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            note("sysctls", f"sysctl {sysctl.get('name')}")
    for container in _containers(spec):
        name = container.get("name")
        context = _context(container)
        if context.get("privileged"):
            note("privileged", f"container {name} is privileged")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            note("hostProcess", f"container {name} is a Windows host process")
        added = set((context.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        if added:
            note("capabilities", f"container {name} adds {', '.join(sorted(added))}")
        ports = sorted(p["hostPort"] for p in container.get("ports", []) if p.get("hostPort"))
        if ports:
            shown = f"{ports[0]}…{ports[-1]} ({len(ports)})" if len(ports) > 2 else str(ports)
            note("hostPorts", f"container {name} publishes hostPorts {shown}")
        if context.get("procMount", "Default") != "Default":
            note("procMount", f"container {name} sets procMount {context['procMount']}")
        if context.get("seccompProfile", {}).get("type") == "Unconfined":
            note("seccompProfile", f"container {name}'s seccomp profile is Unconfined")
        selinux = context.get("seLinuxOptions") or {}
        if (
            selinux.get("type", "") not in SELINUX_TYPES
            or selinux.get("user")
            or selinux.get("role")
        ):
            note("seLinuxOptions", f"container {name} sets a forbidden SELinux type, user or role")
        apparmor = (context.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            note("appArmorProfile", f"container {name}'s AppArmor profile is {apparmor}")
    return found


def restricted_departures(pod: Obj) -> dict[str, str]:
    """The `restricted` controls a pod template fails (the baseline ones included)."""
    found = baseline_departures(pod)
    spec = pod.get("spec", {})
    pod_context = spec.get("securityContext") or {}

    def note(control: str, what: str) -> None:
        found[control] = f"{found[control]}; {what}" if control in found else what

    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            note("volumeTypes", f"volume {volume.get('name')} is a {', '.join(sorted(kinds))}")
    pod_non_root = pod_context.get("runAsNonRoot")
    pod_seccomp = pod_context.get("seccompProfile", {}).get("type")
    if pod_context.get("runAsUser") == 0:
        note("runAsUser", "the pod runs as UID 0")
    for container in _containers(spec):
        name = container.get("name")
        context = _context(container)
        if context.get("allowPrivilegeEscalation") is not False:
            note("allowPrivilegeEscalation", f"container {name} does not set it false")
        non_root = context.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            note("runAsNonRoot", f"container {name} may run as root")
        if context.get("runAsUser") == 0:
            note("runAsUser", f"container {name} runs as UID 0")
        seccomp = context.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in CONFINED_SECCOMP:
            note("seccompProfile", f"container {name} has no RuntimeDefault/Localhost profile")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            note("capabilities", f"container {name} does not drop ALL")
        added = set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}
        if added:
            note("capabilities", f"container {name} adds {', '.join(sorted(added))}")
    return found


def strictest_level(pod: Obj) -> str:
    """The strictest Pod Security level that admits the pod template."""
    if not restricted_departures(pod):
        return "restricted"
    if not baseline_departures(pod):
        return "baseline"
    return "privileged"


def namespace_of(obj: Obj, default: str = "default") -> str:
    return str(obj.get("metadata", {}).get("namespace") or default)


def pod_violations(objects: list[Obj]) -> list[str]:
    """Every pod meets `restricted`, but for the departures the design has (the WebRTC ranges)."""
    problems = []
    for obj in objects:
        pod = pod_template(obj)
        if pod is None:
            continue
        for control, what in sorted(restricted_departures(pod).items()):
            if control not in ALLOWED_DEPARTURES:
                problems.append(f"{ident(obj)}: Pod Security restricted: {control}: {what}")
    return problems


def namespace_violations(objects: list[Obj], assumed: list[Obj] | None = None) -> list[str]:
    """Each namespace carries its Pod Security labels and enforces the strictest level each of its
    pods meets. `assumed`: Namespaces the render does not carry but expects as given (the Helm
    release namespace, labelled as the chart's NOTES tell the operator)."""
    namespaces = {
        o["metadata"]["name"]: o
        for o in [*(assumed or []), *objects]
        if o.get("kind") == "Namespace"
    }
    pods: dict[str, list[tuple[Obj, str]]] = {}
    for obj in objects:
        pod = pod_template(obj)
        if pod is not None:
            pods.setdefault(namespace_of(obj), []).append((obj, strictest_level(pod)))
    problems = []
    for name in sorted(set(pods) - set(namespaces)):
        problems.append(
            f"namespace {name}: runs {', '.join(sorted(ident(o) for o, _ in pods[name]))} but "
            "the render "
            "does not label it: no Pod Security level is enforced there"
        )
    for name, namespace in sorted(namespaces.items()):
        where = f"{ident(namespace)}"
        labels = namespace["metadata"].get("labels") or {}
        enforce = labels.get(f"{PSA}/enforce")
        if enforce not in LEVELS:
            problems.append(f"{where}: enforces no Pod Security level ({PSA}/enforce)")
        for mode in MODES:
            version = labels.get(f"{PSA}/{mode}-version")
            if not VERSION.match(str(version)):
                problems.append(
                    f"{where}: {PSA}/{mode}-version is {version!r}, not a pinned v1.<minor>"
                )
        for mode in ("audit", "warn"):
            if labels.get(f"{PSA}/{mode}") != REPORT_LEVEL:
                problems.append(f"{where}: {PSA}/{mode} is not {REPORT_LEVEL!r}")
        if enforce not in LEVELS:
            continue
        if not pods.get(name) and enforce != "restricted":
            problems.append(f"{where}: runs no pod yet enforces only {enforce!r}, not 'restricted'")
        for obj, level in sorted(pods.get(name, []), key=lambda found: ident(found[0])):
            if LEVELS.index(level) < LEVELS.index(enforce):
                problems.append(
                    f"{where}: enforces {enforce!r}, which refuses the pods of {ident(obj)} "
                    f"(they meet {level!r})"
                )
            elif LEVELS.index(level) > LEVELS.index(enforce):
                problems.append(
                    f"{where}: enforces only {enforce!r}, but the pods of {ident(obj)} meet "
                    f"{level!r}: they belong in a namespace enforcing {level!r}"
                )
    return problems
