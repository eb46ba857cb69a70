"""Run the closed loop through the running stack, day by day: serve, land, monitor, retrain.

``mlloop simulate`` (``make simulate DAYS=n``). Each simulated day: serve its traffic
(``ops/traffic.py``), land it (``ingest_<use case>``), check it (``monitor_<use case>``), let a triggered
``train_<use case>`` gate and promote, wait until the service serves the champion, next day. The per-day
rows become the timeline (``ops/timeline.py``): a table, a plot and the detection and recovery of each
drift event.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from mlloop import clock
from mlloop.config import get_settings
from mlloop.data.scenarios import DRIFT_SCENARIOS
from mlloop.ops import services
from mlloop.ops.airflow_api import AirflowAPI
from mlloop.ops.dagruns import (
    driven_names,
    training_outcome,
    trigger_days,
    wait_for_run,
    wait_for_runs,
    wait_for_training,
)
from mlloop.ops.timeline import loop_outcome, outcome_lines, save_timeline, timeline
from mlloop.ops.traffic import serve_day, served_day, wait_until_serving
from mlloop.orchestration.names import DagNames, dag_names
from mlloop.storage import Storage
from mlloop.usecase import enabled_use_cases, load_use_case

log = logging.getLogger(__name__)


def simulation_days(
    days: int, end_back: int, drifts: Sequence[str], today: dt.date | None = None
) -> list[tuple[str, str]]:
    """Return (day, scenario) for ``days`` consecutive days ending ``end_back`` days before (platform) today.

    ``drifts`` are ``scenario@n`` (n: 1-based day of the simulation) for one drifted day, or
    ``scenario@n-m`` for days n to m (a drift that persists), e.g. ``covariate_amount@5-9``.

    Raises:
        ValueError: naming a malformed drift, an unknown scenario or a day outside the simulation.
    """
    today = today or clock.today()
    first = today - dt.timedelta(days=end_back + days - 1)
    plan = {i: "none" for i in range(1, days + 1)}
    for drift in drifts:
        scenario, _, at = drift.partition("@")
        start, _, end = at.partition("-")
        end = end or start
        if (
            scenario not in DRIFT_SCENARIOS
            or not (start.isdigit() and end.isdigit())
            or not 1 <= int(start) <= int(end) <= days
        ):
            raise ValueError(
                f"drift {drift!r}: write <scenario>@<day> or <scenario>@<first>-<last> with days in "
                f"1..{days}, the scenario one of {sorted(DRIFT_SCENARIOS)}"
            )
        for i in range(int(start), int(end) + 1):
            plan[i] = scenario
    return [((first + dt.timedelta(days=i - 1)).isoformat(), plan[i]) for i in range(1, days + 1)]


def free_end_back(
    days: int, warm_up: int, landed: set[str], today: dt.date | None = None, *, end_back: int = 21
) -> int:
    """Return the smallest ``end_back`` (at least the given one) whose warm-up and days are not ``landed``.

    A day already landed keeps its first delivery: the generator's rows of a day do not depend on the
    scenario for every drift (``concept`` keeps the inputs), so landing it again adds nothing and its
    labels stay the first world's. The demo lands days 14 to 26 back; a simulation over them would judge
    its concept days with the demo's labels.
    """
    today = today or clock.today()
    while True:
        last = today - dt.timedelta(days=end_back)
        span = [(last - dt.timedelta(days=k)).isoformat() for k in range(days + warm_up)]
        taken = [d for d in span if d in landed]
        if not taken:
            return end_back
        end_back = (today - dt.date.fromisoformat(min(taken))).days + 1


def settings_window_days() -> int:
    """Return the train DAG's default window length in days (its Param default)."""
    return load_use_case(get_settings().use_case).training.window_days


def _warm_up_days(first_day: str, window_days: int) -> tuple[tuple[str, str], ...]:
    """Return the ``window_days`` clean days before ``first_day`` (landed once, never served)."""
    first = dt.date.fromisoformat(first_day)
    return tuple(((first - dt.timedelta(days=i)).isoformat(), "none") for i in range(window_days, 0, -1))


# A simulated day lasts minutes, so the monitor's guards (counted in real hours) would silence every
# trigger after the first; the simulation measures detection and recovery, and says so in its output.
SIMULATION_GUARD_OVERRIDES = {"cooldown_hours": 0, "max_triggers_per_week": 1000}


def _start_from_warm_up_model(
    api: AirflowAPI, names: DagNames, train_run_id: str, stamp: str, outcome: str
) -> None:
    """Make the warm-up model champion through the rollback DAG (forced, audited) when the gate kept another.

    The simulation measures a champion trained on the days just before day 1. A champion trained on other
    days (the demo's, on later days) would be checked against days it already learned from, where the
    monitor rightly refuses to look, and the whole run would read "quiet".
    """
    version = (api.task_result(names.train, train_run_id, "reject") or {}).get("to_version")
    if version is None:
        raise RuntimeError(f"the warm-up training {train_run_id} neither promoted nor rejected: {outcome}")
    run_id = f"sim__start_champion__{stamp}"
    reason = f"simulation start: the warm-up model v{version} starts as champion (its gate: {outcome[:300]})"
    log.info("%s; forcing it through %s", reason, names.rollback)
    api.set_paused(names.rollback, False)
    api.trigger(names.rollback, run_id, {"version": int(version), "force": True, "reason": reason})
    state = wait_for_run(api, names.rollback, run_id)
    if state != "success":
        raise RuntimeError(
            f"{names.rollback} could not make the warm-up model v{version} champion ({run_id} ended "
            f"{state}); see its log in the Airflow UI"
        )


