"""The demo's main job: three use cases side by side on one stack, all through the scheduler.

Run by ``make demo`` after ``make up``. First the generated use case ``MLLOOP_USE_CASE`` (card_fraud), then,
each when it is enabled, the two on real public data (``mlloop.ops.real_data_demo``), one after the other:
flight_delay (will a flight be late, binary) and arrival_delay (by how many minutes, regression). Each
card_fraud day is a manual run of its ``ingest_<use case>`` DAG with its Params (day, scenario); two days
carry data-quality faults so the quarantine path shows too. A week of clean history lands first (it trains
nothing: Param start_training off), then the demo's days; the day that completes the training window lands
last, and its ``validated_<use case>`` Asset event starts ``train_<use case>``, which trains, gates and
promotes the first champion. Then three later days are ingested and each is checked by ``monitor_<use case>``:
the two normal ones stay quiet, the covariate-drift one requests a retrain (``retrain_requested_<use case>``
Asset), which ``train_<use case>`` runs through the same gate. Before each later day lands, its traffic goes
through the scoring service (the champion answers it, the inference log keeps every answer); joined with the
delayed labels, that gives the served model's PR-AUC per day, printed and saved as a table and plot under
``reports/simulation/`` and in MLflow. The summary prints what happened, the champion's metrics, the
monitoring decisions, the retrain's outcome and the served traffic, with the MLflow links.

The days lie 14 to 19 days back (the use case's label maturity), so most of their delayed labels are
known when the model trains. "Back" counts from the platform's today (``mlloop.clock``), which
``MLLOOP_CLOCK_SHIFT_DAYS`` pins to a calendar day (the tests do), set alike for ``make up`` and the demo.
Re-running is safe: batches and snapshots are content-addressed, so the same days write the same objects,
and an Asset-started retrain on an already trained snapshot is skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlloop import clock
from mlloop.config import get_settings
from mlloop.ops import real_data_demo, services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.ops.dagruns import (
    DemoRun,
    champion_summary,
    driven_names,
    training_outcome,
    trigger_days,
    wait_for_run,
    wait_for_runs,
    wait_for_training,
    wait_for_unfinished_runs,
)
from mlloop.ops.timeline import save_timeline
from mlloop.ops.traffic import serve_day, served_day, wait_until_serving
from mlloop.registry.runner import registered_model_name
from mlloop.storage import Storage, partition_key
from mlloop.usecase import enabled_use_cases, load_use_case

log = logging.getLogger("mlloop.demo")

# (days back from today, scenario): four clean days and two data-quality faults the contract must stop.
# The newest is exactly the use case's label maturity (14 days) back, so all four clean days train.
_DEMO_SCHEDULE: tuple[tuple[int, str], ...] = (
    (19, "none"),
    (18, "none"),
    (17, "fault_nulls"),
    (16, "none"),
    (15, "fault_renamed_column"),
    (14, "none"),
)


# Before them, a week of clean history that trains nothing: a platform in production has its entities'
# history, and without it the champion's history features (7-day counts and sums per customer) would be
# computed from a cold start that later days never see again, a training/serving skew monitoring rightly
# reports as drift of those features on every later day.
_HISTORY_SCHEDULE: tuple[tuple[int, str], ...] = tuple((back, "none") for back in range(26, 19, -1))

# After the champion exists: two normal days that monitoring must leave alone, then a covariate drift.
_MONITOR_SCHEDULE: tuple[tuple[int, str], ...] = ((13, "none"), (12, "none"), (11, "covariate_amount"))


def demo_days(
    today: date | None = None, schedule: tuple[tuple[int, str], ...] = _DEMO_SCHEDULE
) -> tuple[tuple[str, str], ...]:
    """Return the demo's (day, scenario) pairs, counted back from ``today`` (the platform's by default)."""
    today = today or clock.today()
    return tuple(((today - timedelta(days=back)).isoformat(), scenario) for back, scenario in schedule)


def monitor_days(today: date | None = None) -> tuple[tuple[str, str], ...]:
    """Return the (day, scenario) pairs the demo monitors after the first champion."""
    return demo_days(today, _MONITOR_SCHEDULE)


def history_days(today: date | None = None) -> tuple[tuple[str, str], ...]:
    """Return the week of clean history the demo lands before its days (it trains nothing)."""
    return demo_days(today, _HISTORY_SCHEDULE)


def run_monitoring(api: AirflowAPI, days: tuple[tuple[str, str], ...], stamp: str) -> list[dict[str, Any]]:
    """Check each monitored day with the monitor DAG, one after the other; return each check's summary."""
    monitor = driven_names().monitor
    api.set_paused(monitor, False)
    wait_for_unfinished_runs(api, monitor)  # the scheduled run unpausing created: let it finish first
    checks = []
    for day, scenario in days:
        run_id = f"demo__monitor__{day}__{stamp}"
        api.trigger(monitor, run_id, {"end_day": day, "window_days": 1, "dry_run": False, "overrides": {}})
        state = wait_for_run(api, monitor, run_id)
        summary = api.task_result(monitor, run_id, "check") or {}
        log.info("%s %s (%s): %s %s", monitor, day, scenario, state, summary.get("action"))
        checks.append({"day": day, "scenario": scenario, "state": state, **summary})
    return checks


