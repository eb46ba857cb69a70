"""Drive DAG runs through the Airflow REST API: trigger ingestion days, wait for runs, say what a run did.

Shared by the demo (``ops/demo.py``) and the closed-loop simulation (``ops/simulate.py``); the DAG ids
come from ``orchestration/names.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mlloop.ops import services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.orchestration.names import INGEST_DAG, TRAIN_DAG

log = logging.getLogger(__name__)
TERMINAL = {"success", "failed"}


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
) -> list[DemoRun]:
    """Trigger one ingestion run per (day, scenario); ``start_training`` and ``rows`` are ingest Params."""
    runs = []
    for day, scenario in days:
        run = DemoRun(day, scenario, f"demo__{day}__{scenario}__{stamp}")
        conf: dict[str, Any] = {"day": day, "scenario": scenario, "start_training": start_training}
        if rows is not None:
            conf["rows"] = rows
        api.trigger(INGEST_DAG, run.run_id, conf)
        log.info("Triggered %s for %s (scenario %s)", INGEST_DAG, day, scenario)
        runs.append(run)
    return runs


def wait_for_runs(api: AirflowAPI, runs: list[DemoRun], timeout_s: float = 900.0) -> None:
    """Poll the runs until all are finished, logging progress."""
    deadline = time.monotonic() + timeout_s
    while True:
        for run in runs:
            if run.state not in TERMINAL:
                run.state = api.run_state(INGEST_DAG, run.run_id)
        done = sum(r.state in TERMINAL for r in runs)
        log.info("Runs finished: %d/%d (%s)", done, len(runs), ", ".join(f"{r.day}:{r.state}" for r in runs))
        if done == len(runs):
            return
        stopped = [name for name, pid in services.status().items() if pid is None]
        if stopped:
            raise RuntimeError(
                f"{', '.join(stopped)} stopped while runs were pending; see "
                f"{services.AIRFLOW_HOME / 'logs'}/<service>.out, then `make up` restarts it and "
                "`make demo` retries (finished days are not redone)."
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(runs) - done} runs still not finished after {timeout_s:.0f}s; "
                f"open {services.AIRFLOW_URL}/dags/{INGEST_DAG} to see why"
            )
        time.sleep(5)


def wait_for_training(
    api: AirflowAPI, since: str, timeout_s: float = 1800.0, allow_none: bool = False
) -> list[dict[str, Any]]:
    """Wait until the Asset-triggered train_model runs since ``since`` are done and none is queued.

    With ``allow_none`` an empty result is accepted once nothing has been queued for a few polls.
    """
    deadline = time.monotonic() + timeout_s
    idle_polls = 0
    while True:
        runs = api.runs_since(TRAIN_DAG, since)
        queued = api.queued_asset_events(TRAIN_DAG)
        done = [r for r in runs if r["state"] in TERMINAL]
        log.info(
            "%s: %d/%d runs finished, %d asset event(s) waiting (%s)",
            TRAIN_DAG,
            len(done),
            len(runs),
            queued,
            ", ".join(f"{r['dag_run_id'][-25:]}:{r['state']}" for r in runs) or "none yet",
        )
        if runs and len(done) == len(runs) and not queued:
            return runs
        idle_polls = idle_polls + 1 if not runs and not queued else 0
        if allow_none and idle_polls >= 3:
            return []
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{TRAIN_DAG} still busy after {timeout_s:.0f}s; open {services.AIRFLOW_URL}/dags/{TRAIN_DAG}"
            )
        time.sleep(10)


def wait_for_unfinished_runs(api: AirflowAPI, dag_id: str, timeout_s: float = 900.0) -> None:
    """Wait until no run of ``dag_id`` (its scheduled ones included) is queued or running."""
    for run in api.unfinished_runs(dag_id):
        log.info("Waiting for %s run %s to finish first", dag_id, run["dag_run_id"])
        wait_for_run(api, dag_id, run["dag_run_id"], timeout_s)


def wait_for_run(api: AirflowAPI, dag_id: str, run_id: str, timeout_s: float = 900.0) -> str:
    """Poll one run until it finishes; return its state."""
    deadline = time.monotonic() + timeout_s
    while (state := api.run_state(dag_id, run_id)) not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout_s:.0f}s")
        time.sleep(3)
    return state


def training_outcome(api: AirflowAPI, run: dict[str, Any]) -> str:
    """Return one line on what a train_model run did: skipped, promoted, rejected or failed (and where)."""
    states = api.task_states(TRAIN_DAG, run["dag_run_id"])
    if states.get("snapshot") == "skipped":
        reason = api.task_result(TRAIN_DAG, run["dag_run_id"], "snapshot", key="skip_reason") or "see its log"
        return f"skipped: {str(reason)[:200]}"
    for task_id, verb in (("promote", "promoted"), ("reject", "rejected")):
        if states.get(task_id) == "success":
            record = api.task_result(TRAIN_DAG, run["dag_run_id"], task_id) or {}
            return f"{verb} v{record.get('to_version', '?')}: {str(record.get('reason', ''))[:90]}"
    failed = sorted(t for t, state in states.items() if state in {"failed", "upstream_failed"})
    return f"{run['state']}: tasks {', '.join(failed) or states}"
