"""The ``kubernetes`` training backend: the training CLI in a GPU pod (KubernetesPodOperator).

The pod runs ``python -m mlloop.training.train`` with the same arguments as the local backend
(``mlloop.training.pipeline.train_cli_args``), only ``--backend kubernetes`` and the result path
(``/airflow/xcom/return.json``, read back by the XCom sidecar) differ. Where the pod runs is set by
``MLLOOP_K8S_*`` variables (``KubernetesTrainingSettings``). Credentials reach the pod only through a
Kubernetes Secret (``envFrom``); the few non-secret platform settings it needs are forwarded as plain env.

Light to import: the Kubernetes provider and client are imported inside ``training_pod_operator``.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

K8S_ENV_PREFIX = "MLLOOP_K8S_"
# KubernetesPodOperator's XCom sidecar reads this file once the trainer container exits.
XCOM_RESULT_PATH = "/airflow/xcom/return.json"
TRAINER_COMMAND = ["python", "-m", "mlloop.training.train"]
# Non-secret platform settings (mlloop.config.Settings fields) the pod needs as MLLOOP_* env. The MLflow
# URI is not among them: it may embed credentials, so it comes from the Secret like the AWS keys.
FORWARDED_SETTINGS = ("data_root", "s3_endpoint_url", "use_case", "model_name")
# Operator arguments that make the pod the training CLI's twin; the caller may not replace them.
FIXED_OPERATOR_ARGS = frozenset({"cmds", "arguments", "env_vars", "env_from", "secrets", "do_xcom_push"})

_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_QUANTITY_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
_FIX_HINTS = {
    "gpu_count": "set it to 0 (no GPU) or a positive whole number, e.g. MLLOOP_K8S_GPU_COUNT=1",
    "tolerations": (
        "set it to a JSON list of objects, e.g. MLLOOP_K8S_TOLERATIONS="
        '\'[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]\''
    ),
    "node_selector": (
        "set it to a JSON object of label strings, e.g. MLLOOP_K8S_NODE_SELECTOR="
        '\'{"nvidia.com/gpu.present": "true"}\''
    ),
    "image_pull_policy": "use one of Always, IfNotPresent, Never",
    "startup_timeout_seconds": "set it to a positive number of seconds, e.g. 900",
    "in_cluster": "use true, false, or leave it unset to follow the connection / kube config",
}
_QUANTITY_HINT = "use a Kubernetes quantity, e.g. 2, 500m, 8Gi (and keep each request <= its limit)"


def parse_quantity(value: str) -> Decimal:
    """Return a Kubernetes resource quantity (``500m``, ``8Gi``, ``2``) as a number.

    Raises:
        ValueError: when ``value`` is not a quantity.
    """
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    return Decimal(match["number"]) * _QUANTITY_SCALE[match["suffix"]]


class Toleration(BaseModel):
    """One pod toleration, written as in a pod spec (``tolerationSeconds`` or ``toleration_seconds``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class KubernetesSettingsError(ValueError):
    """Raised when ``MLLOOP_K8S_*`` settings are invalid; the message names each variable and its fix."""


def _explain(exc: ValidationError) -> str:
    """Return one line per invalid setting: the env var, what is wrong, and how to fix it."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"][1:])
        hint = _FIX_HINTS.get(field, _QUANTITY_HINT if field.startswith(("cpu_", "memory_")) else "")
        message = str(error["msg"]).removeprefix("Value error, ") + (f"; {hint}" if hint else "")
        # Errors across fields (a request above its limit) already name their variables.
        lines.append(f"{K8S_ENV_PREFIX}{field.upper()}{where}: {message}" if field else message)
    return "invalid Kubernetes training settings:\n  " + "\n  ".join(lines)


class KubernetesTrainingSettings(BaseSettings):
    """Where and how the training pod runs; every field maps to ``MLLOOP_K8S_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=K8S_ENV_PREFIX, extra="ignore", frozen=True)

    namespace: str = Field(default="mlloop", min_length=1, description="Namespace the training pods run in.")
    image: str = Field(
        default="mlloop-trainer:latest",
        min_length=1,
        description="Trainer image (docker/trainer/Dockerfile); pin a tag or digest in production.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secret: str | None = Field(
        default=None, description="Secret (type docker-registry) for a private registry; None for none."
    )
    service_account: str | None = Field(
        default=None, description="Service account of the pod; None uses the namespace's default."
    )
    gpu_count: int = Field(default=1, ge=0, description="GPUs requested (limit); 0 asks for none.")
    gpu_resource: str = Field(default="nvidia.com/gpu", min_length=1, description="Extended resource name.")
    cpu_request: str = "2"
    cpu_limit: str | None = Field(default=None, description="None: no CPU limit (no throttling).")
    memory_request: str = "8Gi"
    memory_limit: str | None = "16Gi"
    node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="JSON object of node labels, e.g. the GPU node pool's."
    )
    tolerations: Annotated[list[Toleration], NoDecode] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="JSON list of tolerations; the default tolerates the usual GPU node taint.",
    )
    secret_name: str = Field(
        default="mlloop-trainer",
        min_length=1,
        description="Secret whose keys become the pod's env (MLflow URI/credentials, AWS keys).",
    )
    kubernetes_conn_id: str | None = Field(
        default=None, description="Airflow connection (kubernetes type); None: in-cluster or kube config."
    )
    in_cluster: bool | None = Field(default=None, description="None follows the connection / kube config.")
    startup_timeout_seconds: int = Field(
        default=900,
        gt=0,
        description="Time for the pod to be scheduled and start (GPU nodes scale up slowly).",
    )

    def __init__(self, **values: Any) -> None:
        """Read the settings; raise ``KubernetesSettingsError`` naming each bad variable and its fix."""
        unknown = sorted(
            name
            for name in os.environ
            if name.startswith(K8S_ENV_PREFIX)
            and name[len(K8S_ENV_PREFIX) :].lower() not in type(self).model_fields
        )
        if unknown:
            known = ", ".join(K8S_ENV_PREFIX + name.upper() for name in type(self).model_fields)
            raise KubernetesSettingsError(
                f"unknown setting(s) {', '.join(unknown)}; rename to one of {known}"
            )
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise KubernetesSettingsError(_explain(exc)) from exc

    @field_validator("node_selector", "tolerations", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        """Decode JSON text (how env vars carry dicts and lists); other values pass through."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos})") from exc
        return value

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    @classmethod
    def _is_quantity(cls, value: str | None) -> str | None:
        """Check a resource amount is a Kubernetes quantity."""
        if value is not None:
            parse_quantity(value)
        return value

    @model_validator(mode="after")
    def _requests_within_limits(self) -> KubernetesTrainingSettings:
        """Reject a request above its limit (Kubernetes would refuse the pod only at run time)."""
        for resource in ("cpu", "memory"):
            request, limit = getattr(self, f"{resource}_request"), getattr(self, f"{resource}_limit")
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"{K8S_ENV_PREFIX}{resource.upper()}_REQUEST={request} exceeds "
                    f"{K8S_ENV_PREFIX}{resource.upper()}_LIMIT={limit}; raise the limit or lower the request"
                )
        return self

    def resource_requirements(self) -> dict[str, dict[str, str]]:
        """Return the container's requests and limits; a GPU is a limit (Kubernetes sets request = limit)."""
        requests = {"cpu": self.cpu_request, "memory": self.memory_request}
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit}
        if self.gpu_count:
            limits[self.gpu_resource] = str(self.gpu_count)
        return {"requests": requests, "limits": {k: v for k, v in limits.items() if v is not None}}