def summarise_monitoring(checks: list[dict[str, Any]], retrains: list[tuple[str, str, str]]) -> str:
    """Return the monitoring part of the summary: each check's decision, then the retrain it started."""
    names = driven_names()
    lines = ["", f"=== mlloop demo: {names.monitor} (each day against the champion's training data) ==="]
    for check in checks:
        reason = str(check.get("reason", "see the task log"))
        action = check.get("action", check["state"])
        lines.append(f"{check['day']}  {check['scenario']:<18} {action:<10} {reason[:160]}")
        lines += [f"{'':<12}data quality: {finding}" for finding in check.get("quality_findings", [])]
    lines.append("")
    lines.append(f"{names.train} runs started by monitoring ({names.retrain_asset} Asset):")
    lines += [f"{run_id}\n    {state}: {outcome}" for run_id, state, outcome in retrains] or ["  none"]
    return "\n".join(lines)


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
    ]
    return "\n".join(lines)


def summarise_training(outcomes: list[tuple[str, str, str]], champion: list[str], password: str) -> str:
    """Return the training part of the summary and where the UIs are."""
    names = driven_names()
    lines = ["", f"=== mlloop demo: {names.train} (started by the {names.validated_asset} Asset) ==="]
    lines += [f"{run_id}\n    {state}: {outcome}" for run_id, state, outcome in outcomes]
    lines += [
        "",
        *champion,
        "",
        f"Airflow UI: {services.AIRFLOW_URL}  (login: {services.AIRFLOW_USER} / {password})",
        f"MLflow UI:  {services.MLFLOW_URL}",
        "Stop everything with `make down`.",
    ]
    return "\n".join(lines)


def replay_monitored_days(model_name: str, use_case: Any) -> None:
    """Send each monitored day's traffic through the scoring service before the day's batch lands."""
    from mlloop.registry.champion import champion_version
    from mlloop.registry.runner import registry_client_and_model

    client, _ = registry_client_and_model(use_case.name)
    champion = champion_version(client, model_name)
    wait_until_serving(services.SERVING_URL, str(champion.version), use_case=use_case.name)
    for day, scenario in monitor_days():
        serve_day(services.SERVING_URL, use_case, day, scenario)


