"""Decommission a use case: pause its DAGs, remove its aliases, archive its versions, record the decision.

``plan_retirement`` reads what is left to do (DAGs not yet paused, aliases still set, versions not yet
archived, the retirement not yet tagged or audited); ``retire`` reports that plan (a dry run, the default)
or carries it out in an order that keeps every crash recoverable by running it again:

1. pause the use case's DAGs through the Airflow REST API (all but ``retire_<use case>``, which may be the
   run doing this), so no schedule, Asset event or monitor promotes a new champion meanwhile;
2. tag the registered model ``mlloop.retired`` (when, by whom, why; a first retirement's tags are kept),
   so the scoring service answers 410 Gone, not "no champion", once the alias goes;
3. remove every alias (``champion``, ``previous``, any other);
4. archive each version through ``mlloop.registry.archive`` (model artifacts deleted; metadata, metrics,
   runs, reports and audit kept per the retention policy); a version under legal hold keeps its artifacts;
5. append one ``retire`` record to the audit trail alias moves use.

Every step skips what is already done, so a second apply changes nothing and records nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from mlloop import clock
from mlloop.lifecycle.versions import delete_model_artifacts
from mlloop.ops.airflow_api import AirflowAPI, AirflowAPIError
from mlloop.orchestration.names import dag_names
from mlloop.registry.champion import AuditRecord, append_audit, archive, audit_log
from mlloop.registry.tags import (
    ARCHIVED,
    LEGAL_HOLD_TAG,
    LIFECYCLE_TAG,
    RETIRED_BY_TAG,
    RETIRED_REASON_TAG,
    RETIRED_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import RegisteredModel

    from mlloop.config import Settings

log = logging.getLogger("mlloop.lifecycle")

RETIRE_ACTION = "retire"
DEFAULT_REASON = "no reason given"


class RetirementError(RuntimeError):
    """Raised when a use case cannot be retired; the message says why and what to do."""


class AirflowDags(Protocol):
    """What retiring needs of the Airflow REST API (``AirflowAPI``; a recording fake in unit tests)."""

    def get(self, path: str) -> Any:
        """GET ``/api/v2{path}``."""

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG."""


@dataclass(frozen=True)
class Retirement:
    """A retirement as the registered model's tags record it."""

    at: str
    actor: str
    reason: str

    def gone_message(self, use_case: str, model: str) -> str:
        """Return what a caller of the retired use case is told (the scoring service's 410 detail)."""
        return (
            f"use case {use_case!r} was retired on {self.at} by {self.actor} ({self.reason}); its model "
            f"{model!r} is no longer served. Call another use case of this service (GET /ready lists "
            "them), or ask the platform team if you still need these predictions."
        )


def read_retirement(client: MlflowClient, model: str) -> Retirement | None:
    """Return the retirement recorded on registered model ``model``; None if none or unregistered."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model).tags or {}
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if RETIRED_TAG not in tags:
        return None
    return Retirement(
        tags[RETIRED_TAG], tags.get(RETIRED_BY_TAG, "unknown"), tags.get(RETIRED_REASON_TAG, DEFAULT_REASON)
    )


@dataclass
class RetirementPlan:
    """What retiring a use case still has to do; empty lists and a recorded retirement mean done."""

    use_case: str
    model: str
    pause: list[str] = field(default_factory=list)  # DAG ids not yet paused
    unregistered_dags: list[str] = field(default_factory=list)  # not in Airflow: nothing to pause
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version
    archive: list[str] = field(default_factory=list)  # versions not yet archived
    legal_holds: list[str] = field(default_factory=list)  # versions kept whole (mlloop.legal_hold=true)
    retirement: Retirement | None = None  # already tagged on the model
    audited: bool = False  # a retire record is in the audit trail

    @property
    def done(self) -> bool:
        """Return whether nothing is left to do."""
        return (
            not (self.pause or self.aliases or self.archive) and self.retirement is not None and self.audited
        )

    def steps(self) -> list[str]:
        """Return what is left to do, one line per change."""
        lines = [f"pause DAG {dag_id}" for dag_id in self.pause]
        if self.retirement is None:
            lines.append(f"tag {self.model} {RETIRED_TAG} (the scoring service then answers 410 Gone)")
        lines += [f"remove alias {alias} (v{version})" for alias, version in sorted(self.aliases.items())]
        lines += [f"archive v{version} (delete its model artifacts)" for version in self.archive]
        if not self.audited:
            lines.append(f"record the retirement in the audit trail of {self.model}")
        return lines


def registered_model(client: MlflowClient, use_case: str, model: str) -> RegisteredModel:
    """Return ``use_case``'s registered model ``model``.

    Raises:
        RetirementError: when ``model`` is not registered (nothing was ever trained for the use case).
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(model)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RetirementError(
            f"use case {use_case!r} has no registered model {model!r} in the registry at "
            f"{client.tracking_uri}: nothing was trained for it, so there is nothing to retire. Check the "
            "use case's model_name (and MLLOOP_MODEL_NAME) and MLLOOP_MLFLOW_TRACKING_URI."
        ) from exc


