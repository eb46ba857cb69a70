"""Drive DAG runs through the Airflow REST API: trigger ingestion days, wait for runs, say what a run did.

Shared by the demo (``ops/demo.py``) and the closed-loop simulation (``ops/simulate.py``); the DAG ids
come from ``orchestration/names.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlloop.config import get_settings
from mlloop.ops import services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.ops.polling import poll_until
from mlloop.orchestration.names import DagNames, dag_names

log = logging.getLogger(__name__)


TERMINAL = {"success", "failed"}


def driven_names() -> DagNames:
    """Return the DAG ids of the use case the ops commands drive (``MLLOOP_USE_CASE``)."""
    return dag_names(get_settings().use_case)


@dataclass
class DemoRun:
    """One triggered ingestion run and what came of it."""

    day: str
    scenario: str
    run_id: str
    state: str = "queued"

    @property
    def expected(self) -> str:
        """Return the state this run must end in (faults must be stopped by the contract)."""
        return "failed" if self.scenario.startswith("fault_") else "success"


def trigger_days(
    api: AirflowAPI,
    days: tuple[tuple[str, str], ...],
    stamp: str,
    *,
    start_training: bool = True,
    rows: int | None = None,
    names: DagNames | None = None,
) -> list[DemoRun]:
    """Trigger one ingestion run per (day, scenario); ``start_training`` and ``rows`` are ingest Params.

    ``names``: the use case's DAGs (default: the driven use case's). A files source's form has no
    generator Params: its days go with scenario ``none`` and no ``rows``.
    """
    ingest = (names or driven_names()).ingest
    runs = []
    for day, scenario in days:
        run = DemoRun(day, scenario, f"demo__{day}__{scenario}__{stamp}")
        conf: dict[str, Any] = {"day": day, "start_training": start_training}
        if scenario != "none":
            conf["scenario"] = scenario
        if rows is not None:
            conf["rows"] = rows
        api.trigger(ingest, run.run_id, conf)
        log.info("Triggered %s for %s (scenario %s)", ingest, day, scenario)
        runs.append(run)
    return runs


def wait_for_runs(
    api: AirflowAPI, runs: list[DemoRun], timeout_s: float = 900.0, names: DagNames | None = None
) -> None:
    """Poll the ingestion runs (of ``names``, default the driven use case's) until all are finished."""
    ingest = (names or driven_names()).ingest

    def finished() -> bool | None:
        for run in runs:
            if run.state not in TERMINAL:
                run.state = api.run_state(ingest, run.run_id)
        done = sum(r.state in TERMINAL for r in runs)
        log.info("Runs finished: %d/%d (%s)", done, len(runs), ", ".join(f"{r.day}:{r.state}" for r in runs))
        if done == len(runs):
            return True
        stopped = [name for name, pid in services.status().items() if pid is None]
        if stopped:
            tails = "".join(
                f"\n--- last lines of {services.log_path(name)}\n{services.log_tail(name)}"
                for name in stopped
            )
            raise RuntimeError(
                f"{', '.join(stopped)} stopped while runs were pending; `make up` restarts it and "
                f"`make demo` retries (finished days are not redone).{tails}"
            )
        return None

    poll_until(
        finished,
        every_s=5,
        timeout_s=timeout_s,
        timed_out=lambda _: TimeoutError(
            f"{sum(r.state not in TERMINAL for r in runs)} runs still not finished after {timeout_s:.0f}s; "
            f"open {services.AIRFLOW_URL}/dags/{ingest} to see why"
        ),
    )


def wait_for_training(
    api: AirflowAPI,
    since: str,
    timeout_s: float = 1800.0,
    allow_none: bool = False,
    names: DagNames | None = None,
) -> list[dict[str, Any]]:
    """Wait until the training runs (of ``names``, default the driven use case's) since ``since`` are done.

    With ``allow_none`` an empty result is accepted once nothing has been queued for a few polls.
    """
    train = (names or driven_names()).train
    idle_polls = 0

    def settled() -> list[dict[str, Any]] | None:
        nonlocal idle_polls
        runs = api.runs_since(train, since)
        queued = api.queued_asset_events(train)
        done = [r for r in runs if r["state"] in TERMINAL]
        log.info(
            "%s: %d/%d runs finished, %d asset event(s) waiting (%s)",
            train,
            len(done),
            len(runs),
            queued,
            ", ".join(f"{r['dag_run_id'][-25:]}:{r['state']}" for r in runs) or "none yet",
        )
        if runs and len(done) == len(runs) and not queued:
            return runs
        idle_polls = idle_polls + 1 if not runs and not queued else 0
        return [] if allow_none and idle_polls >= 3 else None

    return poll_until(
        settled,
        every_s=10,
        timeout_s=timeout_s,
        timed_out=lambda _: TimeoutError(
            f"{train} still busy after {timeout_s:.0f}s; open {services.AIRFLOW_URL}/dags/{train}"
        ),
    )


def wait_for_unfinished_runs(api: AirflowAPI, dag_id: str, timeout_s: float = 900.0) -> None:
    """Wait until no run of ``dag_id`` (its scheduled ones included) is queued or running."""
    for run in api.unfinished_runs(dag_id):
        log.info("Waiting for %s run %s to finish first", dag_id, run["dag_run_id"])
        wait_for_run(api, dag_id, run["dag_run_id"], timeout_s)


def wait_for_run(api: AirflowAPI, dag_id: str, run_id: str, timeout_s: float = 900.0) -> str:
    """Poll one run until it finishes; return its state."""
    return poll_until(
        lambda: state if (state := api.run_state(dag_id, run_id)) in TERMINAL else None,
        every_s=3,
        timeout_s=timeout_s,
        timed_out=lambda _: TimeoutError(f"{dag_id} run {run_id} not finished after {timeout_s:.0f}s"),
    )


def training_outcome(api: AirflowAPI, run: dict[str, Any], names: DagNames | None = None) -> str:
    """Return one line on what a training run did: skipped, promoted, rejected or failed (and where)."""
    train = (names or driven_names()).train
    states = api.task_states(train, run["dag_run_id"])
    if states.get("snapshot") == "skipped":
        reason = api.task_result(train, run["dag_run_id"], "snapshot", key="skip_reason") or "see its log"
        return f"skipped: {str(reason)[:200]}"
    for task_id, verb in (("promote", "promoted"), ("reject", "rejected")):
        if states.get(task_id) == "success":
            record = api.task_result(train, run["dag_run_id"], task_id) or {}
            return f"{verb} v{record.get('to_version', '?')}: {str(record.get('reason', ''))[:90]}"
    failed = sorted(t for t, state in states.items() if state in {"failed", "upstream_failed"})
    return f"{run['state']}: tasks {', '.join(failed) or states}"


def champion_summary(model_name: str, use_case: str | None = None) -> list[str]:
    """Return the champion's lines: version, what it was trained on, holdout metrics and MLflow links."""
    # MLflow loads only when a summary is made: `mlloop demo --help` imports this module.
    from mlloop.registry import champion_version
    from mlloop.registry.runner import registry_client_and_model
    from mlloop.registry.tags import GATE_SUMMARY_TAG
    from mlloop.registry.ui import model_version_url, run_url
    from mlloop.usecase import load_use_case

    use_case = use_case or get_settings().use_case
    client, _ = registry_client_and_model(use_case)
    champion = champion_version(client, model_name)
    if champion is None:
        return [f"No champion for {model_name}: see the {dag_names(use_case).train} runs above."]
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics

    def holdout(name: str) -> float:
        return metrics.get(f"holdout_{name}", float("nan"))

    holdout_line = (
        f"  holdout RMSE {holdout('rmse'):.2f} (95% {holdout('rmse_lower'):.2f}.."
        f"{holdout('rmse_upper'):.2f}), MAE {holdout('mae'):.2f}; predicting the training mean: RMSE "
        f"{holdout('no_skill_rmse'):.2f}"
        if load_use_case(use_case).task == "regression"
        else f"  holdout PR-AUC {holdout('pr_auc'):.3f}, ROC-AUC {holdout('roc_auc'):.3f}, "
        f"recall at the gate's precision {holdout('recall_at_precision'):.3f}"
    )
    return [
        f"Champion: {model_name} v{champion.version} ({champion.description})",
        holdout_line,
        f"  gate: {champion.tags.get(GATE_SUMMARY_TAG, 'n/a')[:200]}",
        f"  MLflow run (metrics, plots, gate report): {run_url(champion.run_id)}",
        f"  Model version (aliases, tags):            {model_version_url(model_name, champion.version)}",
    ]
