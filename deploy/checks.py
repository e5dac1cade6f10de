#!/usr/bin/env python3
"""The deployment checks that need Python (run by .ci/deploy-checks).

  checks.py kubernetes BINARY   deploy/kubernetes/*.yaml against the Kubernetes
                                schemas, and their ConfigMaps through `threatbeat test config`
  checks.py helm BINARY         lint and render deploy/helm/threatbeat with Helm's own
                                engine, then the same checks on what it renders
  checks.py compose BINARY      deploy/compose: parses, images pinned, networks,
                                every ${VAR} documented in .env.example, configs valid

BINARY is the threatbeat binary the packages ship. Exits 1 with every problem
listed, 0 when there is none.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
# The oldest and the newest Kubernetes the manifests are checked against
# (kubernetes-validate ships the schemas of 1.25 to 1.37).
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
# Kinds without a schema in kubernetes-validate (custom resources).
CUSTOM_KINDS = {"ServiceMonitor"}
# The objects the raw manifests and the chart both make.
SAME_KINDS = {"ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"}

problems = []


def problem(message):
    problems.append(message)
    print(f"  FAIL {message}")


def validate(documents, origin):
    """Validates each object against the schemas of every version in KUBERNETES_VERSIONS."""
    import kubernetes_validate

    for document in documents:
        kind = document.get("kind")
        name = document.get("metadata", {}).get("name")
        if kind in CUSTOM_KINDS:
            check_service_monitor(document, origin)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                problem(f"{origin}: {kind}/{name} is not valid for Kubernetes {version}: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problem(f"{origin}: {kind}/{name}: no schema for Kubernetes {version}: {error}")
    print(f"  ok   {origin}: {len(documents)} objects against Kubernetes {', '.join(KUBERNETES_VERSIONS)} (strict)")


def check_service_monitor(document, origin):
    """A ServiceMonitor has no schema here: check what makes it scrape this Service."""
    endpoints = document.get("spec", {}).get("endpoints", [])
    if document.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(f"{origin}: ServiceMonitor apiVersion is {document.get('apiVersion')}")
    if not any(e.get("port") == "metrics" and e.get("path") == "/metrics" for e in endpoints):
        problem(f"{origin}: the ServiceMonitor does not scrape port `metrics` at /metrics")
    if not document.get("spec", {}).get("selector", {}).get("matchLabels"):
        problem(f"{origin}: the ServiceMonitor selects no Service")


def self_test_validator():
    """The validator must refuse a broken object, or every `ok` above means nothing."""
    import kubernetes_validate

    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "one", "selector": {}, "template": {}}}
    try:
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    except kubernetes_validate.ValidationError:
        return
    problem("kubernetes-validate accepted a Deployment with replicas: \"one\"")


def check_workload(documents, origin):
    """What the deployment docs promise: one replica, Recreate, non-root and read-only, probes on /healthz."""
    deployments = [d for d in documents if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        problem(f"{origin}: {len(deployments)} Deployments, expected 1")
        return
    spec = deployments[0]["spec"]
    if spec.get("replicas") != 1:
        problem(f"{origin}: replicas is {spec.get('replicas')}, must be 1 (one poller per cluster)")
    if spec.get("strategy", {}).get("type") != "Recreate":
        problem(f"{origin}: strategy must be Recreate (a rolling update runs two pollers)")
    pod = spec["template"]["spec"]
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problem(f"{origin}: the pod does not set runAsNonRoot")
    for container in pod["containers"]:
        security = container.get("securityContext", {})
        if not security.get("readOnlyRootFilesystem"):
            problem(f"{origin}: container {container['name']} has a writable root file system")
        if security.get("allowPrivilegeEscalation") is not False:
            problem(f"{origin}: container {container['name']} allows privilege escalation")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(f"{origin}: container {container['name']} keeps capabilities")
        for probe in ("livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != "/healthz" or get.get("port") != "metrics":
                problem(f"{origin}: {probe} is not an HTTP GET of /healthz on port `metrics`")
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        if "/var/lib/threatbeat" not in mounts:
            problem(f"{origin}: path.data (/var/lib/threatbeat) is not a volume")
    services = [d for d in documents if d.get("kind") == "Service"]
    if not any(p.get("name") == "metrics" for s in services for p in s["spec"].get("ports", [])):
        problem(f"{origin}: no Service has a port named `metrics`")


def test_config(binary, config_maps, origin, env):
    """Writes threatbeat.yml and modules.d from the ConfigMaps and runs `threatbeat test config` on them."""
    with tempfile.TemporaryDirectory() as home:
        home = Path(home)
        (home / "modules.d").mkdir()
        main = None
        for config_map in config_maps:
            for key, text in config_map.get("data", {}).items():
                if key == "threatbeat.yml":
                    main = home / key
                    main.write_text(with_test_ca(text, home))
                elif key.endswith(".yml"):
                    (home / "modules.d" / key).write_text(text)
        if main is None:
            problem(f"{origin}: no ConfigMap holds threatbeat.yml")
            return
        run_test_config(binary, main, home, origin, env)


def with_test_ca(text, home):
    """The mounted CA certificate, replaced by a throwaway one in `home` (the
    agent reads certificate files when it loads its config)."""
    mounted = "/etc/threatbeat/certs/ca.crt"
    if mounted not in text:
        return text
    certificate = Path(home) / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=deploy-checks", "-days", "1", "-keyout", str(Path(home) / "ca.key"), "-out", str(certificate)],
        check=True, capture_output=True,
    )
    return text.replace(mounted, str(certificate))


def run_test_config(binary, main, home, origin, env):
    # path.data points into the image's volume; the check keeps it in the temporary home.
    result = subprocess.run(
        [str(binary), "-c", str(main), "--path.data", str(Path(home) / "data"), "test", "config"],
        capture_output=True, text=True, env={"PATH": os.environ.get("PATH", ""), **env}, check=False,
    )
    if result.returncode != 0:
        problem(f"{origin}: threatbeat test config: {result.stderr.strip() or result.stdout.strip()}")
    else:
        print(f"  ok   {origin}: {result.stdout.strip()}")


def load_all(path):
    with open(path) as file:
        return [d for d in yaml.safe_load_all(file) if d]


def kubernetes(binary):
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        loaded = load_all(path)
        for document in loaded:
            if document.get("metadata", {}).get("namespace", "threatbeat") != "threatbeat" and document["kind"] != "Namespace":
                problem(f"{path.name}: {document['kind']} outside the threatbeat namespace")
        documents += loaded
    self_test_validator()
    validate(documents, "deploy/kubernetes")
    check_workload(documents, "deploy/kubernetes")
    config_maps = [d for d in documents if d["kind"] == "ConfigMap"]
    test_config(binary, config_maps, "deploy/kubernetes ConfigMaps", {
        "ES_HOSTS": "https://elasticsearch:9200", "ES_API_KEY": "dummy-id:dummy-api-key",
        "MISP_URL": "https://misp.example.org", "MISP_API_KEY": "dummy-misp-api-key"})
    return {d["kind"] for d in documents}


def helm(binary, raw_kinds):
    import helm_python

    chart = DEPLOY / "helm" / "threatbeat"
    lint = helm_python.lint(str(chart))
    for message in lint.get("messages", []):
        # Severity 1 is INFO (helm lint prints it without failing), e.g. "icon is recommended".
        if message.get("severity", 0) > 1:
            problem(f"helm lint: {message.get('path')}: {message.get('error')}")
    for error in lint.get("errors") or []:
        problem(f"helm lint: {error}")
    print(f"  ok   helm lint (Helm {helm_python.helm_sdk_version()}): {len(lint.get('messages', []))} notes")
    cases = {
        "default values": {},
        "every option on": {
            "serviceMonitor": {"enabled": True},
            "elasticsearch": {"caSecret": "es-http-certs-public"},
            "secret": {"create": False, "existingSecret": "threatbeat-keys"},
            "persistence": {"existingClaim": "threatbeat-data"},
            "extraConfig": {"logging.level": "debug"},
            "imagePullSecrets": [{"name": "registry"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
        "no persistence": {"persistence": {"enabled": False}},
    }
    with helm_python.Chart.load(str(chart)) as loaded:
        for case, values in cases.items():
            rendered = loaded.render(values, name="threatbeat", namespace="threatbeat")
            documents = []
            for template, text in sorted(rendered.items()):
                if template.endswith(".yaml"):
                    documents += [d for d in yaml.safe_load_all(text) if d]
            origin = f"helm chart ({case})"
            validate(documents, origin)
            check_workload(documents, origin)
            kinds = {d["kind"] for d in documents}
            if case == "default values" and (SAME_KINDS & raw_kinds) - kinds:
                problem(f"{origin}: makes no {sorted((SAME_KINDS & raw_kinds) - kinds)} while deploy/kubernetes does")
            test_config(binary, [d for d in documents if d["kind"] == "ConfigMap"], origin, {
                "ES_API_KEY": "dummy-id:dummy-api-key", "MISP_URL": "https://misp.example.org", "MISP_API_KEY": "dummy-misp-api-key"})


VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}")


def hostnames(value, into):
    """The host names of the URLs in a parsed threatbeat config."""
    if isinstance(value, dict):
        for item in value.values():
            hostnames(item, into)
    elif isinstance(value, list):
        for item in value:
            hostnames(item, into)
    elif isinstance(value, str):
        for match in re.finditer(r"\bhttps?://([A-Za-z0-9_.-]+)", value):
            into.add(match.group(1))


def compose(binary):
    folder = DEPLOY / "compose"
    text = (folder / "docker-compose.yml").read_text()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem(f"docker-compose.yml does not parse: {error}")
        return
    services = spec.get("services", {})
    print(f"  ok   docker-compose.yml parses: {len(services)} services")

    for name, service in services.items():
        image = service.get("image")
        if not image:
            problem(f"service {name} has no image")
            continue
        reference = image.rsplit("/", 1)[-1]
        tag = reference.split(":", 1)[1] if ":" in reference else ""
        if not tag or tag == "latest" or "$" in tag:
            problem(f"service {name}: image {image} is not pinned by a tag")
    print("  ok   every image is pinned by a tag" if not any("pinned" in p for p in problems) else "")

    # The agent's targets, read from its own config: each must share a network with it.
    config_dir = folder / "threatbeat"
    targets = set()
    for path in [config_dir / "threatbeat.yml", *sorted((config_dir / "modules.d").glob("*.yml"))]:
        hostnames(yaml.safe_load(path.read_text()), targets)
    networks = {name: set(service.get("networks", ["default"])) for name, service in services.items()}
    agents = [name for name in services if name.startswith("threatbeat")]
    for agent in agents:
        for target in sorted(targets):
            if target not in services:
                problem(f"{agent} talks to `{target}`, which is no service of the lab")
            elif not networks[agent] & networks[target]:
                problem(f"{agent} talks to `{target}` but shares no network with it ({sorted(networks[agent])} vs {sorted(networks[target])})")
    print(f"  ok   {', '.join(agents)} share a network with {', '.join(sorted(targets))}")

    documented = set()
    for line in (folder / ".env.example").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match:
            documented.add(match.group(1))
    used = set(VARIABLE.findall(text))
    for variable in sorted(used - documented):
        problem(f"docker-compose.yml uses ${{{variable}}}, which .env.example does not document")
    print(f"  ok   {len(used)} variables used, all in .env.example" if used <= documented else "")

    with tempfile.TemporaryDirectory() as home:
        # The files as the containers see them: modules.d beside threatbeat.yml.
        copy = Path(home) / "etc"
        (copy / "modules.d").mkdir(parents=True)
        (copy / "threatbeat.yml").write_text((config_dir / "threatbeat.yml").read_text())
        for path in (config_dir / "modules.d").glob("*.yml"):
            (copy / "modules.d" / path.name).write_text(path.read_text())
        run_test_config(binary, copy / "threatbeat.yml", home, "deploy/compose threatbeat config",
                        {"MISP_API_KEY": "dummy-misp-api-key", "ES_PASSWORD": "dummy-es-password"})


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("kubernetes", "helm", "compose"):
        print(__doc__, file=sys.stderr)
        return 2
    what, binary = sys.argv[1], Path(sys.argv[2])
    if what == "kubernetes":
        kubernetes(binary)
    elif what == "helm":
        raw_kinds = {d["kind"] for p in (DEPLOY / "kubernetes").glob("*.yaml") for d in load_all(p)}
        helm(binary, raw_kinds)
    else:
        compose(binary)
    if problems:
        print(f"{what}: {len(problems)} problems", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
