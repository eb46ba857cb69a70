"""The deployment material, checked without a Docker engine or a cluster (fast, offline).

docker/docker-compose.yml validates against the Compose Specification's JSON schema (vendored in
tests/schemas/) as written and after interpolation with docker/.env.example, and follows the project's
rules: healthchecks or one-shot services, ports on 127.0.0.1 or a documented variable, secrets only from
.env, every part switched by configuration the code really reads. The Grafana dashboard queries only
metrics the scoring service and the StatsD mapping export; Prometheus scrapes the service. Every Kubernetes
document under docker/kubernetes/ validates against the Kubernetes schemas (kubernetes-validate), the Helm
values' Kubernetes parts too, and the training pod rendered from the Helm values matches the pod template.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
K8S_DIR = DOCKER / "kubernetes"
HELM_VALUES = K8S_DIR / "helm" / "airflow-values.yaml"
HELM_SECRETS = K8S_DIR / "helm" / "airflow-secrets.example.yaml"
POD_TEMPLATE = K8S_DIR / "pod-template" / "trainer-pod.yaml"
SCHEMAS = REPO_ROOT / "tests" / "schemas"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "mlloop.json"
STATSD_MAPPING = DOCKER / "prometheus" / "statsd-mapping.yml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"

KUBERNETES_VERSION = "1.33"
# The only variables a published port's address may come from (documented in .env.example and README).
PUBLISH_ADDRESS_VARIABLES = ("UI_BIND_ADDRESS", "SCORING_BIND_ADDRESS")
SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|_KEY$|^MLLOOP_PII_KEY$|^S3_ACCESS_KEY$|^MINIO_ROOT_USER$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, ${NAME:+alt}; $$ escapes.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
ONE_SHOT = "service_completed_successfully"


# -- helpers -------------------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, tuple[str, bool]]:
    """Return NAME -> (value, required) of docker/.env.example ('# NAME=value' lines are optional)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\S*)", line.strip())
        if match:
            values[match["name"]] = (match["value"], not match["comment"])
    return values


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Interpolate like `docker compose` does; raise naming the variable where ``:?`` finds it unset."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op, arg = env.get(name), match["op"], match["arg"]
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            if unset:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset else arg
        return value or ""

    return INTERPOLATION.sub(replace, text)


def _interpolated_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    example = {name: value for name, (value, required) in _env_example().items() if required}
    return yaml.safe_load(_interpolate(COMPOSE.read_text(), example if env is None else env))


def _variables_used() -> dict[str, set[str]]:
    """Return each interpolated variable name and the operators it is used with ('' for none)."""
    used: dict[str, set[str]] = {}
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    for match in INTERPOLATION.finditer(text):
        if not match["escaped"]:
            used.setdefault(match["name"] or match["bare"], set()).add(match["op"] or "")
    return used


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Return (path, scalar) for every scalar under ``node``."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in _walk(value, f"{path}[{i}]")]
    return [(path, node)]


