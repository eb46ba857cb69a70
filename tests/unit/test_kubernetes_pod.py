"""The kubernetes training backend's contract: the pod spec, its settings, the trainer image and manifests.

No cluster exists here, so the operator is built in a DAG, its templates rendered with a run's context,
and the pod it would create is checked (``build_pod_request_obj``), never started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlloop.orchestration.kubernetes import (
    K8S_ENV_PREFIX,
    XCOM_RESULT_PATH,
    KubernetesSettingsError,
    KubernetesTrainingSettings,
    training_pod_operator,
)
from mlloop.training.pipeline import train_cli_args

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "trainer" / "Dockerfile"
K8S_DIR = REPO_ROOT / "docker" / "kubernetes"

DIGEST = "3f" * 32
RUN_ID = "manual__2026-11-20T06:00:00+00:00"
CANARY = "canary-Zq8-do-not-leak"
IMAGE = "registry.example.com/mlloop-trainer:0123abc"
NODE_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}


@dataclass
class RunningTaskInstance:
    """The part of a running task instance that templates and pod labels read (no Airflow run exists)."""

    dag_id: str
    task_id: str
    upstream: set[str]
    xcoms: dict[str, Any]
    map_index: int = -1
    try_number: int = 1

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        """Return an upstream task's XCom, refusing tasks that are not upstream (as a wiring check)."""
        assert task_ids in self.upstream, f"{task_ids!r} is not upstream of {self.task_id}"
        return self.xcoms[task_ids]


@pytest.fixture
def k8s_env(monkeypatch: pytest.MonkeyPatch, mlloop_env):
    """Production-like env: s3 data root, GPU pool settings, and canary credentials in worker env vars."""
    for name in list(os.environ):
        if name.startswith(K8S_ENV_PREFIX):
            monkeypatch.delenv(name)
    mlloop_env(
        data_root="s3://mlloop-bucket/prod",
        use_case="card_fraud",
        model_name="fraud-detector",
        mlflow_tracking_uri=f"https://trainer:{CANARY}@mlflow.example.internal",
        pii_key=CANARY,
    )
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, CANARY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"AKIA{CANARY}")
    monkeypatch.setenv(f"{K8S_ENV_PREFIX}IMAGE", IMAGE)
    monkeypatch.setenv(f"{K8S_ENV_PREFIX}NODE_SELECTOR", json.dumps(NODE_SELECTOR))
    return monkeypatch


def _dag_with_pod(**operator_kwargs: Any):
    """Return (dag, operator): a TaskFlow ``snapshot`` task upstream of the training pod (train DAG)."""
    import pendulum
    from airflow.sdk import DAG, Param, task

    with DAG(
        dag_id="train_model_k8s_contract",
        schedule=None,
        start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
        params={"model": Param("xgboost", type="string"), "seed": Param(42, type="integer")},
    ) as dag:

        @task
        def snapshot() -> dict[str, Any]:
            """Stand in for the snapshot step (its XCom is supplied by the test context)."""
            return {"digest": DIGEST}

        pod = training_pod_operator(
            task_id="train_kubernetes",
            snapshot="{{ ti.xcom_pull(task_ids='snapshot')['digest'] }}",
            model="{{ params.model }}",
            seed="{{ params.seed }}",
            dag_run_id="{{ run_id }}",
            **operator_kwargs,
        )
        snapshot() >> pod
    return dag, pod


def _rendered_pod(seed: int = 7, **operator_kwargs: Any):
    """Render the operator's templates for one run and return (operator, the V1Pod it would create)."""
    dag, op = _dag_with_pod(**operator_kwargs)
    ti = RunningTaskInstance(
        dag_id=dag.dag_id,
        task_id=op.task_id,
        upstream=set(op.upstream_task_ids),
        xcoms={"snapshot": {"digest": DIGEST, "rows": 1000}},
    )
    context = {
        "dag": dag,
        "task": op,
        "ti": ti,
        "task_instance": ti,
        "run_id": RUN_ID,
        "params": {"model": "xgboost", "seed": seed},
    }
    op.render_template_fields(context)
    # dry_run skips only the in-cluster probe, which needs a kube config; everything else is built.
    return op, op.build_pod_request_obj(context, dry_run=True)