def plan_retirement(client: MlflowClient, airflow: AirflowDags, use_case: str, model: str) -> RetirementPlan:
    """Return what retiring ``use_case`` (registered model ``model``) still has to do.

    Raises:
        RetirementError: when ``model`` is not registered (nothing was ever trained for the use case).
        AirflowAPIError: when the Airflow API cannot say whether a DAG is paused.
    """
    registered = registered_model(client, use_case, model)
    plan = RetirementPlan(use_case, model, retirement=read_retirement(client, model))
    names = dag_names(use_case)
    # The retire run must not pause itself, and erasure requests must still be served after retirement.
    for dag_id in (d for d in names.dags if d not in {names.retire, names.erase}):
        try:
            dag = airflow.get(f"/dags/{dag_id}")
        except AirflowAPIError as exc:
            if exc.status != 404:
                raise
            plan.unregistered_dags.append(dag_id)
            continue
        if not dag.get("is_paused"):
            plan.pause.append(dag_id)
    plan.aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    for version in sorted(client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version)):
        tags = version.tags or {}
        if tags.get(LEGAL_HOLD_TAG) == "true":
            plan.legal_holds.append(str(version.version))
        elif tags.get(LIFECYCLE_TAG) != ARCHIVED:  # an unfinished "archiving" one is archived again
            plan.archive.append(str(version.version))
    plan.audited = any(record.action == RETIRE_ACTION for record in audit_log(client, model))
    return plan


def airflow_api(settings: Settings) -> AirflowAPI:
    """Return the Airflow REST API client of ``settings`` (``MLLOOP_AIRFLOW_API_URL`` and its login).

    Raises:
        RetirementError: when ``MLLOOP_AIRFLOW_PASSWORD`` is unset.
    """
    if settings.airflow_password is None:
        raise RetirementError(
            "MLLOOP_AIRFLOW_PASSWORD is unset, so the use case's DAGs cannot be paused through the Airflow "
            f"API at {settings.airflow_api_url} (user {settings.airflow_api_user}). Set it (the local "
            "stack's is in .env), and MLLOOP_AIRFLOW_API_URL / MLLOOP_AIRFLOW_API_USER for another "
            "deployment."
        )
    return AirflowAPI(
        settings.airflow_api_url, settings.airflow_api_user, settings.airflow_password.get_secret_value()
    )


def retire(
    use_case: str,
    actor: str,
    reason: str = DEFAULT_REASON,
    apply: bool = False,
    *,
    client: MlflowClient | None = None,
    airflow: AirflowDags | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Retire ``use_case``: report what it would do (``apply=False``, the default) or do it; idempotent.

    ``client`` and ``airflow`` default to the configured registry and Airflow API; ``now`` (the
    retirement's time) to the current time. Returns the plan's steps, what was done and the retirement.

    Raises:
        FileNotFoundError: when ``use_case`` is not declared (the message lists those that are).
        RetirementError: when its model is not registered, or the Airflow API has no password.
    """
    from mlloop.config import get_settings
    from mlloop.registry.runner import registered_model_name, use_configured_mlflow
    from mlloop.usecase import load_use_case

    declaration = load_use_case(use_case)
    settings = get_settings()
    model = registered_model_name(declaration, settings)
    if client is None:
        from mlflow import MlflowClient

        uri = use_configured_mlflow()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registered_model(client, declaration.name, model)  # before Airflow: its error is the more basic one
    airflow = airflow or airflow_api(settings)
    plan = plan_retirement(client, airflow, declaration.name, model)
    summary: dict[str, Any] = {
        "use_case": declaration.name,
        "model": model,
        "dry_run": not apply,
        "steps": plan.steps(),
        "legal_holds": plan.legal_holds,
        "unregistered_dags": plan.unregistered_dags,
        "changed": False,
    }
    if plan.done:
        log.info("%s is already retired (%s): nothing to do", declaration.name, plan.retirement)
        return {**summary, "retirement": asdict(plan.retirement)} if plan.retirement else summary
    for step in plan.steps():
        log.info("%s %s: %s", "Would" if not apply else "Retiring", declaration.name, step)
    if not apply:
        return summary
    retirement = _carry_out(client, airflow, plan, actor, reason, now or clock.now())
    return {**summary, "changed": True, "retirement": asdict(retirement)}


def _carry_out(
    client: MlflowClient, airflow: AirflowDags, plan: RetirementPlan, actor: str, reason: str, now: datetime
) -> Retirement:
    """Do what ``plan`` lists, in the module docstring's order; return the recorded retirement."""
    for dag_id in plan.pause:
        airflow.set_paused(dag_id, True)
        log.info("Paused %s", dag_id)
    retirement = plan.retirement
    if retirement is None:
        retirement = Retirement(now.isoformat(timespec="seconds"), actor, reason)
        for key, value in ((RETIRED_BY_TAG, actor), (RETIRED_REASON_TAG, reason[:4900])):
            client.set_registered_model_tag(plan.model, key, value)
        client.set_registered_model_tag(plan.model, RETIRED_TAG, retirement.at)  # last: it marks it whole
    else:
        log.info("%s was already tagged retired on %s by %s", plan.model, retirement.at, retirement.actor)
    for alias, version in sorted(plan.aliases.items()):
        client.delete_registered_model_alias(plan.model, alias)
        log.info("Removed alias %s of %s (was v%s)", alias, plan.model, version)
    why = f"use case {plan.use_case} retired: {retirement.reason}"
    for version in plan.archive:
        archive(
            client,
            plan.model,
            version,
            actor=actor,
            reason=why,
            delete_artifacts=lambda v: delete_model_artifacts(client, v),
            today=now.date().isoformat(),
        )
    if not plan.audited:
        evidence = (
            f"paused: {', '.join(plan.pause) or 'none'}; aliases removed: "
            f"{', '.join(f'{a}=v{v}' for a, v in sorted(plan.aliases.items())) or 'none'}; archived: "
            f"{', '.join('v' + v for v in plan.archive) or 'none'}; kept under legal hold: "
            f"{', '.join('v' + v for v in plan.legal_holds) or 'none'}"
        )
        champion = plan.aliases.get("champion")
        append_audit(
            client,
            AuditRecord(RETIRE_ACTION, plan.model, None, champion, actor, why, evidence, time.time()),
        )
    log.info("Retired %s (%s), by %s", plan.use_case, retirement.reason, actor)
    return retirement
