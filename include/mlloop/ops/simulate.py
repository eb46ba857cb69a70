"""Closed-loop pieces: replay a day's traffic through the scoring service, then judge what was served.

``replay_day`` sends a generated day's transactions to ``/predict`` in time order (what production
traffic would do before the day's batch lands), so the inference log holds every answer with the
version that gave it. ``served_performance`` joins that log with the delayed labels known by a time and
scores the *served* answers per day: PR-AUC, recall and precision of the flag at the champion's
threshold. ``timeline`` renders the per-day rows (with the monitoring decision of each day) as a table
and a PNG, saved under ``reports/simulation/`` and logged to MLflow.

``make demo`` runs them over its monitored days. ``make simulate DAYS=n`` (``main``) loops day by day
through the running stack: serve the day, land it (``ingest_transactions``), check it (``monitor_drift``),
let a triggered ``train_model`` gate and promote, wait until the service serves the champion, next day.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import statistics
import time
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlloop import clock

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
REPORTS_AREA = "reports/simulation"
EXPERIMENT = "mlloop-simulation"


def replay_day(
    serving_url: str, transactions: pd.DataFrame, use_case: UseCase, batch_rows: int = 500
) -> dict[str, int]:
    """POST a day's transactions in time order in batches; return how many rows each version answered.

    Raises:
        RuntimeError: naming the status and the service's message when a request is refused.
    """
    from mlloop.serving.client import request_rows

    ordered = transactions.sort_values(use_case.time_column, kind="stable")
    payload = request_rows(ordered, use_case)
    versions: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(payload), batch_rows):
        body = json.dumps(payload[start : start + batch_rows]).encode()
        request = urllib.request.Request(  # noqa: S310 - the configured service URL
            f"{serving_url}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"the scoring service refused rows {start}..{start + batch_rows} with {exc.code}: "
                f"{exc.read()[:300]!r}"
            ) from exc
        version = str(answer["model_version"])
        versions[version] = versions.get(version, 0) + len(answer["predictions"])
    log.info(
        "Replayed %d transactions through %s in %.1fs (versions %s)",
        len(payload),
        serving_url,
        time.perf_counter() - started,
        versions,
    )
    return versions


def serve_day(
    serving_url: str, use_case: UseCase, day: str, scenario: str, rows: int | None = None
) -> dict[str, int]:
    """Generate ``day``'s traffic (as its batch will land) and replay it through the service.

    ``rows``: the day's transactions (default: the use case's ``rows_per_day``); the batch must land
    with the same number, or the two would not be the same transactions.
    """
    from mlloop.data.generator import generate_day

    traffic = generate_day(
        dt.date.fromisoformat(day),
        rows=rows or use_case.source.rows_per_day,
        seed=use_case.source.seed,
        scenario=scenario,
    ).transactions
    return replay_day(serving_url, traffic, use_case)


def served_day(
    storage: Storage, use_case: UseCase, day: str, timeout_s: float = 60.0, rows: int | None = None
) -> dict[str, Any]:
    """Return ``served_performance`` of ``day`` once the inference log holds its whole traffic.

    ``rows``: the day's traffic as served (default: the use case's ``rows_per_day``). The service
    writes its tail within MLLOOP_INFERENCE_FLUSH_SECONDS; after ``timeout_s`` the row is returned
    with what was written.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        row = served_performance(storage, use_case, day, clock.now())
        if row["served"] >= (rows or use_case.source.rows_per_day) or time.monotonic() > deadline:
            return row
        time.sleep(2)