def run_simulation(
    days: list[tuple[str, str]], stamp: str, rows_per_day: int | None = None
) -> list[dict[str, Any]]:
    """Day by day: serve the day's traffic, land it, monitor it, let a triggered retrain run; return rows.

    ``rows_per_day``: rows per simulated day, served and landed alike (default: the use case's
    ``rows_per_day``).
    """
    # MLflow loads only when the loop runs: `mlloop simulate --help` imports this module.
    from mlloop.registry.champion import champion_version
    from mlloop.registry.runner import registry_client_and_model

    env = services.stack_env()
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    storage = Storage.from_settings(settings)
    client, name = registry_client_and_model(use_case.name)
    names = driven_names()
    api = AirflowAPI(services.AIRFLOW_URL, services.AIRFLOW_USER, env["MLLOOP_AIRFLOW_PASSWORD"])
    for dag_id in (names.ingest, names.train, names.monitor):
        api.wait_for_dag(dag_id)
        api.set_paused(dag_id, False)
    # A retrain on an early simulated day needs a full training window before it, and the level before a
    # drift should be that of a model trained like the retrains (same rows per day, same window length),
    # not of whatever trained the champion before: the warm-up window trains the starting champion.
    warm_up = _warm_up_days(days[0][0], settings_window_days())
    log.info("Landing %d warm-up day(s) before the simulation: %s", len(warm_up), [d for d, _ in warm_up])
    since = dt.datetime.now(dt.UTC).isoformat()
    landing = trigger_days(api, warm_up, stamp=f"simwarm{stamp}", start_training=False, rows=rows_per_day)
    wait_for_runs(api, landing)
    wait_for_training(api, since, allow_none=True)
    run_id = f"sim__warmup_train__{stamp}"
    api.trigger(names.train, run_id, {"end_day": warm_up[-1][0], "window_days": len(warm_up)})
    state = wait_for_run(api, names.train, run_id, timeout_s=1800)
    outcome = training_outcome(api, {"dag_run_id": run_id, "state": state})
    log.info("Starting champion: %s on the warm-up window %s: %s", names.train, run_id, outcome)
    if state != "success":
        raise RuntimeError(
            f"{names.train} on the warm-up window ({run_id}) ended {state}: {outcome}; see its log in the "
            "Airflow UI, fix the cause, then run make simulate again"
        )
    if not outcome.startswith("promoted"):
        _start_from_warm_up_model(api, names, run_id, stamp, outcome)
    rows = []
    for number, (day, scenario) in enumerate(days, start=1):
        champion = champion_version(client, name)
        if champion is None:
            raise RuntimeError(f"{name} has no champion to serve: run `make demo` first (it trains one)")
        wait_until_serving(services.SERVING_URL, str(champion.version), use_case=use_case.name)
        serve_day(services.SERVING_URL, use_case, day, scenario, rows_per_day)
        since = dt.datetime.now(dt.UTC).isoformat()
        # Monitoring alone decides when to retrain: the batch lands without starting training.
        ingest = trigger_days(
            api, ((day, scenario),), stamp=f"sim{stamp}", start_training=False, rows=rows_per_day
        )
        wait_for_runs(api, ingest)
        # The validated Asset still starts the train DAG, which skips; say so if it trained.
        landed, foreign = _training_of_day(api, names, wait_for_training(api, since, allow_none=True), day)
        run_id = f"sim__monitor__{day}__{stamp}"
        api.trigger(
            names.monitor,
            run_id,
            {"end_day": day, "window_days": 1, "dry_run": False, "overrides": SIMULATION_GUARD_OVERRIDES},
        )
        since = dt.datetime.now(dt.UTC).isoformat()
        state = wait_for_run(api, names.monitor, run_id)
        check = api.task_result(names.monitor, run_id, "check") or {}
        retrain = ""
        if check.get("action") == "trigger":
            runs = wait_for_training(api, since, allow_none=True)
            retrained, more = _training_of_day(api, names, runs, day, keep_skipped=True)
            retrain, foreign = "; ".join(retrained), foreign + more
        row = served_day(storage, use_case, day, rows=rows_per_day)
        retrain = "; ".join([*(f"on landing: {o}" for o in landed), *([retrain] if retrain else [])])
        monitor = check.get("action", state)
        if monitor == "quiet" and "figures" not in check:  # not checked (no champion, window not ready)
            monitor = "not checked"
        if foreign:
            retrain = "; ".join([retrain, *(f"NOT this simulation's: {f}" for f in foreign)]).lstrip("; ")
        row.update(scenario=scenario, monitor=monitor, retrain=retrain)
        rows.append(row)
        log.info("Simulated day %d/%d %s (%s): %s", number, len(days), day, scenario, row)
        if foreign:
            log.error(
                "Stopped after day %d/%d: %s. The days after would judge that model, not the loop's own "
                "decisions. Run make simulate again: it moves to days nothing has landed on yet.",
                number, len(days), "; ".join(foreign),
            )  # fmt: skip
            break
    return rows


