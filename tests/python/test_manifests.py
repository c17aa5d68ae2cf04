"""The deployment files under docker/ against the schemas of what reads them
and against the real server.

- Every Kubernetes manifest of docker/k8s validates, strictly (an unknown
  field is an error, as `kubectl apply --validate=strict` makes it), against
  the Kubernetes API schemas that the kubernetes-validate package bundles,
  for the oldest and the newest version the manifests support
  (K8S_VERSIONS). The KServe resources validate against the openAPIV3Schema
  of KServe's CRDs (tests/python/schemas/kserve, made strict the same way),
  compose.yaml against the Compose Specification's schema, and the
  Prometheus configuration and rules with Debian's promtool.
- The files agree with each other: ports with the flags the commands pass,
  names and selectors with what they select, the termination arithmetic,
  the Job's shard count with its completions, the image tag with the
  workspace's version.
- The real binary runs each command as the manifests give it (paths and
  ports moved to the test's): the Deployment's `serve` with the ConfigMap's
  deploy.toml and the Secret's tokens, compose's, KServe's on a bare
  model.onnx, and the Job's `batch` for each completion index. Its /metrics
  must hold every metric the dashboard, the alerting rules, the Prometheus
  Adapter rule and the HPA name, and a real Prometheus scraping it (with
  compose's scrape configuration) must answer every dashboard query and the
  adapter's queries with data.
- `ferroserve profile --report ... --emit k8s` writes a Deployment that
  validates and carries the report's recommendation.

Tools: kubernetes-validate, jsonschema and PyYAML come from
requirements-dev.txt; Prometheus and promtool from Debian's `prometheus`
package, fetched with `apt-get download` and unpacked into .venv/tools when
not on PATH (installing the package itself would start a Prometheus
service). A missing tool fails the test; nothing is skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml

import ferro

ROOT = ferro.REPO_ROOT
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
KSERVE = DOCKER / "kserve"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
TOOLS = ROOT / ".venv" / "tools"

# Kubernetes versions the manifests are validated against: 1.30 is the
# oldest with the preStop `sleep` action on by default (PodLifecycleSleepAction,
# beta in 1.30); the newest is the newest kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", "1.37")
# Margin kept in terminationGracePeriodSeconds beyond preStop + delay + grace.
TERMINATION_MARGIN_S = 5

IMAGE_REPO = "ghcr.io/ferroserve/ferroserve"
SERVER_CONTAINER = "ferroserve"  # loadtest/src/profiler/emit.rs: SERVER_CONTAINER
# In docker/k8s but not in kustomization.yaml (each file's comment says why).
NOT_KUSTOMIZED = {"batch-job.yaml", "prometheus-adapter-rules.yaml"}
# Series Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = {"up"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all"}


# --------------------------------------------------------------------------
# reading the files


def docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def one(path: Path, kind: str | None = None) -> dict:
    found = docs(path)
    if kind is not None:
        found = [d for d in found if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind or 'document'}, found {len(found)}"
    return found[0]


def k8s_files() -> list[Path]:
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert files, f"no manifests in {K8S}"
    return files


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in k8s_files() for d in docs(p)]


def by_kind(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"docker/k8s: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict:
    return one(K8S / "deployment.yaml", "Deployment")


def container(pod_spec: dict, name: str) -> dict:
    found = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}, found {[c['name'] for c in pod_spec['containers']]}"
    return found[0]


def server_container() -> dict:
    return container(deployment()["spec"]["template"]["spec"], SERVER_CONTAINER)


def flags(args: list[str], subcommand: str) -> dict[str, str | None]:
    """`SUBCOMMAND --flag [value] ...` as {flag: value}, None for a switch
    (a flag followed by another flag or nothing); each may appear once."""
    assert args and args[0] == subcommand, f"expected `{subcommand} ...`, got {args}"
    rest = [str(a) for a in args[1:]]
    out: dict[str, str | None] = {}
    i = 0
    while i < len(rest):
        k = rest[i]
        assert k.startswith("--"), f"{k!r} is not a flag in {args}"
        assert k not in out, f"{k} given twice in {args}"
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            out[k], i = rest[i + 1], i + 2
        else:
            out[k], i = None, i + 1
    return out


def workspace_version() -> str:
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def compose() -> dict:
    return one(DOCKER / "compose.yaml")


def config_map_toml() -> str:
    cm = by_kind("ConfigMap", "ferroserve-config")
    return cm["data"]["deploy.toml"]


# --------------------------------------------------------------------------
# the tools


def prometheus_tools() -> tuple[Path, Path]:
    """(prometheus, promtool): on PATH, else unpacked from Debian's
    `prometheus` package into .venv/tools (apt-get download, dpkg-deb -x)."""
    on_path = shutil.which("prometheus"), shutil.which("promtool")
    if all(on_path):
        return Path(on_path[0]), Path(on_path[1])
    root = TOOLS / "prometheus-deb"
    bins = root / "usr" / "bin" / "prometheus", root / "usr" / "bin" / "promtool"
    if all(b.is_file() for b in bins):
        return bins
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if not (apt and dpkg):
        pytest.fail("promtool is not on PATH and apt-get/dpkg-deb are missing: install Debian's "
                    "`prometheus` package (or put prometheus and promtool on PATH)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    with tempfile.TemporaryDirectory() as d:
        get = subprocess.run(["apt-get", "download", "prometheus"], cwd=d, capture_output=True, text=True, timeout=300)
        if get.returncode != 0:
            subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
            get = subprocess.run(["apt-get", "download", "prometheus"], cwd=d, capture_output=True, text=True,
                                 timeout=300)
        assert get.returncode == 0, f"apt-get download prometheus failed:\n{get.stdout}\n{get.stderr}"
        (deb,) = Path(d).glob("prometheus_*.deb")
        staging = TOOLS / "prometheus-deb.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    assert all(b.is_file() for b in bins), f"Debian's prometheus package has no {bins}"
    return bins


@pytest.fixture(scope="module")
def promtool() -> Path:
    return prometheus_tools()[1]


def run_promtool(promtool: Path, *args: str) -> str:
    r = subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"promtool {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


# --------------------------------------------------------------------------
# PromQL: the metric names an expression reads

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names read by a PromQL expression: identifiers outside strings,
    label matchers, ranges and grouping clauses that are not functions,
    aggregations or keywords."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"' "|" r"'(?:[^'\\]|\\.)*'", '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(1))
    return names


def test_metric_names_reads_what_promql_reads():
    assert metric_names('histogram_quantile(0.99, sum by (endpoint, le) (rate(a_bucket{x=~"$v", y!="z"}[$__rate_interval])))') == {"a_bucket"}
    assert metric_names("sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) > 0.5") == {"a_sum", "a_count"}
    assert metric_names('up{job="f"} == 0 or on(instance) b') == {"up", "b"}


def dashboard() -> dict:
    return json.loads((DOCKER / "grafana" / "dashboards" / "ferroserve.json").read_text())


def dashboard_panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold theirs
    return out


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() if p["type"] != "row" for t in p["targets"]]


def dashboard_variable_selectors() -> list[str]:
    """The series selectors of the dashboard's label_values() variables."""
    out = []
    for v in dashboard()["templating"]["list"]:
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        assert m, f"variable {v['name']}: expected label_values(SELECTOR, LABEL), got {q!r}"
        out.append(m.group(1))
    return out