def _schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message[:300]}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _k8s_definition_errors(definition: str, value: Any) -> list[str]:
    """Validate ``value`` against one Kubernetes type (e.g. ``toleration-v1``), strict (no unknown fields)."""
    import referencing
    from kubernetes_validate.utils import all_versions, major_minor, schema_contents

    version = [v for v in all_versions() if major_minor(v) <= KUBERNETES_VERSION][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{folder}/{definition}.json", version)
    definitions = schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return _schema_errors(jsonschema.Draft202012Validator(schema, registry=registry), value)


def _k8s_resource_errors(document: dict[str, Any]) -> list[str]:
    """Validate a resource against its kind's schema (file naming as kubernetes-validate's)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", document["apiVersion"])
    return _k8s_definition_errors(f"{document['kind'].lower()}-{group_version}", document)


def _yaml_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S_DIR.rglob("*.y*ml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def _helm_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in yaml.safe_load(HELM_VALUES.read_text())["env"]}


# -- compose: schema -----------------------------------------------------------------------------------
def test_vendored_compose_schema_is_the_recorded_one() -> None:
    digest = hashlib.sha256((SCHEMAS / "compose-spec.json").read_bytes()).hexdigest()
    assert digest in (SCHEMAS / "README.md").read_text(), "tests/schemas/compose-spec.json changed: record it"
    assert (SCHEMAS / "LICENSE.compose-spec").is_file()


def test_compose_file_validates_against_the_compose_specification() -> None:
    validator = _compose_validator()
    assert _schema_errors(validator, _compose()) == [], "docker-compose.yml as written"
    assert _schema_errors(validator, _interpolated_compose()) == [], "docker-compose.yml with .env.example"


def test_compose_schema_check_catches_a_broken_file() -> None:
    broken = _compose()
    broken["services"]["mlflow"]["health_check"] = broken["services"]["mlflow"].pop("healthcheck")
    broken["services"]["redis"]["depends_on"] = {"postgres": {"condition": "when_ready"}}
    errors = _schema_errors(_compose_validator(), broken)
    assert any(e.startswith("services/mlflow") and "health_check" in e for e in errors), errors
    assert any(e.startswith("services/redis/depends_on") for e in errors), errors


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="no docker compose plugin on this machine",
)
def test_docker_compose_config_accepts_the_file() -> None:
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


# -- compose: project rules ----------------------------------------------------------------------------
def test_every_service_has_a_healthcheck_or_is_one_shot() -> None:
    services = _compose()["services"]
    waited_to_complete = {
        target
        for service in services.values()
        for target, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == ONE_SHOT
    }
    for name, service in services.items():
        if name in waited_to_complete:
            assert service.get("restart") == "no", f"one-shot {name} must not restart"
            assert "healthcheck" not in service, f"one-shot {name} needs no healthcheck"
        else:
            assert (service.get("healthcheck") or {}).get("test"), (
                f"{name}: add a healthcheck (or make it one-shot)"
            )
        for target, condition in (service.get("depends_on") or {}).items():
            assert isinstance(condition, dict), f"{name} -> {target}: use depends_on with a condition"
            wanted = ONE_SHOT if target in waited_to_complete else "service_healthy"
            assert condition.get("condition") == wanted, f"{name} -> {target}: condition {wanted}"


def test_published_ports_bind_loopback_or_a_documented_variable() -> None:
    readme, example = (REPO_ROOT / "README.md").read_text(), _env_example()
    for variable in PUBLISH_ADDRESS_VARIABLES:
        assert variable in example and variable in readme, f"document {variable} in .env.example and README"
    allowed = {"127.0.0.1"} | {f"${{{v}:-127.0.0.1}}" for v in PUBLISH_ADDRESS_VARIABLES}
    published = 0
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as HOST_IP:HOST_PORT:CONTAINER_PORT"
            # Split on the colons outside ${...}: HOST_IP:HOST_PORT:CONTAINER_PORT.
            fields = re.findall(r"(?:\$\{[^}]*\}|[^:$])+", port)
            host_ip = fields[0] if len(fields) == 3 else ""
            assert host_ip in allowed, f"{name} publishes {port!r}: bind 127.0.0.1 or one of {allowed}"
            published += 1
        assert "network_mode" not in service, f"{name}: host networking would bypass the port rules"
    assert published >= 4


def test_every_variable_is_documented_in_env_example() -> None:
    used, example = _variables_used(), _env_example()
    missing = sorted(set(used) - set(example))
    assert not missing, f"add {missing} to docker/.env.example"
    unused = sorted(set(example) - set(used))
    assert not unused, f"{unused} in docker/.env.example are not used by docker-compose.yml"
    for name, ops in used.items():
        if ":?" in ops:
            assert example[name][1], f"{name} is required: list it uncommented in docker/.env.example"


def test_secrets_come_only_from_env_and_a_missing_one_fails_clearly() -> None:
    used = _variables_used()
    secrets = sorted(name for name in used if SECRET_VARIABLE.search(name))
    assert {"POSTGRES_PASSWORD", "S3_SECRET_KEY", "MLFLOW_ADMIN_PASSWORD", "AIRFLOW_FERNET_KEY"} <= set(
        secrets
    )
    for name in secrets:
        assert used[name] == {":?"}, (
            f"${{{name}}}: use ${{{name}:?message}} everywhere (no default, no bare use)"
        )
    # No literal secret: environment values named like secrets, and passwords inside URLs, are interpolated.
    for path, value in _walk(_compose()):
        key = path.rsplit(".", 1)[-1]
        if ".environment." in path and re.search(r"PASSWORD|SECRET|_KEY$|AUTH$", key) and value is not None:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), f"{path} is a literal secret"
        for url in re.findall(r"[a-z0-9+]+://[^\s\"',]+", str(value)):
            password = urllib.parse.urlsplit(url.replace("${", "{").replace("}", "}")).password
            if password:
                assert password.startswith("{") and ":?" in password, f"{path}: literal password in {url}"
    # Every required value in .env.example is a placeholder, never a real secret.
    for name, (value, required) in _env_example().items():
        if required:
            assert value.startswith("change-me"), f"{name} in .env.example must be a change-me placeholder"


def test_a_missing_secret_stops_compose_naming_it() -> None:
    env = {name: value for name, (value, required) in _env_example().items() if required}
    del env["MLFLOW_ADMIN_PASSWORD"]
    with pytest.raises(
        ValueError, match=r"MLFLOW_ADMIN_PASSWORD is missing: set MLFLOW_ADMIN_PASSWORD in docker/\.env"
    ):
        _interpolated_compose(env)


def test_docker_env_is_git_ignored() -> None:
    proc = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO_ROOT, check=False)
    assert proc.returncode == 0, "add /docker/.env to .gitignore"


def test_images_are_pinned_and_built_from_the_repository() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            dockerfile = (
                COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
            ).resolve()
            assert dockerfile == DOCKER / "airflow" / "Dockerfile", name
        else:
            assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", image) and not image.endswith(":latest"), (
                f"{name}: pin the image tag ({image})"
            )
    dockerfile = (DOCKER / "airflow" / "Dockerfile").read_text()
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", requirements, re.M)[1]
    assert f"ARG AIRFLOW_IMAGE=apache/airflow:{airflow_pin}-python3.11" in dockerfile
    allowed = (DOCKER / "airflow" / "Dockerfile.dockerignore").read_text().split()
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, re.M):
        for item in source.split():
            assert (REPO_ROOT / item).exists(), f"COPY {item}: not in the repository"
            assert f"!{item}" in allowed, f"COPY {item}: allow it in Dockerfile.dockerignore"


def test_postgres_init_creates_the_databases_the_services_use() -> None:
    script = DOCKER / "postgres" / "init-databases.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    created = {
        db for line in re.findall(r"^create \S+ \S+ (.+)$", script.read_text(), re.M) for db in line.split()
    }
    services = _interpolated_compose()["services"]
    worker_env = services["airflow-worker"]["environment"]
    mlflow_env = services["mlflow"]["environment"]
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow" / "basic_auth.ini")
    uris = [
        worker_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        worker_env["AIRFLOW__CELERY__RESULT_BACKEND"],
        mlflow_env["MLFLOW_BACKEND_STORE_URI"],
        auth["mlflow"]["database_uri"],
    ]
    for uri in uris:
        parts = urllib.parse.urlsplit(uri)
        assert parts.hostname == "postgres" and parts.path.lstrip("/") in created, uri
    assert "admin_password" not in auth["mlflow"], "the MLflow admin password comes from the environment"
    assert urllib.parse.urlsplit(auth["mlflow"]["database_uri"]).password is None


# -- compose: configuration switches every part --------------------------------------------------------
def test_configuration_alone_switches_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlloop.config import Settings

    services = _interpolated_compose()["services"]
    assert set(services) >= {"postgres", "redis", "minio", "mlflow", "scoring", "prometheus", "grafana"}
    for component in ("apiserver", "scheduler", "dag-processor", "triggerer", "worker"):
        assert f"airflow-{component}" in services
    for name, service in services.items():
        names = service.get("environment") or {}
        unknown = sorted(
            k for k in names if k.startswith("MLLOOP_") and k[7:].lower() not in Settings.model_fields
        )
        assert not unknown, f"{name}: {unknown} are not settings of include/mlloop/config.py"
    for name in ("airflow-worker", "scoring"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        for key in list(os.environ):
            if key.startswith("MLLOOP_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.data_root.startswith("s3://"), name
        connection = json.loads(env[f"AIRFLOW_CONN_{settings.storage_conn_id.upper()}"])
        assert connection["conn_type"] == "aws" and connection["login"] and connection["password"]
        assert urllib.parse.urlsplit(connection["extra"]["endpoint_url"]).hostname == "minio"
        assert urllib.parse.urlsplit(settings.mlflow_tracking_uri).hostname == "mlflow"
        assert env["MLFLOW_TRACKING_USERNAME"] and env["MLFLOW_TRACKING_PASSWORD"], name
        assert settings.pii_key is not None, name
    worker = services["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert urllib.parse.urlsplit(worker["environment"]["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert int(worker["deploy"]["replicas"]) >= 2 and worker["command"] == "celery worker"
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert services["scoring"]["command"] == ["python", "-m", "mlloop.serving"]


def test_airflow_and_mlflow_accept_the_commands_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow
    from airflow.cli.cli_parser import get_parser
    from mlflow.cli import server
    from mlflow.server.auth.config import read_auth_config

    services = _interpolated_compose()["services"]
    template = yaml.safe_load((Path(airflow.__file__).parent / "config_templates" / "config.yml").read_text())
    parser = get_parser()
    for name, service in services.items():
        if name.startswith("airflow-") and service["command"] != "celery worker":  # celery: provider only
            parser.parse_args(service["command"].split())
        for key in service.get("environment") or {}:
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
                if section != "celery":  # the Celery provider's section (in the image, not installed here)
                    assert option in template[section]["options"], f"{name}: {key} is no Airflow option"
    mlflow = services["mlflow"]
    assert mlflow["command"][:2] == ["mlflow", "server"]
    context = server.make_context("server", list(mlflow["command"][2:]))
    assert context.params["app_name"] == "basic-auth"
    envvars = {param.envvar for param in server.params if param.envvar}
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"} <= envvars & set(
        mlflow["environment"]
    )
    for key, value in mlflow["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(DOCKER / "mlflow" / "basic_auth.ini"))
    auth = read_auth_config()
    assert auth.database_uri.startswith("postgresql://") and auth.admin_password == "change-me"


# -- monitoring ----------------------------------------------------------------------------------------
def _serving_metric_names() -> set[str]:
    from mlloop.serving.service import Metrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


# A capture reference in a statsd-exporter mapping's name or label: $1 or ${1}.
CAPTURE = re.compile(r"\$(?:\{(\d+)\}|(\d+))")
MONITORING_ROW = "Monitoring (monitor_<use case>)"


def _statsd_mappings() -> list[dict[str, Any]]:
    return yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]


def _statsd_metric_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for mapping in _statsd_mappings():
        if mapping.get("action") == "drop":
            continue
        parts = CAPTURE.split(mapping["name"])
        # split keeps the two groups of each reference: literal, ${n} group, $n group, literal, ...
        name = "".join(
            re.escape(part) if i % 3 == 0 else ("[a-z0-9_]+" if part is not None else "")
            for i, part in enumerate(parts)
        )
        suffix = "(_bucket|_count|_sum)" if mapping.get("observer_type") == "histogram" else ""
        patterns.append(re.compile(name + suffix))
    return patterns


def statsd_metric(stat: str, kind: str = "gauge") -> tuple[str, dict[str, str]] | None:
    """Map a StatsD name as statsd-exporter does with our mapping: the first glob that matches wins.

    Returns the Prometheus metric name and labels, or None when the mapping drops it or none matches.
    """
    for mapping in _statsd_mappings():
        if mapping.get("match_metric_type", kind) != kind:
            continue
        glob = "".join(
            "([^.]+)" if part == "*" else re.escape(part) for part in re.split(r"(\*)", mapping["match"])
        )
        match = re.fullmatch(glob, stat)
        if match is None:
            continue
        if mapping.get("action") == "drop":
            return None

        def fill(text: str, match: re.Match[str] = match) -> str:
            return CAPTURE.sub(lambda ref: match[int(ref[1] or ref[2])], text)

        return fill(mapping["name"]), {k: fill(v) for k, v in (mapping.get("labels") or {}).items()}
    return None


def _dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p["targets"]]


def monitoring_panels() -> list[dict[str, Any]]:
    """Return the panels of the dashboard's monitoring row (those after it, up to the next row)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (start,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == MONITORING_ROW]
    rest = panels[start + 1 :]
    end = next((i for i, p in enumerate(rest) if p["type"] == "row"), len(rest))
    return rest[:end]


def queried_metrics(panel: dict[str, Any]) -> set[str]:
    """Return the mlloop_/airflow_ metric names a panel's queries name."""
    return {m for t in panel["targets"] for m in re.findall(r"\b(?:mlloop|airflow)_[a-z0-9_]+\b", t["expr"])}


def test_dashboard_queries_only_metrics_the_stack_exports() -> None:
    serving, statsd = _serving_metric_names(), _statsd_metric_patterns()
    assert "mlloop_requests_total" in serving and "mlloop_request_seconds_bucket" in serving
    queries = _dashboard_queries()
    assert len(queries) >= 10
    seen = set()
    for title, expr in queries:
        metrics = queried_metrics({"targets": [{"expr": expr}]})
        assert metrics, f"{title!r} queries no mlloop/airflow metric: {expr}"
        for metric in metrics:
            known = metric in serving or any(p.fullmatch(metric) for p in statsd)
            assert known, f"{title!r} queries {metric}, which neither the service nor statsd-exporter exports"
        seen |= metrics
    assert any(m.startswith("mlloop_") for m in seen) and any(m.startswith("airflow_") for m in seen)
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]