def _training_of_day(
    api: AirflowAPI, names: DagNames, runs: list[dict[str, Any]], day: str, keep_skipped: bool = False
) -> tuple[list[str], list[str]]:
    """Split a simulated day's finished training runs into its own outcomes and promotions it did not cause.

    A run that trained a window ending on another day than ``day`` was not started by this simulation (the
    stack's daily ingest lands and trains the real today's batch at 00:00 UTC, say); its promotion replaces
    the simulated champion.
    """
    own, foreign = [], []
    for run in runs:
        outcome = training_outcome(api, run, names)
        if outcome.startswith("skipped"):
            own += ["skipped"] if keep_skipped else []
            continue
        window = (api.task_result(names.train, run["dag_run_id"], "snapshot") or {}).get("days") or [day]
        if window[-1] == day:
            own.append(outcome.split(":")[0])
        elif outcome.startswith("promoted"):
            foreign.append(
                f"{names.train} run {run['dag_run_id']} {outcome.split(':')[0]} trained on "
                f"{window[0]}..{window[-1]}, days this simulation did not land"
            )
    return own, foreign


def simulation_problem(name: str) -> str | None:
    """Return why use case ``name`` cannot be simulated (not enabled, not generated), or None."""
    enabled = enabled_use_cases()
    if name not in enabled:
        return (
            f"use case {name!r} is not enabled on this stack (enabled: {', '.join(enabled)}); pick one "
            "of them with --use-case (make simulate USE_CASE=...)"
        )
    source = load_use_case(name).source
    if source.kind != "generator":
        return (
            f"use case {name!r} reads its days from files ({source.uri}): a simulation generates each day "
            "and its drift, so it needs a generator source. Its loop runs in `make demo`; or land its "
            f"delivered days with the {dag_names(name).ingest} DAG."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """``make simulate DAYS=n``: the closed loop over n days through the running stack; print the timeline."""
    parser = argparse.ArgumentParser(
        prog="python -m mlloop.ops.simulate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--days", type=int, default=5, help="simulated days (each: serve, land, monitor)")
    parser.add_argument(
        "--end-back",
        type=int,
        default=None,
        help="the last simulated day is this many days before today (default: 21, or further back so that "
        "no simulated or warm-up day was landed before, e.g. by make demo)",
    )
    parser.add_argument(
        "--drift",
        action="append",
        default=[],
        help="scenario@day or scenario@first-last (a lasting drift), e.g. concept@20-30",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows per simulated day, served and landed (default: the use case's rows_per_day); "
        "more rows narrow the day-to-day spread of the served PR-AUC",
    )
    parser.add_argument(
        "--use-case",
        default=None,
        help="the enabled use case to simulate (default: MLLOOP_USE_CASE); it must have a generator source",
    )
    args = parser.parse_args(argv)
    if args.rows is not None and not 1_000 <= args.rows <= 1_000_000:
        parser.error(f"--rows {args.rows}: use 1000..1000000 rows per day")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.update({k: v for k, v in services.stack_env().items() if k.startswith("MLLOOP_")})
    if args.use_case:
        os.environ["MLLOOP_USE_CASE"] = args.use_case
    get_settings.cache_clear()
    if problem := simulation_problem(get_settings().use_case):
        parser.error(problem)
    use_case = load_use_case(get_settings().use_case)
    landed = set(Storage.from_settings(get_settings()).iter_partitions("raw", use_case.dataset))
    end_back = free_end_back(args.days, settings_window_days(), landed, end_back=args.end_back or 21)
    if args.end_back is not None and end_back != args.end_back:
        parser.error(
            f"--end-back {args.end_back}: some of those days (or the {settings_window_days()} warm-up days "
            f"before them) were landed before, and a day lands once; use --end-back {end_back} or leave it "
            "out, or start from an empty data root (make clean)"
        )
    if end_back != 21:
        log.info(
            "Days up to 21 days back were landed before (make demo): the simulation ends %d back", end_back
        )
    days = simulation_days(args.days, end_back, args.drift)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows = run_simulation(days, stamp, args.rows)
    drifts = ", ".join(args.drift) or "none"
    title = f"mlloop simulation {stamp} ({get_settings().use_case}): {args.days} days, drifts {drifts}"
    if args.rows:
        title += f", {args.rows} rows/day"
    uris = save_timeline(Storage.from_settings(get_settings()), rows, stamp, title)
    print(timeline(rows, title)[0])
    print("\n".join(["", *outcome_lines(loop_outcome(rows))]))
    print(f"\nTable and plot: {uris['table']}, {uris['plot']} (MLflow run {uris['mlflow_run']})")
    print("Guards: cooldown and weekly budget are off in a simulation (a simulated day lasts minutes).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