def forwarded_env() -> dict[str, str]:
    """Return the non-secret ``MLLOOP_*`` settings the pod needs (those set on this worker)."""
    from mlloop.config import ENV_PREFIX, get_settings

    settings = get_settings()
    values = {name: getattr(settings, name) for name in FORWARDED_SETTINGS}
    return {f"{ENV_PREFIX}{name.upper()}": str(value) for name, value in values.items() if value is not None}


def _pod_name(task_id: str) -> str:
    """Return a readable DNS-1123 pod name prefix for ``task_id`` (the operator adds a random suffix)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"mlloop-{task_id}".lower()).strip("-")
    return slug[:40].rstrip("-")


def training_pod_operator(
    *,
    task_id: str,
    snapshot: str,
    model: str,
    seed: str,
    dag_run_id: str,
    settings: KubernetesTrainingSettings | None = None,
    **kwargs: Any,
) -> KubernetesPodOperator:
    """Return a KubernetesPodOperator running the training CLI on a GPU pod; its XCom is the CLI's result.

    ``snapshot``, ``model``, ``seed`` and ``dag_run_id`` may be Jinja templates (``arguments`` and
    ``annotations`` are template fields). ``kwargs`` go to the operator (e.g. ``retries``), except the
    arguments that keep the pod identical to the local backend (``FIXED_OPERATOR_ARGS``).

    Raises:
        KubernetesSettingsError: when ``MLLOOP_K8S_*`` settings are invalid (naming the variable and fix).
        TypeError: when ``kwargs`` tries to replace one of ``FIXED_OPERATOR_ARGS``.
    """
    fixed = sorted(FIXED_OPERATOR_ARGS & kwargs.keys())
    if fixed:
        raise TypeError(
            f"training_pod_operator sets {', '.join(fixed)} itself (same CLI as the local backend; "
            f"credentials only through Secret {K8S_ENV_PREFIX}SECRET_NAME); remove them from the call"
        )
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    from mlloop.training.pipeline import train_cli_args

    settings = settings or KubernetesTrainingSettings()
    resources = settings.resource_requirements()
    options: dict[str, Any] = {
        "namespace": settings.namespace,
        "image": settings.image,
        "image_pull_policy": settings.image_pull_policy,
        "image_pull_secrets": (
            [k8s.V1LocalObjectReference(name=settings.image_pull_secret)]
            if settings.image_pull_secret
            else None
        ),
        "service_account_name": settings.service_account,
        "kubernetes_conn_id": settings.kubernetes_conn_id,
        "in_cluster": settings.in_cluster,
        "startup_timeout_seconds": settings.startup_timeout_seconds,
        "name": _pod_name(task_id),
        "random_name_suffix": True,
        "labels": {
            "app.kubernetes.io/name": "mlloop-trainer",
            "app.kubernetes.io/part-of": "mlloop",
            "app.kubernetes.io/component": "training",
        },
        # The operator adds dag_id / task_id / run_id labels (shortened to label rules); annotations keep
        # the full values for `kubectl describe`.
        "annotations": {
            "mlloop/snapshot": snapshot,
            "mlloop/model": model,
            "mlloop/seed": seed,
            "mlloop/dag-run-id": dag_run_id,
        },
        "container_resources": k8s.V1ResourceRequirements(
            requests=resources["requests"], limits=resources["limits"]
        ),
        "node_selector": dict(settings.node_selector),
        "tolerations": [
            k8s.V1Toleration(**toleration.model_dump(exclude_none=True))
            for toleration in settings.tolerations
        ],
        "container_security_context": k8s.V1SecurityContext(
            run_as_non_root=True, allow_privilege_escalation=False
        ),
        "get_logs": True,
        "log_events_on_failure": True,
        "on_finish_action": "delete_pod",
        # A worker restart reattaches to the running pod instead of starting (and registering) a second
        # training; `durable` is the Airflow 3.3 name of `reattach_on_restart` (deprecated there).
        "durable": True,
    }
    options.update(kwargs)
    return KubernetesPodOperator(
        task_id=task_id,
        cmds=list(TRAINER_COMMAND),
        arguments=train_cli_args(
            snapshot,
            model=model,
            seed=seed,  # a template string until rendered; str(seed) passes it through unchanged
            dag_run_id=dag_run_id,
            backend="kubernetes",
            result_path=XCOM_RESULT_PATH,
        ),
        env_vars=[k8s.V1EnvVar(name=name, value=value) for name, value in forwarded_env().items()],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.secret_name))],
        do_xcom_push=True,
        **options,
    )