def wait_until_serving(serving_url: str, version: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Wait until ``/ready`` names ``version``; return its body.

    Raises:
        TimeoutError: naming what the service reported last.
    """
    from mlloop.ops.services import http_json

    deadline = time.monotonic() + timeout_s
    ready: Any = None
    while True:
        try:
            ready = http_json(f"{serving_url}/ready")
        except OSError as exc:
            ready = f"{type(exc).__name__}: {exc}"
        if isinstance(ready, dict) and str(ready.get("model_version")) == str(version):
            return ready
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the scoring service at {serving_url} does not serve v{version} after {timeout_s:.0f}s "
                f"(last /ready: {ready}); see its log (.airflow/logs/scoring.out under make up)"
            )
        time.sleep(1)


def served_performance(
    storage: Storage, use_case: UseCase, day: str, as_of: dt.datetime, precision: float = 0.2
) -> dict[str, Any]:
    """Score the answers served for ``day`` against the labels known by ``as_of``.

    A transaction answered twice (a replay) counts once, with its latest answer.
    """
    import numpy as np

    from mlloop.promotion.metrics import pr_auc, recall_at_precision
    from mlloop.serving.inference_log import labelled_answers

    row: dict[str, Any] = {"day": day, "served": 0, "versions": "", "labelled": 0, "pr_auc": None}
    served = labelled_answers(storage, use_case, [day], as_of)
    if served.empty:
        return row
    joined = served[served[use_case.target_column].notna()]
    counts = served["model_version"].astype(str).value_counts().sort_index()
    row.update(
        served=len(served),
        versions=", ".join(f"v{v}: {n}" for v, n in counts.items()),
        labelled=len(joined),
    )
    y = joined[use_case.target_column].to_numpy(dtype=np.int8)
    if 0 < int(y.sum()) < len(y):
        scores = joined["score"].to_numpy(dtype=np.float64)
        flagged = joined["flagged"].to_numpy(dtype=bool)
        row.update(
            pr_auc=round(float(pr_auc(y, scores)), 4),
            recall_at_precision=round(float(recall_at_precision(y, scores, precision)), 4),
            flag_precision=round(float(y[flagged].mean()), 4) if flagged.any() else None,
            flag_recall=round(float(flagged[y == 1].mean()), 4),
        )
    return row


def loop_outcome(rows: Sequence[dict[str, Any]], tolerance: float = 0.02) -> dict[str, Any]:
    """Judge the loop on a simulation's rows: detection, recovery and false alarms per drift event.

    Baseline: mean served PR-AUC of the clean days before the first drift, with their standard
    deviation (``baseline_sd``: the day-to-day spread one model shows; a tolerance below it is judged
    partly by chance, and more traffic per day narrows it). An event is a run of days
    with one drift scenario; it is detected on its first day with a monitoring trigger (lag 0: the
    drifted day itself) and recovered on its first day, after detection, whose served PR-AUC is within
    ``tolerance`` of the baseline (lag counted from the event's first day). ``false_alarms`` are the
    clean days whose monitoring triggered a retrain.
    """
    clean_before = []
    for row in rows:
        if row.get("scenario", "none") != "none":
            break
        if row.get("pr_auc") is not None:
            clean_before.append(row["pr_auc"])
    baseline = round(sum(clean_before) / len(clean_before), 4) if clean_before else None
    baseline_sd = round(statistics.stdev(clean_before), 4) if len(clean_before) > 1 else None
    events: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        scenario = row.get("scenario", "none")
        if scenario == "none" or (i and rows[i - 1].get("scenario") == scenario):
            continue
        end = i
        while end + 1 < len(rows) and rows[end + 1].get("scenario") == scenario:
            end += 1
        detected = next((j for j in range(i, end + 1) if rows[j].get("monitor") == "trigger"), None)
        recovered = None
        if detected is not None and baseline is not None:
            recovered = next(
                (
                    j
                    for j in range(detected + 1, end + 1)
                    if rows[j].get("pr_auc") is not None and rows[j]["pr_auc"] >= baseline - tolerance
                ),
                None,
            )
        events.append(
            {
                "scenario": scenario,
                "days": f"{row['day']}..{rows[end]['day']}",
                "detected_after_days": None if detected is None else detected - i,
                "recovered_after_days": None if recovered is None else recovered - i,
                "pr_auc_at_recovery": None if recovered is None else rows[recovered]["pr_auc"],
                "lowest_pr_auc": min((r["pr_auc"] for r in rows[i : end + 1] if r.get("pr_auc") is not None),
                                     default=None),
            }
        )  # fmt: skip
    clean = [row for row in rows if row.get("scenario", "none") == "none"]
    false_alarms = [row["day"] for row in clean if row.get("monitor") == "trigger"]
    return {
        "baseline_pr_auc": baseline,
        "baseline_sd": baseline_sd,
        "tolerance": tolerance,
        "events": events,
        "false_alarms": false_alarms,
    }


def outcome_lines(outcome: dict[str, Any]) -> list[str]:
    """Return ``loop_outcome`` as lines a person reads."""
    alarms = outcome["false_alarms"]
    sd = outcome.get("baseline_sd")
    lines = [
        f"Baseline (clean days before the first drift): served PR-AUC {outcome['baseline_pr_auc']}"
        + ("" if sd is None else f" (day-to-day SD {sd})")
        + f"; retrains fired on clean days: {len(alarms)}"
        + (f" ({', '.join(alarms)})" if alarms else "")
    ]
    if sd is not None and sd > outcome["tolerance"]:
        lines.append(
            f"Note: the clean days spread more (SD {sd}) than the recovery tolerance "
            f"({outcome['tolerance']}), so a single day can miss it by chance; more traffic per day "
            "(make simulate ROWS=60000) narrows the spread."
        )
    for event in outcome["events"]:
        detected = event["detected_after_days"]
        recovered = event["recovered_after_days"]
        lines.append(
            f"{event['scenario']} {event['days']}: "
            + ("not detected" if detected is None else f"detected on day {detected + 1} of the drift")
            + (
                f", served PR-AUC back within {outcome['tolerance']} of the baseline on day {recovered + 1}"
                f" ({event['pr_auc_at_recovery']})"
                if recovered is not None
                else f", not back within {outcome['tolerance']} of the baseline during the event"
            )
            + f"; lowest {event['lowest_pr_auc']}"
        )
    return lines


def timeline(rows: Sequence[dict[str, Any]], title: str) -> tuple[str, bytes]:
    """Return the per-day rows as a Markdown table and a PNG plot of served PR-AUC with the events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [
        "day",
        "scenario",
        "versions",
        "served",
        "labelled",
        "pr_auc",
        "flag_recall",
        "monitor",
        "retrain",
    ]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        table.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    figure, ax = plt.subplots(figsize=(8, 3.5))
    xs = list(range(len(rows)))
    values = [row.get("pr_auc") if row.get("pr_auc") is not None else float("nan") for row in rows]
    ax.plot(xs, values, marker="o", label="PR-AUC of the served answers (dashed: monitoring triggered)")
    ax.set_xticks(xs, [row["day"][5:] for row in rows], fontsize=7, rotation=45 if len(rows) > 10 else 0)
    for x, row in zip(xs, rows, strict=True):
        if row.get("monitor") == "trigger":
            ax.axvline(x, color="tab:red", alpha=0.4, linestyle="--")
        scenario = row.get("scenario")
        if scenario in (None, "none") or (x and rows[x - 1].get("scenario") == scenario):
            continue  # one shaded span and one label per drift event
        end = x
        while end + 1 < len(rows) and rows[end + 1].get("scenario") == scenario:
            end += 1
        ax.axvspan(x - 0.5, end + 0.5, color="tab:orange", alpha=0.12)
        ax.annotate(scenario, (x - 0.4, 0), textcoords="offset points", xytext=(0, 4), fontsize=7)
    ax.set_ylim(0, max([v for v in values if v == v] + [0.5]) * 1.2)
    ax.set_ylabel("PR-AUC (labels known so far)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return "\n".join(table), buffer.getvalue()


def save_timeline(storage: Storage, rows: Sequence[dict[str, Any]], stamp: str, title: str) -> dict[str, str]:
    """Write the table and plot under ``reports/simulation/<stamp>/`` and log both to MLflow."""
    import tempfile
    from pathlib import Path

    from mlloop.registry.champion import experiment_id
    from mlloop.registry.runner import registry_client_and_model

    table, png = timeline(rows, title)
    table += "\n\n" + "\n".join(f"- {line}" for line in outcome_lines(loop_outcome(rows))) + "\n"
    prefix = f"{REPORTS_AREA}/{stamp}"
    uris = {
        "table": storage.write_bytes(f"{prefix}/timeline.md", table.encode()),
        "plot": storage.write_bytes(f"{prefix}/timeline.png", png),
        "rows": storage.write_json(f"{prefix}/timeline.json", list(rows)),
    }
    client, _ = registry_client_and_model()
    run = client.create_run(experiment_id(client, EXPERIMENT), run_name=f"simulation {stamp}")
    with tempfile.TemporaryDirectory(prefix="mlloop-timeline-") as tmp:
        for name, data in (("timeline.md", table.encode()), ("timeline.png", png)):
            (Path(tmp) / name).write_bytes(data)
            client.log_artifact(run.info.run_id, str(Path(tmp) / name))
    client.log_dict(run.info.run_id, list(rows), "timeline.json")
    client.set_terminated(run.info.run_id)
    uris["mlflow_run"] = run.info.run_id
    return uris


# -- the closed loop through the running stack (make simulate) ------------------------------------------


def simulation_days(
    days: int, end_back: int, drifts: Sequence[str], today: dt.date | None = None
) -> list[tuple[str, str]]:
    """Return (day, scenario) for ``days`` consecutive days ending ``end_back`` days before (platform) today.

    ``drifts`` are ``scenario@n`` (n: 1-based day of the simulation) for one drifted day, or
    ``scenario@n-m`` for days n to m (a drift that persists), e.g. ``covariate_amount@5-9``.

    Raises:
        ValueError: naming a malformed drift, an unknown scenario or a day outside the simulation.
    """
    from mlloop.data.scenarios import DRIFT_SCENARIOS

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


def settings_window_days() -> int:
    """Return train_model's default window length in days (its Param default)."""
    from mlloop.config import get_settings
    from mlloop.usecase import load_use_case

    return load_use_case(get_settings().use_case).training.window_days


def _warm_up_days(first_day: str, window_days: int) -> tuple[tuple[str, str], ...]:
    """Return the ``window_days`` clean days before ``first_day`` (landed once, never served)."""
    first = dt.date.fromisoformat(first_day)
    return tuple(((first - dt.timedelta(days=i)).isoformat(), "none") for i in range(window_days, 0, -1))


# A simulated day lasts minutes, so the monitor's guards (counted in real hours) would silence every
# trigger after the first; the simulation measures detection and recovery, and says so in its output.
SIMULATION_GUARD_OVERRIDES = {"cooldown_hours": 0, "max_triggers_per_week": 1000}


def run_simulation(
    days: list[tuple[str, str]], stamp: str, rows_per_day: int | None = None
) -> list[dict[str, Any]]:
    """Day by day: serve the day's traffic, land it, monitor it, let a triggered retrain run; return rows.

    ``rows_per_day``: transactions per simulated day, served and landed alike (default: the use case's
    ``rows_per_day``).
    """
    from mlloop.config import get_settings
    from mlloop.ops import demo, services
    from mlloop.ops.airflow_api import AirflowAPI
    from mlloop.registry.champion import champion_version
    from mlloop.registry.runner import registry_client_and_model
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    env = services.stack_env()
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    storage = Storage.from_settings(settings)
    client, name = registry_client_and_model()
    api = AirflowAPI(services.AIRFLOW_URL, services.AIRFLOW_USER, env["MLLOOP_AIRFLOW_PASSWORD"])
    for dag_id in (demo.INGEST_DAG, demo.TRAIN_DAG, demo.MONITOR_DAG):
        api.wait_for_dag(dag_id)
        api.set_paused(dag_id, False)
    # A retrain on an early simulated day needs a full training window before it, and the level before a
    # drift should be that of a model trained like the retrains (same rows per day, same window length),
    # not of whatever trained the champion before: the warm-up window trains the starting champion.
    warm_up = _warm_up_days(days[0][0], settings_window_days())
    log.info("Landing %d warm-up day(s) before the simulation: %s", len(warm_up), [d for d, _ in warm_up])
    since = dt.datetime.now(dt.UTC).isoformat()
    landing = demo.trigger_days(
        api, warm_up, stamp=f"simwarm{stamp}", start_training=False, rows=rows_per_day
    )
    demo.wait_for_runs(api, landing)
    demo.wait_for_training(api, since, allow_none=True)
    run_id = f"sim__warmup_train__{stamp}"
    api.trigger(demo.TRAIN_DAG, run_id, {"end_day": warm_up[-1][0], "window_days": len(warm_up)})
    state = demo.wait_for_run(api, demo.TRAIN_DAG, run_id, timeout_s=1800)
    outcome = demo.training_outcome(api, {"dag_run_id": run_id, "state": state})
    log.info("Starting champion: train_model on the warm-up window %s: %s", run_id, outcome)
    if state != "success":
        raise RuntimeError(
            f"train_model on the warm-up window ({run_id}) ended {state}: {outcome}; see its log in the "
            "Airflow UI, fix the cause, then run make simulate again"
        )
    rows = []
    for number, (day, scenario) in enumerate(days, start=1):
        champion = champion_version(client, name)
        if champion is None:
            raise RuntimeError(f"{name} has no champion to serve: run `make demo` first (it trains one)")
        wait_until_serving(services.SERVING_URL, str(champion.version))
        serve_day(services.SERVING_URL, use_case, day, scenario, rows_per_day)
        since = dt.datetime.now(dt.UTC).isoformat()
        # Monitoring alone decides when to retrain: the batch lands without starting train_model.
        ingest = demo.trigger_days(
            api, ((day, scenario),), stamp=f"sim{stamp}", start_training=False, rows=rows_per_day
        )
        demo.wait_for_runs(api, ingest)
        # The validated_transactions Asset still starts train_model, which skips; say so if it trained.
        landed = [demo.training_outcome(api, r) for r in demo.wait_for_training(api, since, allow_none=True)]
        landed = [outcome.split(":")[0] for outcome in landed if not outcome.startswith("skipped")]
        run_id = f"sim__monitor__{day}__{stamp}"
        api.trigger(
            demo.MONITOR_DAG,
            run_id,
            {"end_day": day, "window_days": 1, "dry_run": False, "overrides": SIMULATION_GUARD_OVERRIDES},
        )
        since = dt.datetime.now(dt.UTC).isoformat()
        state = demo.wait_for_run(api, demo.MONITOR_DAG, run_id)
        check = api.task_result(demo.MONITOR_DAG, run_id, "check") or {}
        retrain = ""
        if check.get("action") == "trigger":
            runs = demo.wait_for_training(api, since, allow_none=True)
            retrain = "; ".join(demo.training_outcome(api, r).split(":")[0] for r in runs)
        row = served_day(storage, use_case, day, rows=rows_per_day)
        retrain = "; ".join([*(f"on landing: {o}" for o in landed), *([retrain] if retrain else [])])
        row.update(scenario=scenario, monitor=check.get("action", state), retrain=retrain)
        rows.append(row)
        log.info("Simulated day %d/%d %s (%s): %s", number, len(days), day, scenario, row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``make simulate DAYS=n``: the closed loop over n days through the running stack; print the timeline."""
    import argparse
    import os

    from mlloop.config import get_settings
    from mlloop.ops import services
    from mlloop.storage import Storage

    parser = argparse.ArgumentParser(
        prog="python -m mlloop.ops.simulate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--days", type=int, default=5, help="simulated days (each: serve, land, monitor)")
    parser.add_argument(
        "--end-back", type=int, default=21, help="the last simulated day is this many days before today"
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
        help="transactions per simulated day, served and landed (default: the use case's rows_per_day); "
        "more rows narrow the day-to-day spread of the served PR-AUC",
    )
    args = parser.parse_args(argv)
    if args.rows is not None and not 1_000 <= args.rows <= 1_000_000:
        parser.error(f"--rows {args.rows}: use 1000..1000000 transactions per day")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.update({k: v for k, v in services.stack_env().items() if k.startswith("MLLOOP_")})
    get_settings.cache_clear()
    days = simulation_days(args.days, args.end_back, args.drift)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows = run_simulation(days, stamp, args.rows)
    title = f"mlloop simulation {stamp}: {args.days} days, drifts {', '.join(args.drift) or 'none'}"
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
