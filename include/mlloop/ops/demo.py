"""The demo's main job: ingest several generated days through the real Airflow scheduler, then summarise.

Run by ``make demo`` after ``make up``. Each day is a manual run of ``ingest_transactions`` with its
Params (day, scenario); one day carries a data-quality fault so the quarantine path shows too.
Re-running is safe: batches are content-addressed, so the same days write the same objects.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass

from mlloop.config import get_settings
from mlloop.ops import services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.storage import Storage, partition_key
from mlloop.usecase import load_use_case

log = logging.getLogger("mlloop.demo")
INGEST_DAG = "ingest_transactions"
TERMINAL = {"success", "failed"}

# (day, scenario): four clean days and two data-quality faults that the contract must stop.
DEMO_DAYS: tuple[tuple[str, str], ...] = (
    ("2026-11-20", "none"),
    ("2026-11-21", "none"),
    ("2026-11-22", "fault_nulls"),
    ("2026-11-23", "none"),
    ("2026-11-24", "fault_renamed_column"),
    ("2026-11-25", "none"),
)


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


def trigger_days(api: AirflowAPI, days: tuple[tuple[str, str], ...], stamp: str) -> list[DemoRun]:
    """Trigger one ingestion run per (day, scenario)."""
    runs = []
    for day, scenario in days:
        run = DemoRun(day, scenario, f"demo__{day}__{scenario}__{stamp}")
        api.trigger(INGEST_DAG, run.run_id, {"day": day, "scenario": scenario})
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


def summarise(runs: list[DemoRun], storage: Storage, dataset: str, password: str) -> str:
    """Return the human summary: what ran, what passed, what was quarantined, where the UIs are."""
    lines = ["", "=== mlloop demo: ingestion summary ===", f"{'day':<11} {'scenario':<22} {'run':<8} outcome"]
    for run in runs:
        validated = storage.list(partition_key("validated", dataset, run.day))
        quarantined = [
            k
            for k in storage.list(partition_key("quarantine", dataset, run.day))
            if k.endswith("reason.json")
        ]
        if run.state == "success":
            rows = sum(len(storage.read_frame(k)) for k in validated)
            outcome = f"validated: {rows} rows in {len(validated)} batch(es)"
        elif quarantined:
            reason = storage.read_json(quarantined[-1])
            failed = sorted({f"{f['expectation']}({f.get('column') or 'table'})" for f in reason["failures"]})
            outcome = f"quarantined: {', '.join(failed)}"
        else:
            outcome = "failed before validation; see the task log"
        lines.append(f"{run.day:<11} {run.scenario:<22} {run.state:<8} {outcome}")
    lines += [
        "",
        f"validated days in {storage.uri(f'validated/{dataset}')}: "
        f"{', '.join(storage.iter_partitions('validated', dataset)) or 'none'}",
        f"quarantined days in {storage.uri(f'quarantine/{dataset}')}: "
        f"{', '.join(storage.iter_partitions('quarantine', dataset)) or 'none'}",
        "",
        f"Airflow UI: {services.AIRFLOW_URL}  (login: {services.AIRFLOW_USER} / {password})",
        f"MLflow UI:  {services.MLFLOW_URL}",
        "Stop everything with `make down`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the demo job against the running stack; exit 1 if any run ended other than expected."""
    parser = argparse.ArgumentParser(prog="python -m mlloop.ops.demo", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    env = services.stack_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLLOOP_")})
    password = env["MLLOOP_AIRFLOW_PASSWORD"]
    api = AirflowAPI(services.AIRFLOW_URL, services.AIRFLOW_USER, password)
    api.wait_for_dag(INGEST_DAG)
    api.set_paused(INGEST_DAG, False)
    runs = trigger_days(api, DEMO_DAYS, stamp=time.strftime("%Y%m%dT%H%M%S"))
    wait_for_runs(api, runs)
    settings = get_settings()
    print(
        summarise(runs, Storage.from_settings(settings), load_use_case(settings.use_case).dataset, password)
    )
    unexpected = [r for r in runs if r.state != r.expected]
    for run in unexpected:
        print(
            f"UNEXPECTED: {run.day} ({run.scenario}) ended {run.state}, expected {run.expected}; "
            f"tasks: {api.task_states(INGEST_DAG, run.run_id)}",
            file=sys.stderr,
        )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