def _without(args: list[str], *options: str) -> list[str]:
    """Return CLI args without the given options and their values."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            out.append(arg)
    return out


def test_pod_runs_the_training_cli_with_the_local_backends_arguments(k8s_env) -> None:
    op, pod = _rendered_pod(seed=7)
    base = pod.spec.containers[0]
    assert base.name == "base"
    assert base.image == IMAGE
    assert base.command == ["python", "-m", "mlloop.training.train"]
    expected = train_cli_args(
        DIGEST, model="xgboost", seed=7, dag_run_id=RUN_ID, backend="kubernetes", result_path=XCOM_RESULT_PATH
    )
    assert base.args == expected
    local = train_cli_args(
        DIGEST, model="xgboost", seed=7, dag_run_id=RUN_ID, backend="local", result_path="/tmp/r/return.json"
    )
    assert _without(base.args, "--backend", "--result-path") == _without(local, "--backend", "--result-path")
    assert "arguments" in op.template_fields


def test_pod_asks_for_a_gpu_on_the_gpu_pool(k8s_env) -> None:
    from kubernetes.client import models as k8s

    _, pod = _rendered_pod()
    resources = pod.spec.containers[0].resources
    assert resources.limits["nvidia.com/gpu"] == "1"
    assert resources.requests == {"cpu": "2", "memory": "8Gi"}
    assert resources.limits["memory"] == "16Gi"
    assert pod.spec.node_selector == NODE_SELECTOR
    assert pod.spec.tolerations == [
        k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    ]
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.containers[0].security_context.run_as_non_root is True


def test_gpu_count_zero_requests_no_gpu(k8s_env) -> None:
    k8s_env.setenv(f"{K8S_ENV_PREFIX}GPU_COUNT", "0")
    _, pod = _rendered_pod()
    assert "nvidia.com/gpu" not in pod.spec.containers[0].resources.limits


def test_credentials_come_only_from_the_secret(k8s_env) -> None:
    from airflow.serialization.serialized_objects import DagSerialization
    from kubernetes.client import ApiClient

    op, pod = _rendered_pod()
    base = pod.spec.containers[0]
    assert [source.secret_ref.name for source in base.env_from] == ["mlloop-trainer"]
    env = {var.name: var.value for var in base.env}
    assert env == {
        "MLLOOP_DATA_ROOT": "s3://mlloop-bucket/prod",
        "MLLOOP_USE_CASE": "card_fraud",
        "MLLOOP_MODEL_NAME": "fraud-detector",
    }
    document = json.dumps(ApiClient().sanitize_for_serialization(pod))
    assert CANARY not in document, "a credential from the worker's environment reached the pod spec"
    assert "AWS_SECRET_ACCESS_KEY" not in document and "MLLOOP_PII_KEY" not in document
    # The serialized DAG (metadata DB, UI) carries the operator's arguments and env too.
    assert CANARY not in json.dumps(DagSerialization.to_dict(op.dag), default=str)


def test_result_comes_back_through_the_xcom_sidecar(k8s_env) -> None:
    op, pod = _rendered_pod()
    assert op.do_xcom_push is True
    assert op.get_logs is True
    assert op.on_finish_action.value == "delete_pod"
    assert op.reattach_on_restart is True
    names = [container.name for container in pod.spec.containers]
    assert names == ["base", "airflow-xcom-sidecar"]
    mounts = [mount.mount_path for mount in pod.spec.containers[0].volume_mounts]
    assert str(Path(XCOM_RESULT_PATH).parent) in mounts


def test_pod_is_named_and_labelled_after_the_dag_run(k8s_env) -> None:
    _, pod = _rendered_pod()
    assert pod.metadata.namespace == "mlloop"
    assert re.fullmatch(r"mlloop-train-kubernetes-[a-z0-9]+", pod.metadata.name), pod.metadata.name
    labels = pod.metadata.labels
    assert labels["app.kubernetes.io/name"] == "mlloop-trainer"
    assert labels["dag_id"] == "train_model_k8s_contract"
    assert labels["task_id"] == "train_kubernetes"
    assert labels["run_id"]  # shortened to label rules; the full id is an annotation
    assert pod.metadata.annotations["mlloop/dag-run-id"] == RUN_ID
    assert pod.metadata.annotations["mlloop/snapshot"] == DIGEST


def test_caller_cannot_replace_the_cli_or_add_plain_env(k8s_env) -> None:
    with pytest.raises(TypeError, match="env_vars"):
        _dag_with_pod(env_vars={"AWS_SECRET_ACCESS_KEY": CANARY})
    _, pod = _rendered_pod(retries=2, namespace="ml-team")
    assert pod.metadata.namespace == "ml-team"


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        ("TOLERATIONS", '{"key": "nvidia.com/gpu", "operator": "Exists"}', "JSON list of objects"),
        ("TOLERATIONS", '["nvidia.com/gpu"]', "JSON list of objects"),
        ("TOLERATIONS", "nvidia.com/gpu:NoSchedule", "JSON list of objects"),
        ("TOLERATIONS", '[{"key": "gpu", "operator": "Maybe"}]', "JSON list of objects"),
        ("GPU_COUNT", "-1", "0 (no GPU) or a positive whole number"),
        ("NODE_SELECTOR", '["gpu"]', "JSON object of label strings"),
        ("CPU_REQUEST", "2 cores", "Kubernetes quantity"),
        ("MEMORY_REQUEST", "32Gi", "raise the limit or lower the request"),
    ],
)
def test_bad_settings_name_the_variable_and_the_fix(k8s_env, variable: str, value: str, fix: str) -> None:
    k8s_env.setenv(f"{K8S_ENV_PREFIX}{variable}", value)
    with pytest.raises(KubernetesSettingsError) as raised:
        KubernetesTrainingSettings()
    assert f"{K8S_ENV_PREFIX}{variable}" in str(raised.value)
    assert fix in str(raised.value)
    with pytest.raises(KubernetesSettingsError):  # the DAG's call fails the same way at parse time
        _dag_with_pod()


def test_misspelt_setting_is_refused_with_the_known_names(k8s_env) -> None:
    k8s_env.setenv(f"{K8S_ENV_PREFIX}GPUS", "2")
    with pytest.raises(KubernetesSettingsError, match=r"MLLOOP_K8S_GPUS\b.*MLLOOP_K8S_GPU_COUNT"):
        KubernetesTrainingSettings()


def test_module_imports_no_kubernetes_code() -> None:
    """DAG files import this module at parse time; the provider loads only when an operator is built."""
    code = (
        "import sys, mlloop.orchestration.kubernetes; "
        "print(sorted(m for m in sys.modules if m.startswith(('kubernetes', 'airflow.providers.cncf'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


# --- trainer image and Kubernetes material (no Docker engine or cluster here: checked as text) ---


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.startswith("#"):
            continue  # a comment between continuation lines
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    assert not current, f"{path} ends inside a continued instruction"
    return instructions


def _build_arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(arg.split("=", 1) for keyword, arg in instructions if keyword == "ARG" and "=" in arg)


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern: ``*`` stays within a path segment, ``**`` spans segments."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Decide like .dockerignore: a pattern also covers what is below a match; the last match wins."""
    prefixes = [str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts))]
    ignored = False
    for pattern in patterns:
        regex = _dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_trainer_image_is_cuda_python311_pinned_and_non_root() -> None:
    instructions = _dockerfile_instructions(DOCKERFILE)
    defaults = _build_arg_defaults(instructions)
    base = next(arg for keyword, arg in instructions if keyword == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
    assert re.match(r"nvidia/cuda:\d+\.\d+\.\d+-.*runtime-ubuntu", base), base
    runs = " ".join(arg for keyword, arg in instructions if keyword == "RUN")
    assert "python3.11" in runs
    assert "pip install -r requirements.txt" in runs
    assert "pip install --no-deps -e ." in runs
    requirements = [
        line.strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[\w.+]+", line) for line in requirements), requirements
    torch_pin = next(line for line in requirements if line.startswith("torch=="))
    assert "download.pytorch.org/whl/cu" in defaults["TORCH_INDEX_URL"], "torch must come as a CUDA build"
    assert "grep -E '^torch==' requirements.txt" in runs, (
        f"{torch_pin} must be installed from TORCH_INDEX_URL"
    )
    users = [arg for keyword, arg in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert users[-1].split(":")[0].isdigit(), "numeric USER, so the pod's runAsNonRoot can verify it"
    entrypoints = [arg for keyword, arg in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints in ([], ["[]"]), "the operator's cmds must run as given"


def test_trainer_image_copies_what_exists_and_keeps_the_repo_layout() -> None:
    instructions = _dockerfile_instructions(DOCKERFILE)
    ignore = [
        line.strip()
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    destinations = {}
    for keyword, arg in instructions:
        if keyword != "COPY" or arg.startswith("--from"):
            continue
        *sources, destination = shlex.split(arg)
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository (build context)"
            assert not _ignored(source.rstrip("/"), ignore), (
                f"COPY {source}: excluded by Dockerfile.dockerignore"
            )
            destinations[source.rstrip("/")] = destination
    # mlloop finds expectations/ next to include/ (REPO_ROOT), so both land under the same WORKDIR.
    assert destinations["include"] == "include/" and destinations["expectations"] == "expectations/"
    assert {"requirements.txt", "pyproject.toml"} <= destinations.keys()
    for private in (".env", ".venv", "data", ".airflow", ".mlflow", ".git"):
        assert _ignored(private, ignore), f"{private} would be sent to the Docker builder"


def test_kubernetes_manifests_parse_and_match_the_settings_defaults() -> None:
    documents = {
        path.name: list(yaml.safe_load_all(path.read_text())) for path in sorted(K8S_DIR.glob("*.yaml"))
    }
    kinds = {name: [doc["kind"] for doc in docs] for name, docs in documents.items()}
    assert kinds == {
        "gpu-smoke-pod.yaml": ["Pod"],
        "namespace-rbac.yaml": ["Namespace", "ServiceAccount", "Role", "RoleBinding"],
        "trainer-secret.example.yaml": ["Secret"],
    }
    defaults = KubernetesTrainingSettings.model_fields
    (secret,) = documents["trainer-secret.example.yaml"]
    assert secret["metadata"]["name"] == defaults["secret_name"].default
    assert {"MLLOOP_MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret[
        "stringData"
    ].keys()
    for key in ("MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert re.fullmatch(r"<[a-z-]+>", secret["stringData"][key]), f"{key} must be a placeholder"
    (pod,) = documents["gpu-smoke-pod.yaml"]
    default_tolerations = [
        t.model_dump(by_alias=True, exclude_none=True) for t in defaults["tolerations"].default_factory()
    ]
    assert pod["spec"]["tolerations"] == default_tolerations
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": defaults["secret_name"].default}}]
    role = next(doc for doc in documents["namespace-rbac.yaml"] if doc["kind"] == "Role")
    granted = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert {"pods", "pods/log", "pods/exec"} <= granted  # exec: the operator reads the XCom sidecar