def grafana_concrete(expr: str) -> str:
    """A dashboard expression as Grafana sends it with every variable at All."""
    e = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")
    return re.sub(r"\$(\w+)", ".*", e)


def rule_exprs() -> list[str]:
    rules = one(DOCKER / "prometheus" / "rules.yml")
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def adapter_config() -> dict:
    cm = one(K8S / "prometheus-adapter-rules.yaml", "ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])


def adapter_rendered(rule: dict, namespace: str, pod: str) -> str:
    """The adapter's metricsQuery for one pod, rendered as its Go template would
    be (the series name, the label matchers of the object, the group-by label)."""
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
    q = rule["metricsQuery"]
    q = q.replace("<<.Series>>", series)
    q = q.replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
    q = q.replace("<<.GroupBy>>", "pod")
    assert "<<" not in q, f"unrendered template field in {q}"
    return q


# --------------------------------------------------------------------------
# schema validation


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version):
    seen = set()
    for path, doc in k8s_docs():
        try:
            got = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} is not valid for Kubernetes "
                        f"{version} at {'.'.join(map(str, e.path))}: {e.message}")
        assert got == version, f"kubernetes-validate checked {path.name} against {got}, not {version}"
        seen.add(doc["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret",
            "NetworkPolicy", "Job", "PersistentVolumeClaim", "Namespace"} <= seen, seen


def test_strict_validation_catches_a_misspelt_field():
    """The validator the test above relies on rejects what the API server
    would: a field it does not know."""
    d = copy.deepcopy(deployment())
    d["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 50
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, K8S_VERSIONS[0], strict=True)


def kubernetes_list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: `map` items are unique by their
    x-kubernetes-list-map-keys, `set` items are unique, as the API server checks."""
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    elif list_type == "set":
        seen = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        return
    for key in {k for k in seen if seen.count(k) > 1}:
        yield jsonschema.ValidationError(f"duplicate entry {key} in a list of type {list_type}")


def structural_strict(schema):
    """An OpenAPI v3 structural schema with `additionalProperties: false`
    wherever an object lists its properties and does not preserve unknown
    fields: the API server's strict field validation."""
    if isinstance(schema, list):
        return [structural_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: structural_strict(v) if k not in ("enum", "required", "default", "example") else v
           for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_validator(name: str) -> tuple[dict, jsonschema.protocols.Validator]:
    doc = json.loads((SCHEMAS / "kserve" / name).read_text())
    schema = structural_strict(doc["openAPIV3Schema"])
    cls = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-list-type": kubernetes_list_type})
    return doc["x-source"], cls(schema)


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_crd_resource(path: Path, doc: dict, schema_file: str):
    source, validator = crd_validator(schema_file)
    assert doc["apiVersion"] == f"{source['group']}/{source['version']}", (path, doc["apiVersion"])
    assert doc["kind"] == source["kind"], (path, doc["kind"])
    name = doc["metadata"]["name"]
    assert len(name) <= 63 and DNS1123_SUBDOMAIN.match(name), f"{path}: bad name {name!r}"
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{path.name}: " + "\n".join(
        f"at {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:10])


def kserve_docs() -> list[tuple[Path, dict]]:
    out = [(p, d) for p in sorted(KSERVE.glob("*.yaml")) for d in docs(p)]
    assert out, f"nothing in {KSERVE}"
    return out


def test_kserve_resources_validate_against_kserve_crds():
    schema_of = {"ClusterServingRuntime": "clusterservingruntime-v1alpha1.json",
                 "InferenceService": "inferenceservice-v1beta1.json"}
    kinds = []
    for path, doc in kserve_docs():
        assert doc["kind"] in schema_of, f"{path}: no vendored CRD schema for {doc['kind']}"
        validate_crd_resource(path, doc, schema_of[doc["kind"]])
        kinds.append(doc["kind"])
    assert kinds.count("ClusterServingRuntime") == 1 and "InferenceService" in kinds, kinds
    runtime = next(d for _, d in kserve_docs() if d["kind"] == "ClusterServingRuntime")
    assert "namespace" not in runtime["metadata"], "a ClusterServingRuntime is cluster-scoped"


def test_crd_validation_catches_a_misspelt_field_and_a_duplicate_port():
    path, isvc = next((p, d) for p, d in kserve_docs() if d["kind"] == "InferenceService")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPrecent"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPrecent"):
        validate_crd_resource(path, bad, "inferenceservice-v1beta1.json")
    runtime = next(d for _, d in kserve_docs() if d["kind"] == "ClusterServingRuntime")
    bad = copy.deepcopy(runtime)
    c = bad["spec"]["containers"][0]
    c["ports"] = c["ports"] + c["ports"]
    with pytest.raises(AssertionError, match="duplicate"):
        validate_crd_resource(path, bad, "clusterservingruntime-v1alpha1.json")


def test_compose_validates_against_the_compose_spec():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
    bad = copy.deepcopy(compose())
    bad["services"]["ferroserve"]["stop_grace_periods"] = "35s"
    assert list(validator.iter_errors(bad)), "the compose schema let an unknown service key through"


def test_prometheus_config_and_rules_pass_promtool(promtool, tmp_path):
    out = run_promtool(promtool, "check", "config", str(DOCKER / "prometheus" / "prometheus.yml"))
    assert "SUCCESS" in out and "rules.yml" in out, out  # the rule file was found and checked
    run_promtool(promtool, "check", "rules", str(DOCKER / "prometheus" / "rules.yml"))
    # The dashboard's and the adapter's expressions parse too (as recording rules).
    exprs = [grafana_concrete(e) for e in dashboard_exprs() + dashboard_variable_selectors()]
    exprs += [adapter_rendered(r, "ferroserve", "ferroserve-abc") for r in adapter_config()["rules"]]
    exprs += [r["seriesQuery"] for r in adapter_config()["rules"]]
    rules = {"groups": [{"name": "parse", "rules": [{"record": f"check:expr{i}", "expr": e}
                                                    for i, e in enumerate(exprs)]}]}
    f = tmp_path / "exprs.yml"
    f.write_text(yaml.safe_dump(rules))
    run_promtool(promtool, "check", "rules", str(f))


def test_promtool_rejects_a_bad_expression(promtool, tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum(rate(x[5m])"}]}]}))
    r = subprocess.run([str(promtool), "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout


# The Prometheus Adapter's configuration (kubernetes-sigs/prometheus-adapter
# pkg/config/config.go), which it reads with yaml.UnmarshalStrict: unknown
# keys are errors there, and here.
ADAPTER_KEYS = {
    "": {"rules", "resourceRules", "externalRules"},
    "rule": {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery", "labelValueReplacements"},
    "resources": {"template", "overrides"},
    "override": {"group", "resource"},
    "name": {"matches", "as"},
}


def test_prometheus_adapter_rule_is_what_the_adapter_and_the_hpa_read():
    cfg = adapter_config()
    assert set(cfg) <= ADAPTER_KEYS[""], set(cfg)
    for rule in cfg["rules"]:
        assert set(rule) <= ADAPTER_KEYS["rule"], set(rule)
        assert set(rule["resources"]) <= ADAPTER_KEYS["resources"]
        for label, gr in rule["resources"].get("overrides", {}).items():
            assert set(gr) <= ADAPTER_KEYS["override"] and "resource" in gr, (label, gr)
        assert set(rule["name"]) <= ADAPTER_KEYS["name"]
        for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert field in rule["metricsQuery"], f"metricsQuery lacks {field}: {rule['metricsQuery']}"
        # namespace and pod map to the resources a Pods metric is asked for.
        resources = {gr["resource"] for gr in rule["resources"]["overrides"].values()}
        assert {"namespace", "pod"} <= resources, resources
    # Every Pods metric of the HPA is a name some rule publishes.
    hpa = by_kind("HorizontalPodAutoscaler")
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics, "the HPA has no Pods metric"
    published = {}
    for rule in cfg["rules"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        m = re.fullmatch(rule["name"]["matches"], series)
        assert m, f"name.matches {rule['name']['matches']!r} does not match the rule's series {series}"
        published[m.expand(rule["name"]["as"].replace("$", "\\"))] = series
    for name in pods_metrics:
        assert name in published, f"HPA Pods metric {name} is published by no adapter rule ({published})"
    assert {"cpu"} <= {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}


# --------------------------------------------------------------------------
# the files agree with each other


def test_images_are_one_tag_equal_to_the_workspace_version():
    want = f"{IMAGE_REPO}:{workspace_version()}"
    images = []
    for path, doc in k8s_docs() + kserve_docs():
        text = json.dumps(doc)
        images += [(path.name, i) for i in re.findall(r'"image": "([^"]+)"', text)]
    images.append(("compose.yaml", compose()["services"]["ferroserve"]["image"]))
    assert images and all(i == want for _, i in images), images
    kust = one(K8S / "kustomization.yaml")
    assert kust["images"] == [{"name": IMAGE_REPO, "newTag": workspace_version()}], kust["images"]


def test_kustomization_lists_every_manifest():
    kust = one(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    assert listed == {p.name for p in k8s_files()} - NOT_KUSTOMIZED, listed
    ns = by_kind("Namespace")
    assert kust["namespace"] == ns["metadata"]["name"]
    for path, doc in k8s_docs():
        if path.name in NOT_KUSTOMIZED:
            continue
        assert "namespace" not in doc["metadata"], f"{path.name}: the kustomization sets the namespace"


def test_deployment_ports_probes_and_services_agree_with_the_serve_flags():
    d = deployment()
    c = server_container()
    assert c["command"] == ["/usr/local/bin/ferroserve"]
    f = flags(c["args"], "serve")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": int(f["--http-port"]), "grpc": int(f["--grpc-port"]),
                     "metrics": int(f["--metrics-port"])}, (ports, f)
    assert f["--host"] == "0.0.0.0"
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == ports["http"], (probe, get)
    # A slow model load gets minutes before the kubelet restarts the pod.
    s = c["startupProbe"]
    assert s["periodSeconds"] * s["failureThreshold"] >= 300, s
    ann = d["spec"]["template"]["metadata"]["annotations"]
    assert int(ann["prometheus.io/port"]) == ports["metrics"] and ann["prometheus.io/path"] == "/metrics"

    svc = by_kind("Service", "ferroserve")
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(sports) == set(ports), sports
    for name, p in sports.items():
        assert p["targetPort"] == name and p["port"] == ports[name], p
    assert sports["http"]["appProtocol"] == "http"
    assert sports["grpc"]["appProtocol"] in ("kubernetes.io/h2c", "grpc"), sports["grpc"]

    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    np_ = by_kind("NetworkPolicy")
    assert np_["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed = {p["port"] for rule in np_["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == set(ports.values()), allowed
    hpa = by_kind("HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", d["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and by_kind("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_termination_fits_in_the_grace_period():
    d = deployment()
    c = server_container()
    f = flags(c["args"], "serve")
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    delay, grace = int(f["--shutdown-delay-s"]), int(f["--shutdown-grace-s"])
    total = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop > 0 and delay > 0 and grace > 0
    assert pre_stop + delay + grace + TERMINATION_MARGIN_S <= total, (pre_stop, delay, grace, total)
    # compose: the same for `docker stop` (no preStop there).
    cmd = flags(compose()["services"]["ferroserve"]["command"], "serve")
    stop = compose()["services"]["ferroserve"]["stop_grace_period"]
    m = re.fullmatch(r"(\d+)s", stop)
    assert m, stop
    assert int(cmd["--shutdown-delay-s"]) + int(cmd["--shutdown-grace-s"]) < int(m.group(1)), (cmd, stop)


def test_deployment_security_volumes_config_and_secret_agree():
    d = deployment()
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "limits" in c["resources"] and "requests" in c["resources"], c["name"]
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']} mounts unknown volume {m['name']}"
    c = server_container()
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    f = flags(c["args"], "serve")

    def writable(path: str) -> bool:
        m = [m for p, m in mounts.items() if path == p or path.startswith(p.rstrip("/") + "/")]
        return bool(m) and not m[0].get("readOnly", False)

    # With a read-only root filesystem, everything the server writes is a volume.
    assert writable(f["--repo"]) and writable("/tmp")
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    sinks = re.findall(r'sink\s*=\s*"([^"]+)"', config_map_toml())
    assert sinks, "the ConfigMap's deploy.toml captures nothing"
    for sink in sinks:
        assert writable(sink), f"capture sink {sink} is not on a writable volume"
    # --config names the ConfigMap's key where it is mounted.
    cfg_dir, cfg_file = os.path.split(f["--config"])
    vol = volumes[mounts[cfg_dir]["name"]]
    assert vol["configMap"]["name"] == "ferroserve-config" and cfg_file in by_kind(
        "ConfigMap", "ferroserve-config")["data"]
    # Tokens from the Secret, under the names the server reads.
    secret = by_kind("Secret", "ferroserve-tokens")
    env = {e["name"]: e for e in c["env"]}
    for var in ("FERROSERVE_INFERENCE_TOKENS", "FERROSERVE_MANAGEMENT_TOKENS"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref
    # The models: copied per pod from the claim.
    claims = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims, v


def test_compose_ports_volumes_healthcheck_and_scrape_agree():
    svc = compose()["services"]
    fs = svc["ferroserve"]
    f = flags(fs["command"], "serve")
    ports = {int(f[k]) for k in ("--http-port", "--grpc-port", "--metrics-port")}
    published = {int(p.split(":")[-1]) for p in fs["ports"]}
    assert published == ports, (published, ports)
    assert fs["read_only"] is True and fs["user"].split(":")[0] == "1000"
    assert any(t.split(":")[0] == "/tmp" for t in fs["tmpfs"])
    build = fs["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    # Every ONNX example is mounted into the repository, read-only; the
    # entry-script ones are not (the image has no Python).
    mounted = {}
    for v in fs["volumes"]:
        parts = v.split(":")
        if parts[0].startswith("."):
            src, dst = (DOCKER / parts[0]).resolve(), parts[1]
            assert parts[2:] == ["ro"], v
            assert src.parent == ferro.EXAMPLES.resolve() and dst == f"{f['--repo']}/{src.name}", v
            mounted[src.name] = src
        else:
            assert parts[1] == f["--repo"], v
    assert set(mounted) == set(ferro.MODELS), sorted(mounted)
    # The healthcheck asks the server's HTTP port, which its default --url names.
    hc = fs["healthcheck"]["test"]
    assert hc[:3] == ["CMD", "ferroserve", "health"], hc
    default_url = re.search(r"\[default: (http://[^\]]+)\]", ferro.cli("health", "--help").stdout)
    assert default_url, "ferroserve health --help names no default --url"
    url = hc[hc.index("--url") + 1] if "--url" in hc else default_url.group(1)
    assert urllib.parse.urlsplit(url).port == int(f["--http-port"]), url
    # Prometheus scrapes the metrics port of the service.
    prom = one(DOCKER / "prometheus" / "prometheus.yml")
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "ferroserve")
    assert job["static_configs"][0]["targets"] == [f"ferroserve:{f['--metrics-port']}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    prom_cmd = svc["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert "./prometheus:/etc/prometheus:ro" in svc["prometheus"]["volumes"]
    # Grafana: the provisioned data source is compose's Prometheus, the
    # provider's folder is where the dashboards are mounted.
    ds = one(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    prom_port = int(svc["prometheus"]["ports"][0].split(":")[-1])
    assert [d["url"] for d in ds] == [f"http://prometheus:{prom_port}"]
    provider = one(DOCKER / "grafana" / "provisioning" / "dashboards" / "ferroserve.yaml")["providers"][0]
    mounts = dict(v.split(":")[:2] for v in svc["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    uids = {d["uid"] for d in ds}
    for p in dashboard_panels():
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in uids, p["title"]
        assert all(t["datasource"]["uid"] in uids for t in p["targets"]), p["title"]


def test_dashboard_panels_cover_what_they_must():
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert len({p["id"] for p in dashboard_panels()}) == len(dashboard_panels()), "panel ids repeat"
    for p in panels:
        assert p["targets"] and len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    exprs = dashboard_exprs()
    defined = {v["name"] for v in dashboard()["templating"]["list"]}
    for e in exprs + dashboard_variable_selectors():
        for var in re.findall(r"\$(\w+)", e):
            assert var in defined | GRAFANA_BUILTINS, f"undefined variable ${var} in {e}"
        assert metric_names(e), f"no metric in {e}"
    used = set().union(*map(metric_names, exprs))
    assert {"ferroserve_requests_total", "ferroserve_request_duration_seconds_bucket", "ferroserve_queue_depth",
            "ferroserve_batch_size_bucket", "process_cpu_seconds_total", "process_resident_memory_bytes",
            "ferroserve_capture_dropped_total", "ferroserve_drift_score"} <= used, used
    quantiles = [e for e in exprs if "ferroserve_request_duration_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e for e in quantiles) and any(
        "histogram_quantile(0.99," in e for e in quantiles), quantiles
    assert any("outcome" in e for e in exprs), "no panel splits errors by outcome"


def test_batch_job_shards_by_completion_index():
    job = by_kind("Job", "ferroserve-batch")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    c = job["spec"]["template"]["spec"]["containers"][0]
    f = flags(c["args"], "batch")
    k, n = f["--shard"].split("/")
    assert k == "$(JOB_COMPLETION_INDEX)" and int(n) == spec["completions"], f["--shard"]
    assert "$(JOB_COMPLETION_INDEX)" in f["--output"], "shards would share one output folder and ledger"
    env = {e["name"] for e in c.get("env", [])}
    assert "JOB_COMPLETION_INDEX" in env, "$(VAR) in args expands only variables the container declares"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # backoffLimitPerIndex needs it


def test_kserve_ports_agree_with_the_runtime_flags():
    runtime = next(d for _, d in kserve_docs() if d["kind"] == "ClusterServingRuntime")
    spec = runtime["spec"]
    formats = {(m["name"], m.get("autoSelect", False)) for m in spec["supportedModelFormats"]}
    assert {("onnx", True), ("ferroserve", True)} <= formats, formats
    assert all("priority" in m for m in spec["supportedModelFormats"] if m.get("autoSelect"))
    assert spec["protocolVersions"] == ["v2"]
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"
    f = flags(c["args"], "serve")
    assert f["--repo"] == "/mnt/models" and f["--model-name"] == "{{.Name}}"
    (port,) = c["ports"]  # KServe takes one container port
    assert port["containerPort"] == int(f["--http-port"]) and port["name"] in ("http1", "h2c"), port
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == int(f["--http-port"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, "the staged repository goes under /tmp"
    names = {runtime["metadata"]["name"]}
    isvcs = [d for _, d in kserve_docs() if d["kind"] == "InferenceService"]
    assert any("canaryTrafficPercent" in d["spec"]["predictor"] for d in isvcs)
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] in names and model["protocolVersion"] in spec["protocolVersions"]
        assert model["modelFormat"]["name"] in {n for n, _ in formats} and model["storageUri"]
        for p in model.get("ports", []):
            want = {"h2c": f["--grpc-port"], "http1": f["--http-port"]}[p["name"]]
            assert p["containerPort"] == int(want), (isvc["metadata"]["name"], p)


# --------------------------------------------------------------------------
# the real server, run as the manifests run it


SERVER_OWN = ("--repo", "--host", "--http-port", "--grpc-port")


def serve_args(f: dict[str, str], **moved: str) -> list[str]:
    """The manifest's serve flags for ferro.Server (which sets --repo,
    --host and the HTTP and gRPC ports itself), with MOVED ones replaced
    (`metrics_port="0"` for --metrics-port)."""
    f = dict(f)
    for k, v in moved.items():
        flag = "--" + k.replace("_", "-")
        assert flag in f, f"{flag} is not among {sorted(f)}"
        f[flag] = v
    return [x for k, v in f.items() if k not in SERVER_OWN for x in ((k,) if v is None else (k, v))]


def wait_for_line(srv: ferro.Server, pattern: str, timeout: float = 30.0) -> re.Match:
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(srv.lines):
            m = rx.search(line)
            if m:
                return m
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}\n{srv.log()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_parquet(path: Path, rows: int = 2000):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)
    pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(64)}), path)


class Deployed:
    """The Deployment's server on a copy of the examples' mlp, with the
    ConfigMap's deploy.toml (its capture sink moved into the test's folder),
    the Secret's tokens and every flag of the manifest but the addresses."""

    def __init__(self, tmp: Path):
        self.flags = flags(server_container()["args"], "serve")
        self.repo = ferro.make_repo(tmp / "models", {"mlp": None})
        training_parquet(tmp / "train.parquet")
        ferro.cli("baseline", "--data", tmp / "train.parquet", "--repo", self.repo, "--model", "mlp:1")
        toml_text = config_map_toml()
        sinks = re.findall(r'sink\s*=\s*"([^"]+)"', toml_text)
        assert len(set(sinks)) == 1, sinks
        self.capture = tmp / "capture"
        toml_text = toml_text.replace(f'"{sinks[0]}"', json.dumps(str(self.capture)))
        self.config = tmp / "deploy.toml"
        self.config.write_text(toml_text)
        self.endpoints = tomllib.loads(toml_text)["endpoint"]
        secret = by_kind("Secret", "ferroserve-tokens")["stringData"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in server_container()["env"] if "valueFrom" in e}
        self.tokens = {var: secret[key] for var, key in env.items()}
        saved = {k: os.environ.get(k) for k in self.tokens}
        os.environ.update(self.tokens)
        try:
            self.srv = ferro.Server(self.repo, serve_args(self.flags, metrics_port="0", config=str(self.config)))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        m = wait_for_line(self.srv, r"metrics server listening on (\S+):(\d+)")
        self.metrics_addr = (m.group(1), int(m.group(2)))
        token = self.tokens["FERROSERVE_INFERENCE_TOKENS"].split(",")[0]
        self.auth = {"Authorization": f"Bearer {token}"}

    def infer(self, rows: int, deployment: str | None = None, seed: int = 0) -> ferro.Response:
        x = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
        headers = {"Content-Type": "application/json", **self.auth}
        if deployment:
            headers["x-ferroserve-deployment"] = deployment
        return ferro.request(self.srv.addr, "POST", "/v2/models/mlp/infer", json.dumps(body).encode(), headers)

    def traffic(self):
        """Requests over both deployments, a canary's drift window's worth of
        rows, one bad request (outcome invalid_input) and one without a token
        (rejected, unauthorized)."""
        for i in range(20):
            r = self.infer(4, seed=i)
            assert r.status == 200, (r.status, r.body[:300])
        canary = next(d for d in self.endpoints[0]["deployment"] if "drift" in d)
        window = canary["drift"]["window_rows"]
        rows = int(ferro.bundle_manifest("mlp")["batching"]["max_batch_size"])
        for i in range(-(-window // rows)):
            r = self.infer(rows, deployment=canary["name"], seed=100 + i)
            assert r.status == 200 and r.headers.get("x-ferroserve-deployment") == canary["name"], r.status
        bad = ferro.request(self.srv.addr, "POST", "/v2/models/mlp/infer",
                            json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                                                    "data": [1, 2, 3]}]}).encode(),
                            {"Content-Type": "application/json", **self.auth})
        assert bad.status == 400, bad.status
        anon = ferro.request(self.srv.addr, "GET", "/v2/models/mlp")
        assert anon.status == 401, anon.status
        end = time.monotonic() + 60
        while True:
            r = ferro.request(self.srv.addr, "GET", "/v2/models/mlp/drift", headers=self.auth)
            assert r.status == 200, (r.status, r.body[:300])
            doc = r.json()
            reports = {d["deployment"]: d for d in doc.get("deployments", [doc])}
            if reports[canary["name"]]["windows_closed"] >= 1:
                break
            assert time.monotonic() < end, f"no drift window closed: {r.body[:500]}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    ferro.ensure_examples()
    d = Deployed(tmp_path_factory.mktemp("deployed"))
    d.traffic()
    yield d
    rc = d.srv.stop(timeout=int(d.flags["--shutdown-delay-s"]) + int(d.flags["--shutdown-grace-s"]) + 10)
    assert rc == 0, f"ferroserve exited with {rc} after SIGTERM\n{d.srv.log()}"


def every_metric_the_files_name() -> dict[str, set[str]]:
    """{metric name: where it is named}."""
    where: dict[str, set[str]] = {}

    def add(names, src):
        for n in names:
            where.setdefault(n, set()).add(src)

    for e in dashboard_exprs() + dashboard_variable_selectors():
        add(metric_names(grafana_concrete(e)), "dashboard")
    for e in rule_exprs():
        add(metric_names(e), "rules.yml")
    for rule in adapter_config()["rules"]:
        add(metric_names(rule["seriesQuery"]), "adapter seriesQuery")
        add(metric_names(adapter_rendered(rule, "ns", "pod")), "adapter metricsQuery")
    hpa = by_kind("HorizontalPodAutoscaler")
    add([m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"], "HPA")
    return where


def test_every_metric_named_is_in_the_servers_scrape(deployed):
    scraped = ferro.scrape(deployed.metrics_addr)
    names = scraped.names()
    where = every_metric_the_files_name()
    missing = {n: sorted(w) for n, w in where.items() if n not in names and n not in PROMETHEUS_OWN}
    assert not missing, f"named but not exported by the server: {missing}"
    # The same text on the HTTP port; the metrics port serves nothing else.
    assert ferro.scrape(deployed.srv.addr).names() >= names
    assert ferro.request(deployed.metrics_addr, "GET", "/v2/health/ready").status == 404
    # The canary's capture and drift series are there with its labels.
    canary = next(d["name"] for d in deployed.endpoints[0]["deployment"] if "drift" in d)
    assert scraped.get_value("ferroserve_drift_score", deployment=canary) is not None
    assert scraped.get_value("ferroserve_capture_dropped_total", deployment=canary) is not None
    assert scraped.value("ferroserve_requests_total", endpoint="mlp", outcome="invalid_input") >= 1
    assert scraped.value("ferroserve_rejected_requests_total", reason="unauthorized") >= 1


def test_configmap_endpoints_are_served_and_the_secrets_tokens_guard(deployed):
    mgmt = deployed.tokens["FERROSERVE_MANAGEMENT_TOKENS"].split(",")[0]
    assert ferro.request(deployed.srv.addr, "GET", "/v2/admin/endpoints/mlp").status == 401
    r = ferro.request(deployed.srv.addr, "GET", "/v2/admin/endpoints/mlp",
                      headers={"Authorization": f"Bearer {mgmt}"})
    assert r.status == 200, (r.status, r.body[:300])
    view = r.json()
    want = {d["name"]: d["weight"] for d in deployed.endpoints[0]["deployment"]}
    assert {d["name"]: d["weight"] for d in view["deployments"]} == want, view
    assert ferro.request(deployed.srv.addr, "GET", "/v2/models/mlp").status == 401
    assert ferro.request(deployed.srv.addr, "GET", "/v2/models/mlp", headers=deployed.auth).status == 200


def test_probe_paths_answer_as_the_probes_expect(deployed):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = server_container()[probe]["httpGet"]["path"]
        r = ferro.request(deployed.srv.addr, "GET", path)  # no token: probes carry none
        assert r.status == 200, (probe, path, r.status)


@pytest.fixture(scope="module")
def prometheus(deployed, tmp_path_factory):
    """Prometheus with compose's scrape configuration pointed at the test's
    server (scraping every second, `namespace` and `pod` labels attached as
    a Kubernetes Prometheus would), and the alerting rules loaded."""
    prometheus_bin, _ = prometheus_tools()
    tmp = tmp_path_factory.mktemp("prometheus")
    cfg = one(DOCKER / "prometheus" / "prometheus.yml")
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    port = free_port()
    for job in cfg["scrape_configs"]:
        job["scrape_interval"] = "1s"
        if job["job_name"] == "ferroserve":
            host, mport = deployed.metrics_addr
            job["static_configs"] = [{"targets": [f"{host}:{mport}"],
                                      "labels": {"namespace": "ferroserve", "pod": "ferroserve-0"}}]
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    for rule_file in cfg.get("rule_files", []):
        shutil.copy(DOCKER / "prometheus" / rule_file, tmp / rule_file)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen([str(prometheus_bin), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    base = f"http://127.0.0.1:{port}"

    def query(q: str) -> list:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", (q, doc)
        return doc["data"]["result"]

    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            try:
                if query('count_over_time(up{job="ferroserve"}[1m]) >= 4') and query('up{job="ferroserve"} == 1'):
                    break
            except OSError:
                pass
            assert time.monotonic() < end, (tmp / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        # Traffic inside the scraped window, so that rates are rates.
        for i in range(10):
            assert deployed.infer(4, seed=1000 + i).status == 200
        time.sleep(2.5)
        yield base, query
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_a_real_prometheus_answers_every_dashboard_query_with_data(prometheus):
    _, query = prometheus
    empty = [e for e in dashboard_exprs() if not query(grafana_concrete(e))]
    assert not empty, f"dashboard queries with no data from a scraped server: {empty}"
    for sel in dashboard_variable_selectors():
        assert query(grafana_concrete(sel)), f"variable selector {sel} matches no series"


def test_a_real_prometheus_answers_the_adapter_rule_and_loads_the_alerts(prometheus):
    base, query = prometheus
    for rule in adapter_config()["rules"]:
        url = f"{base}/api/v1/series?" + urllib.parse.urlencode({"match[]": rule["seriesQuery"]})
        with urllib.request.urlopen(url, timeout=10) as r:
            series = json.load(r)["data"]
        assert series, f"the adapter's seriesQuery {rule['seriesQuery']} finds nothing"
        result = query(adapter_rendered(rule, "ferroserve", "ferroserve-0"))
        assert [r["metric"].get("pod") for r in result] == ["ferroserve-0"], result
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_exprs()) and all(r["health"] == "ok" for r in rules), rules


def test_termination_turns_unready_then_drains(tmp_path):
    """SIGTERM with the Deployment's flags: not ready at once, still
    serving through --shutdown-delay-s, exit 0 within the grace period."""
    f = flags(server_container()["args"], "serve")
    repo = ferro.make_repo(tmp_path / "models", {"mlp": None})
    config = tmp_path / "deploy.toml"
    sinks = set(re.findall(r'sink\s*=\s*"([^"]+)"', config_map_toml()))
    text = config_map_toml()
    for s in sinks:
        text = text.replace(f'"{s}"', json.dumps(str(tmp_path / "capture")))
    config.write_text(text)
    srv = ferro.Server(repo, serve_args(f, metrics_port="0", config=str(config)))
    try:
        assert ferro.request(srv.addr, "GET", "/v2/health/ready").status == 200
        delay = int(f["--shutdown-delay-s"])
        start = time.monotonic()
        srv.terminate()
        time.sleep(0.5)
        assert ferro.request(srv.addr, "GET", "/v2/health/ready").status == 503
        assert ferro.request(srv.addr, "GET", "/v2/health/live").status == 200
        assert time.monotonic() - start < delay, "the delay passed before the checks"
        rc = srv.wait(timeout=delay + int(f["--shutdown-grace-s"]) + 5)
        assert rc == 0, srv.log()
        assert time.monotonic() - start >= delay - 0.5, "the server did not wait out --shutdown-delay-s"
    finally:
        srv.kill()


def test_compose_command_serves_the_mounted_examples(start_server, tmp_path):
    fs = compose()["services"]["ferroserve"]
    f = flags(fs["command"], "serve")
    repo = tmp_path / "models"
    repo.mkdir()
    for v in fs["volumes"]:
        src, dst, *_ = v.split(":")
        if src.startswith("."):
            shutil.copytree((DOCKER / src).resolve(), repo / Path(dst).name)
    srv = start_server(repo, *serve_args(f, metrics_port="0"))
    m = wait_for_line(srv, r"metrics server listening on (\S+):(\d+)")
    assert ferro.scrape((m.group(1), int(m.group(2))))
    for model in ferro.MODELS:
        assert ferro.request(srv.addr, "GET", f"/v2/models/{model}/ready").status == 200, model
    hc = fs["healthcheck"]["test"][1:]
    assert hc[0] == "ferroserve"
    r = ferro.cli(*hc[1:], "--url", f"http://{srv.host}:{srv.port}", check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_kserve_runtime_command_serves_a_bare_model(start_server, tmp_path):
    runtime = next(d for _, d in kserve_docs() if d["kind"] == "ClusterServingRuntime")
    f = flags(runtime["spec"]["containers"][0]["args"], "serve")
    mnt = tmp_path / "mnt-models"
    mnt.mkdir()
    shutil.copy(ferro.EXAMPLES / "mlp" / "1" / "model.onnx", mnt / "model.onnx")
    f["--model-name"] = f["--model-name"].replace("{{.Name}}", "mlp-isvc")
    srv = start_server(mnt, *serve_args(f))
    assert ferro.request(srv.addr, "GET", "/v2/models/mlp-isvc/ready").status == 200
    sample = json.loads((ferro.EXAMPLES / "mlp" / "1" / "sample.json").read_text())
    r = ferro.post_json(srv.addr, "/v2/models/mlp-isvc/infer", sample)
    assert r.status == 200, r.body[:300]
    assert sorted(os.listdir(mnt)) == ["model.onnx"], "the server wrote into KServe's model folder"


def test_batch_job_command_scores_each_file_in_exactly_one_shard(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    job = by_kind("Job", "ferroserve-batch")
    c = job["spec"]["template"]["spec"]["containers"][0]
    f = flags(c["args"], "batch")
    repo = ferro.make_repo(tmp_path / "models", {f["--model"]: None})
    data = tmp_path / "data"
    pattern = f["--input"]
    assert pattern.startswith("/data/"), pattern
    files = [f"part-{i}.parquet" for i in range(12)]
    (data / Path(pattern[len("/data/"):]).parent).mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in files:
        x = rng.standard_normal((5, 64)).astype(np.float32)
        pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(64)}),
                       data / Path(pattern[len("/data/"):]).parent / name)
    scored = []
    for k in range(job["spec"]["completions"]):
        args = []
        for a in c["args"]:
            a = a.replace("$(JOB_COMPLETION_INDEX)", str(k))  # the kubelet's expansion
            a = a.replace("/data/", f"{data}/").replace(f["--repo"], str(repo)) if a.startswith("/") else a
            args.append(a)
        summary = json.loads(ferro.cli(*args).stdout)
        assert summary["files_failed"] == 0 and summary["rows_in_error"] == 0, (k, summary)
        assert summary["rows_scored"] == 5 * summary["files_scored"], (k, summary)
        out = data / "out" / f"shard-{k}"
        written = sorted(p.name for p in out.glob("*.parquet")) if out.is_dir() else []
        assert written == sorted(d["output"] for d in summary["details"]), (k, written, summary)
        scored += [d["input"] for d in summary["details"]]
    # Every file in exactly one shard.
    assert sorted(scored) == sorted(files), scored


# --------------------------------------------------------------------------
# ferroserve profile --emit k8s


def saved_report(dir: Path) -> dict:
    """A report as `ferroserve profile` writes it (profiles/report.schema.json)."""
    run = {"config": {"instances": 2, "max_batch_size": 16, "max_queue_delay_us": 500}, "concurrency": 16,
           "requests": 1000, "ok": 1000, "errors": 0, "throughput": 900.0, "p50_ms": 2.0, "p99_ms": 9.0,
           "cpu_cores_avg": 1.2, "cpu_cores_peak": 1.4, "rss_peak_bytes": 300 << 20, "started_s": 0.0,
           "duration_s": 1.0}
    rec = {"config": run["config"], "concurrency": 16, "slo_met": True, "expected_throughput": 900.0,
           "expected_p99_ms": 9.0, "cpu_millicores": 1750, "cpu": "1750m", "memory_bytes": 384 << 20,
           "memory": "384Mi", "measured_peak_cpu_cores": 1.4, "measured_peak_rss_bytes": 300 << 20,
           "sizes": {"kubernetes": "m", "cloud": []},
           "bundle_toml": "[batching]\nmax_batch_size = 16\nmax_queue_delay_us = 500\n\n[instances]\ncount = 2\n",
           "kubernetes_resources": 'resources:\n  requests:\n    cpu: "1750m"\n    memory: "384Mi"\n'
                                   '  limits:\n    cpu: "1750m"\n    memory: "384Mi"\n'}
    report = {"schema_version": 1, "model": "mlp", "version": 2, "slo_p99_ms": 50.0, "budget_s": 10.0,
              "cores": 4, "runs": [run], "timeline": [{"t_s": 0.0, "cpu_cores": 1.4, "rss_bytes": 300 << 20}],
              "recommendation": rec}
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "report.json").write_text(json.dumps(report))
    return report


@pytest.mark.parametrize("given", ["folder", "file"])
def test_profile_emits_a_valid_deployment_with_the_recommended_resources(tmp_path, given):
    report = saved_report(tmp_path / "mlp-report")
    target = tmp_path / "mlp-report" if given == "folder" else tmp_path / "mlp-report" / "report.json"
    r = ferro.cli("profile", "--report", target, "--emit", "k8s")
    out = tmp_path / "mlp-report" / "k8s-deployment.yaml"
    assert f"wrote {out}" in r.stdout, r.stdout
    assert "recommended: instances 2, max_batch_size 16" in r.stdout, r.stdout
    emitted = one(out)
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(emitted, version, strict=True) == version
    res = container(emitted["spec"]["template"]["spec"], SERVER_CONTAINER)["resources"]
    rec = report["recommendation"]
    assert res == yaml.safe_load(rec["kubernetes_resources"])["resources"], res
    assert res["limits"] == {"cpu": rec["cpu"], "memory": rec["memory"]}
    # The rest is docker/k8s/deployment.yaml as it is.
    template = deployment()
    for d in (template, emitted):
        container(d["spec"]["template"]["spec"], SERVER_CONTAINER).pop("resources")
    assert emitted == template


def test_profile_emit_refuses_a_report_without_a_recommendation(tmp_path):
    report = saved_report(tmp_path / "r")
    report["recommendation"] = None
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    r = ferro.cli("profile", "--report", tmp_path / "r", "--emit", "k8s", check=False)
    assert r.returncode != 0 and "no recommendation" in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path / "r" / "k8s-deployment.yaml").exists()
    r = ferro.cli("profile", "--report", tmp_path / "r", "--model", "conv", "--emit", "k8s", check=False)
    assert r.returncode != 0 and "profile of mlp" in r.stderr, r.stderr