def summarise_served(
    storage: Storage,
    use_case: Any,
    checks: list[dict[str, Any]],
    retrains: list[tuple[str, str, str]],
    stamp: str,
) -> str:
    """Return the served-traffic part: per monitored day what served it, how well, what monitoring did."""
    rows = []
    for check in checks:
        row = served_day(storage, use_case, check["day"])
        triggered = check.get("action") == "trigger"
        retrain = "; ".join(outcome.split(":")[0] for _, _, outcome in retrains) if triggered else ""
        rows.append(
            {**row, "scenario": check["scenario"], "monitor": check.get("action"), "retrain": retrain}
        )
    uris = save_timeline(storage, rows, stamp, f"mlloop demo {stamp}: served traffic of the monitored days")
    lines = [
        "",
        f"=== mlloop demo: served traffic ({services.SERVING_URL}, answers joined with the labels so far)",
    ]
    for row in rows:
        lines.append(
            f"{row['day']}  {row['scenario']:<18} served {row['served']:>6} ({row['versions']}), "
            f"labelled {row['labelled']:>6}, PR-AUC {row['pr_auc']}, monitoring: {row['monitor']}"
            + (f", retrain: {row['retrain']}" if row["retrain"] else "")
        )
    lines.append(f"Table and plot: {uris['table']}, {uris['plot']} (also MLflow run {uris['mlflow_run']})")
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
    names = driven_names()
    api.wait_for_dag(names.ingest)
    api.wait_for_dag(names.train)
    since = datetime.now(UTC).isoformat()
    # The train DAG stays paused while the window lands: a paused DAG is not queued by Asset events, so the
    # run the ingest DAG's own schedule adds on unpausing (yesterday's batch) cannot start training on a
    # window of history days. The day that completes the window lands last, with the train DAG unpaused:
    # its validated Asset event starts training on the whole window.
    api.set_paused(names.train, True)
    api.set_paused(names.ingest, False)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    history = trigger_days(api, history_days(), stamp, start_training=False)
    wait_for_runs(api, history)
    *landing, completing = demo_days()
    runs = trigger_days(api, tuple(landing), stamp, start_training=False)
    wait_for_runs(api, runs)
    wait_for_unfinished_runs(api, names.ingest)
    api.set_paused(names.train, False)
    runs += trigger_days(api, (completing,), stamp)
    wait_for_runs(api, runs)
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    print(summarise(runs, Storage.from_settings(settings), use_case.dataset, password))
    validated = sum(r.state == "success" for r in history)
    print(f"history: {validated} of {len(history)} days validated ({history[0].day}..{history[-1].day})")
    unexpected = [r for r in history + runs if r.state != r.expected]
    for run in unexpected:
        print(
            f"UNEXPECTED: {run.day} ({run.scenario}) ended {run.state}, expected {run.expected}; "
            f"tasks: {api.task_states(names.ingest, run.run_id)}",
            file=sys.stderr,
        )
    training = wait_for_training(api, since)
    outcomes = [(r["dag_run_id"], r["state"], training_outcome(api, r)) for r in training]
    name = registered_model_name(use_case, settings)
    champion = champion_summary(name)
    print(summarise_training(outcomes, champion, password))
    failed = [run_id for run_id, state, _ in outcomes if state != "success"]
    if champion[0].startswith("No champion"):
        print(f"UNEXPECTED: {champion[0]}", file=sys.stderr)
        return 1

    # Monitoring: normal days leave the champion alone, a drifted day requests a retrain (guarded).
    stamp = time.strftime("%Y%m%dT%H%M%S")
    replay_monitored_days(name, use_case)  # production traffic first: the champion answers each day
    since = datetime.now(UTC).isoformat()
    later = trigger_days(api, monitor_days(), stamp=stamp)
    wait_for_runs(api, later)
    wait_for_training(api, since, allow_none=True)  # their Asset runs skip: the window is the champion's
    since = datetime.now(UTC).isoformat()
    checks = run_monitoring(api, monitor_days(), stamp)
    retrain_runs = wait_for_training(api, since, allow_none=True)
    retrains = [(r["dag_run_id"], r["state"], training_outcome(api, r)) for r in retrain_runs]
    print(summarise_monitoring(checks, retrains))
    print("\n".join(["", *champion_summary(name)]))
    print(summarise_served(Storage.from_settings(settings), use_case, checks, retrains, stamp))
    failed += [run_id for run_id, state, _ in retrains if state != "success"]
    failed += [c["day"] for c in checks if c["state"] != "success"]
    failed += [r.day for r in later if r.state != r.expected]
    enabled = enabled_use_cases()
    # One after the other: at once, their ingest runs overloaded a 2-core machine's API server.
    for name in (name for name in real_data_demo.USE_CASES if name in enabled):  # on real public data
        summary, real_failed = real_data_demo.run(api, stamp, name)
        print(summary)
        failed += real_failed
    if failed:
        print(f"UNEXPECTED: runs failed: {failed}", file=sys.stderr)
    return 1 if unexpected or failed else 0


if __name__ == "__main__":
    sys.exit(main())