def test_prometheus_scrapes_the_scoring_service_and_airflow_metrics() -> None:
    from mlloop.config import Settings
    from mlloop.serving.app import create_app

    services = _interpolated_compose()["services"]
    port = services["scoring"]["environment"]["MLLOOP_SERVING_PORT"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    targets = {t for config in jobs["scoring"]["static_configs"] for t in config["targets"]}
    assert f"scoring:{port}" in targets
    path = jobs["scoring"].get("metrics_path", "/metrics")
    assert path in {route.path for route in create_app(Settings()).routes}
    exporter = services["statsd-exporter"]["command"]
    web_port = next(arg for arg in exporter if arg.startswith("--web.listen-address=")).rsplit(":", 1)[1]
    assert {f"statsd-exporter:{web_port}"} <= {
        t for c in jobs["airflow"]["static_configs"] for t in c["targets"]
    }
    udp_port = next(arg for arg in exporter if arg.startswith("--statsd.listen-udp=")).rsplit(":", 1)[1]
    airflow_env = services["airflow-scheduler"]["environment"]
    assert airflow_env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    assert airflow_env["AIRFLOW__METRICS__STATSD_PORT"] == udp_port
    # Task processes (the monitor's figures) send from the workers, through the same settings.
    worker_env = services["airflow-worker"]["environment"]
    for option in ("STATSD_ON", "STATSD_HOST", "STATSD_PORT", "STATSD_PREFIX"):
        assert worker_env[f"AIRFLOW__METRICS__{option}"] == airflow_env[f"AIRFLOW__METRICS__{option}"], option
    assert worker_env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert all(
        m["match"].startswith(airflow_env["AIRFLOW__METRICS__STATSD_PREFIX"] + ".")
        for m in yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]
    )


# -- Kubernetes ----------------------------------------------------------------------------------------
def test_every_kubernetes_document_validates_against_the_kubernetes_schemas() -> None:
    documents = _yaml_documents()
    resources = [(path, doc) for path, doc in documents if "kind" in doc]
    others = {path for path, doc in documents if "kind" not in doc}
    assert others == {HELM_VALUES}, (
        f"YAML under docker/kubernetes/ that is neither a resource nor the values: {others}"
    )
    assert len(resources) >= 10
    for path, doc in resources:
        errors = _k8s_resource_errors(doc)
        assert not errors, f"{path.relative_to(REPO_ROOT)} {doc['kind']} {doc['metadata']['name']}: {errors}"


def test_kubernetes_schema_check_catches_a_broken_pod() -> None:
    pod = yaml.safe_load(POD_TEMPLATE.read_text())
    pod["spec"]["tolerations"][0]["effect"] = ["NoSchedule"]
    pod["spec"]["containers"][0]["resource"] = pod["spec"]["containers"][0].pop("resources")
    errors = _k8s_resource_errors(pod)
    assert any(e.startswith("spec/tolerations/0/effect") for e in errors), errors
    assert any(e.startswith("spec/containers/0") and "'resource'" in e for e in errors), errors


def test_helm_values_kubernetes_parts_and_secrets_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlloop.config import Settings
    from mlloop.orchestration.kubernetes import K8S_ENV_PREFIX, KubernetesTrainingSettings

    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["executor"] == "CeleryExecutor"
    for item in values["env"]:
        assert _k8s_definition_errors("envvar-v1", item) == [], item
    assert _k8s_definition_errors("resourcerequirements-v1", values["workers"]["resources"]) == []
    env = _helm_env()
    for name in env:
        if name.startswith(K8S_ENV_PREFIX):
            assert name[len(K8S_ENV_PREFIX) :].lower() in KubernetesTrainingSettings.model_fields, name
        elif name.startswith("MLLOOP_"):
            assert name[len("MLLOOP_") :].lower() in Settings.model_fields, name
    # The training settings accept them (as the DAG processor and workers will: quantities, JSON, enums).
    for name in list(os.environ):
        if name.startswith(K8S_ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(K8S_ENV_PREFIX):
            monkeypatch.setenv(name, value)
    assert KubernetesTrainingSettings().gpu_count >= 1
    for toleration in json.loads(env["MLLOOP_K8S_TOLERATIONS"]):
        assert _k8s_definition_errors("toleration-v1", toleration) == [], toleration
    assert all(isinstance(v, str) for v in json.loads(env["MLLOOP_K8S_NODE_SELECTOR"]).values())
    secrets = {
        doc["metadata"]["name"]: doc["stringData"] for doc in yaml.safe_load_all(HELM_SECRETS.read_text())
    }
    for item in values["secret"]:
        assert item["secretKey"] in secrets.get(item["secretName"], {}), item
    assert "connection" in secrets[values["data"]["metadataSecretName"]]
    assert "connection" in secrets[values["data"]["resultBackendSecretName"]]
    assert "fernet-key" in secrets[values["fernetKeySecretName"]]
    secret_env = {item["envName"] for item in values["secret"]}
    assert {"MLFLOW_TRACKING_PASSWORD", f"AIRFLOW_CONN_{env['MLLOOP_STORAGE_CONN_ID'].upper()}"} <= secret_env
    assert not secret_env & set(env), "a secret is also set as plain env"


def test_training_pod_from_the_helm_values_matches_the_pod_template(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client import ApiClient

    from mlloop.config import get_settings
    from mlloop.orchestration.kubernetes import K8S_ENV_PREFIX, training_pod_operator

    for name in list(os.environ):
        if name.startswith("MLLOOP_"):
            monkeypatch.delenv(name)
    for name, value in _helm_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    template = yaml.safe_load(POD_TEMPLATE.read_text())
    notes = template["metadata"]["annotations"]
    try:
        op = training_pod_operator(
            task_id="train_kubernetes",
            snapshot=notes["mlloop/snapshot"],
            model=notes["mlloop/model"],
            seed=notes["mlloop/seed"],
            dag_run_id=notes["mlloop/dag-run-id"],
        )
        rendered = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(None, dry_run=True))
    finally:
        get_settings.cache_clear()
    assert _k8s_resource_errors(rendered) == []
    base = next(c for c in rendered["spec"]["containers"] if c["name"] == "base")
    (expected,) = template["spec"]["containers"]
    for key in (
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "envFrom",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert base[key] == expected[key], key
    for key in ("nodeSelector", "tolerations", "serviceAccountName", "restartPolicy", "volumes"):
        assert rendered["spec"][key] == template["spec"][key], key
    assert (
        rendered["metadata"]["namespace"]
        == template["metadata"]["namespace"]
        == _helm_env()[f"{K8S_ENV_PREFIX}NAMESPACE"]
    )
    assert rendered["metadata"]["annotations"] == notes
    assert template["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    trainer_secret = yaml.safe_load((K8S_DIR / "trainer-secret.example.yaml").read_text())["metadata"]["name"]
    assert expected["envFrom"] == [{"secretRef": {"name": trainer_secret}}]


def test_rbac_binds_the_helm_releases_worker_service_account() -> None:
    docs = list(yaml.safe_load_all((K8S_DIR / "namespace-rbac.yaml").read_text()))
    binding = next(doc for doc in docs if doc["kind"] == "RoleBinding")
    assert {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"} in binding["subjects"]
    assert (
        "helm upgrade --install airflow " in HELM_VALUES.read_text()
        and "-n airflow" in HELM_VALUES.read_text()
    )
    account = next(doc for doc in docs if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    assert _helm_env()["MLLOOP_K8S_SERVICE_ACCOUNT"] == account
