"""Benchmark: check_drift (Evidently on quantile sketches) against Evidently's DataDriftPreset on full frames.

Run: ``.venv/bin/python bench/drift.py [--rows 1000000] [--sample-rows 50000]``. Data: the card_fraud
features (``build_use_case_features``: all 23 feature columns of the spec, 18 numeric and 5 categorical)
of generated transactions, seed 42. The reference is a clean week (2026-01-05..11, Monday to Sunday,
``--rows`` rows spread over the 7 days, features built over the whole week so history features see
earlier days); each current window is the following week (2026-01-12..18) with ``--rows`` rows under
one drift scenario of the generator (none, covariate_amount, covariate_new_categories, covariate_channel,
prior, concept). Same weekdays and rows per day on both sides, so day_of_week and the per-customer
history features are comparable.

Per scenario it times the plain peer (``evidently_drift``: ``DataDriftPreset`` on the full frames) and
``check_drift`` (including sketching the reference; ``profiled_s`` reuses a ``ReferenceProfile``), one
run each after a warm-up that imports Evidently, and compares every column's verdict and score. A child
process measures the check's peak memory at full size on the feature columns of the last window
(tracemalloc peak of the check, and the child's peak RSS including both frames and the libraries).
Prints human lines, then exactly one JSON line; ``ratio`` is peer_s / ours_s (how many times faster
check_drift is), medians over the scenarios.

Calibration (``calibration`` in the JSON line; ``--only-calibration`` runs it alone): at the monitor's
sizes (``--calibration-rows`` per day, default 20,000: a 4-day reference of 80,000 rows after 7 warm-up
days of history, one-day windows), per anchor day and seed, it times ``calibrate_drift`` of the
drifted-share threshold (its default: time-ordered and random-row splits, the more conservative kept),
then counts the clean days after the reference that fire (``--clean-days`` per anchor; also under each
kind of split alone) and, per drift scenario, whether a day of it fires. The windows are judged with
``drift_verdicts`` (the verdicts ``check_drift`` returns, without its report). Also times one
calibration at 3x the rows (the 60k-rows-a-day volume).

``--seasons`` runs only flight_delay on real data (``season_figures``): its June champion checked in July
and December with each column judged against its own block-to-block spread, and the same bounds on every
week of 2013. ``--bound-scales`` runs only the false-alarm rates of that bound on simulated nulls
(``bound_scale_rates``). Both print one JSON line too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pandas as pd

from mlloop.data.generator import generate_day
from mlloop.data.scenarios import DRIFT_SCENARIOS
from mlloop.features import build_use_case_features, feature_columns
from mlloop.monitoring.drift import (
    DEFAULT_SAMPLE_ROWS,
    ReferenceProfile,
    calibrate_drift,
    check_drift,
    drift_verdicts,
    evidently_drift,
    prediction_bound,
)
from mlloop.usecase import load_use_case

SEED = 42
REFERENCE_START = dt.date(2026, 1, 5)  # a Monday
CURRENT_START = dt.date(2026, 1, 12)  # the Monday after
USE_CASE = load_use_case("card_fraud")
CATEGORICAL = list(USE_CASE.features.categorical)
NUMERIC = [c for c in feature_columns(USE_CASE.features) if c not in CATEGORICAL]
ANCHORS = ((dt.date(2026, 3, 2), 42), (dt.date(2025, 7, 14), 7), (dt.date(2027, 1, 4), 1234))  # (day, seed)
WARM_UP_DAYS = 7  # the longest history window: the reference starts with full history, as a snapshot does
REFERENCE_DAYS = 4  # train_<use case>'s default window


def week_features(start: dt.date, rows: int, scenario: str) -> pd.DataFrame:
    """Return the features of 7 generated days from ``start`` (``rows`` in all) under one scenario."""
    per_day = [rows // 7 + (1 if day < rows % 7 else 0) for day in range(7)]
    days = [
        generate_day(start + dt.timedelta(days=day), rows=count, seed=SEED, scenario=scenario).transactions
        for day, count in enumerate(per_day)
    ]
    return build_use_case_features(pd.concat(days, ignore_index=True), USE_CASE)


def timed(fn: Any) -> tuple[Any, float]:
    """Return fn()'s result and its wall time in seconds."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def peak_rss_mib() -> float:
    """Return this process's peak resident memory in MiB (VmHWM: unlike ru_maxrss, not the parent's)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux counts KiB; a fork inherits it


def memory_probe(reference_path: str, current_path: str, sample_rows: int) -> None:
    """Child process: load both frames, run check_drift under tracemalloc, print peak figures as JSON."""
    reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
    warm = slice(None, None, max(1, len(reference) // 5000))
    check_drift(reference.iloc[warm], current.iloc[warm], numeric=NUMERIC, categorical=CATEGORICAL)
    loaded_mib = peak_rss_mib()
    tracemalloc.start()
    check_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, sample_rows=sample_rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    figures = {
        "check_peak_mib": round(peak / 2**20, 1),
        "process_peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_check_mib": round(loaded_mib, 1),
    }
    print(json.dumps(figures))


def measure_memory(reference: pd.DataFrame, current: pd.DataFrame, sample_rows: int) -> dict[str, float]:
    """Run the memory probe in a fresh process on the given frames; return its figures."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / "reference.parquet"), str(Path(folder) / "current.parquet")]
        reference[NUMERIC + CATEGORICAL].to_parquet(paths[0])  # the check reads the feature columns only
        current[NUMERIC + CATEGORICAL].to_parquet(paths[1])
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", *paths, "--sample-rows", str(sample_rows)],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def monitored_days(
    start: dt.date, seed: int, rows: int, scenarios: list[str]
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Return a 4-day clean reference after warm-up days from ``start`` and one day per scenario after it."""
    plan = ["none"] * (WARM_UP_DAYS + REFERENCE_DAYS) + scenarios
    delivered = [
        generate_day(start + dt.timedelta(days=i), rows=rows, seed=seed, scenario=scenario).transactions
        for i, scenario in enumerate(plan)
    ]
    built = build_use_case_features(pd.concat(delivered, ignore_index=True), USE_CASE)
    index = (built["event_time"].dt.date - start).map(lambda delta: delta.days).to_numpy()
    reference = built[(index >= WARM_UP_DAYS) & (index < WARM_UP_DAYS + REFERENCE_DAYS)]
    days = [built[index == WARM_UP_DAYS + REFERENCE_DAYS + i] for i in range(len(scenarios))]
    return reference.reset_index(drop=True), [d.reset_index(drop=True) for d in days]


def calibration_figures(rows: int, clean_days: int) -> dict[str, Any]:
    """Time the drifted-share calibration and count clean-day alarms and drift detections per anchor."""
    drifts = [s for s in DRIFT_SCENARIOS if s != "none"]
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    alarms = {"both": 0, "time": 0, "random": 0}
    detected = dict.fromkeys(drifts, 0)
    thresholds = []
    for start, seed in ANCHORS:
        reference, days = monitored_days(start, seed, rows, ["none"] * clean_days + drifts)
        cpu_started = time.process_time()
        calibration = calibrate_drift(
            reference, rows, numeric=NUMERIC, categorical=CATEGORICAL, time_column="event_time"
        )
        cpu_seconds.append(time.process_time() - cpu_started)
        seconds.append(calibration.seconds)
        thresholds.append(calibration.threshold)
        shares = [
            drift_verdicts(reference, d, numeric=NUMERIC, categorical=CATEGORICAL).drift_share for d in days
        ]
        alarms["both"] += sum(calibration.fires(share) for share in shares[:clean_days])
        for kind, threshold in calibration.thresholds.items():
            alarms[kind] += sum(share > threshold for share in shares[:clean_days])
        for scenario, share in zip(drifts, shares[clean_days:], strict=True):
            detected[scenario] += calibration.fires(share)
        print(f"calibration {start} seed {seed}: {calibration.describe()} ({calibration.seconds:.1f}s)")
    large, _ = monitored_days(ANCHORS[0][0], ANCHORS[0][1], 3 * rows, [])
    at_scale = calibrate_drift(
        large, 3 * rows, numeric=NUMERIC, categorical=CATEGORICAL, time_column="event_time"
    )
    windows = clean_days * len(ANCHORS)
    print(
        f"calibration: {statistics.median(seconds):.1f}s ({statistics.median(cpu_seconds):.1f}s CPU) for "
        f"{calibration.splits} splits of each kind at {len(reference):,} reference rows / {rows:,}-row "
        f"windows ({at_scale.seconds:.1f}s at {len(large):,} / {3 * rows:,}); clean days firing: "
        f"{alarms['both']} of {windows} (time-ordered splits alone: {alarms['time']}, random rows alone: "
        f"{alarms['random']}); drift days caught (of {len(ANCHORS)}): {detected}"
    )
    return {
        "rows_reference": len(reference),
        "rows_window": rows,
        "splits": calibration.splits,
        "false_alarm_target": calibration.false_alarm,
        "seconds": round(statistics.median(seconds), 2),
        "cpu_seconds": round(statistics.median(cpu_seconds), 2),
        "seconds_3x_rows": round(at_scale.seconds, 2),
        "thresholds": [round(t, 4) for t in thresholds],
        "clean_windows": windows,
        "false_alarms": alarms["both"],
        "false_alarms_time_splits": alarms["time"],
        "false_alarms_random_splits": alarms["random"],
        "detected": detected,
        "anchors": len(ANCHORS),
    }


SEASON_CHAMPION = (dt.date(2013, 6, 3), dt.date(2013, 6, 30))  # flight_delay's demo window
SEASON_WINDOWS = ("2013-07-03", "2013-07-07", "2013-12-03", "2013-12-07")
OWN_LAST_DAYS = 3  # the champion's own last days, judged against the days before them
LABELS_KNOWN = dt.timedelta(days=2)  # checked two days after the window: every flight's outcome is known


def season_figures() -> dict[str, Any]:
    """Replay flight_delay's monitor offline: the June champion checked in July and December.

    The monitor's own functions (``mlloop.monitoring.replay``): the 2013 days are exported into an inbox,
    landed and validated, the champion trained on 2013-06-03..06-30 as the demo trains it, and each window
    end checked as ``monitor_flight_delay`` checks it (widened back to ``drift_min_rows``). The champion's
    last days are also judged against the days before them (``calibrate_column_bounds`` on its snapshot).
    """
    import os

    from mlloop.config import get_settings

    root = tempfile.mkdtemp(prefix="mlloop-bench-seasons-")
    os.environ["MLLOOP_DATA_ROOT"] = root
    get_settings.cache_clear()
    try:
        return _season_figures(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _season_figures(root: str) -> dict[str, Any]:
    """Land, train and check flight_delay's seasons in the data root ``root`` (``season_figures``)."""
    from mlloop.data.flights import export_days
    from mlloop.features.spec import feature_columns as spec_columns
    from mlloop.ingestion.batches import open_inbox
    from mlloop.monitoring.decision import load_monitor_config
    from mlloop.monitoring.drift import calibrate_column_bounds, judge_window
    from mlloop.monitoring.replay import check_days, land_days, train_champion
    from mlloop.storage import Storage
    from mlloop.training.snapshot import load_snapshot

    use_case = load_use_case("flight_delay")
    config = load_monitor_config(use_case=use_case)
    first, last = SEASON_CHAMPION
    champion_days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    ends = [dt.date.fromisoformat(d) for d in SEASON_WINDOWS]
    before = [e - dt.timedelta(days=i) for e in ends for i in range(config.drift_max_days, -1, -1)]
    days = sorted(set(champion_days) | {d for d in before if d > last})
    export_days(open_inbox(use_case), "", days)
    storage = Storage(root)
    landed = land_days(storage, use_case, [(d, "none") for d in days])
    trained = [d.isoformat() for d in champion_days if d.isoformat() in landed]
    champion = train_champion(storage, use_case, trained, last + dt.timedelta(days=1))
    noon = [dt.datetime.combine(e + LABELS_KNOWN, dt.time(12), tzinfo=dt.UTC) for e in ends]
    checks = check_days(storage, use_case, champion, [(e, "none") for e in ends], noon)
    windows = []
    for check in checks:
        evidence = check.evidence
        judged = evidence["column_bounds"]
        windows.append(
            {
                "end": check.day,
                "days": evidence["monitored_days"],
                "fired": check.fired_rules,
                "drifted": evidence["drifted_columns"],
                "top_drifted": [
                    c for c, (s, b, m) in evidence["top_column_bounds"].items() if s > b and s >= m
                ],
                "columns": {c: [round(s, 3), round(b, 3)] for c, (s, b, _) in judged.items()},
                "prediction_drift": [
                    evidence["prediction_drift_score"],
                    evidence["prediction_drift_threshold"],
                ],
                "reason": check.reason,
            }
        )
        print(
            f"{check.day} (from {evidence['monitored_days'][0]}): fired {check.fired_rules}; "
            f"{check.reason[:600]}"
        )
    reference, _ = load_snapshot(storage, champion.snapshot_digest)
    columns = [c for c in spec_columns(use_case.features) if c not in use_case.drift_exclude]
    categorical = [c for c in columns if c in use_case.features.categorical]
    numeric = [c for c in columns if c not in categorical]
    day = reference[use_case.time_column].dt.date
    own_last = day > last - dt.timedelta(days=OWN_LAST_DAYS)
    earlier, recent = reference[~own_last].reset_index(drop=True), reference[own_last].reset_index(drop=True)
    bounds = calibrate_column_bounds(
        earlier, len(recent), numeric=numeric, categorical=categorical, time_column=use_case.time_column
    )
    result = drift_verdicts(earlier, recent, numeric=numeric, categorical=categorical)
    verdict = judge_window(
        bounds, result, config.drift_false_alarm_rate, top=[], reference=earlier, current=recent
    )
    own = {j.column: [round(j.score, 3), round(j.bound, 3)] for j in verdict.columns}
    print(
        f"champion's last {OWN_LAST_DAYS} days against its {len(earlier):,} earlier rows: "
        f"{verdict.drifted or 'quiet'}; {own}"
    )
    return {
        "champion_days": [first.isoformat(), last.isoformat()],
        "windows": windows,
        "own_last_days": {"rows": len(recent), "drifted": verdict.drifted, "columns": own},
        "year": year_sweep(use_case, numeric, categorical, config),
    }


def year_sweep(use_case: Any, numeric: list[str], categorical: list[str], config: Any) -> dict[str, Any]:
    """Judge, every week of 2013, the days right after a 28-day reference against its columns' own spread.

    The use case's features of the public table (``build_use_case_features``), the monitor's distances
    (``drift_verdicts``) and bounds (``calibrate_column_bounds``, ``judge_window``); each window is the
    three days after the reference, widened forward to ``drift_min_rows``. Nothing is trained.
    """
    from mlloop.data.flights import DELIVERY_COLUMNS, flights_table
    from mlloop.monitoring.drift import calibrate_column_bounds, judge_window

    table = flights_table()
    features = build_use_case_features(table[[*DELIVERY_COLUMNS, use_case.target_column]], use_case)
    day = table["day"].to_numpy()
    fired = []
    start = dt.date(2013, 1, 1)
    weeks = 0
    while start + dt.timedelta(days=38) <= dt.date(2013, 12, 30):
        window_start = start + dt.timedelta(days=28)
        reference = features[(day >= start) & (day < window_start)].reset_index(drop=True)
        end = window_start + dt.timedelta(days=2)
        while ((day >= window_start) & (day <= end)).sum() < config.drift_min_rows:
            end += dt.timedelta(days=1)
        window = features[(day >= window_start) & (day <= end)].reset_index(drop=True)
        bounds = calibrate_column_bounds(
            reference, len(window), numeric=numeric, categorical=categorical, time_column=use_case.time_column
        )
        result = drift_verdicts(reference, window, numeric=numeric, categorical=categorical)
        verdict = judge_window(
            bounds, result, config.drift_false_alarm_rate, top=[], reference=reference, current=window
        )
        weeks += 1
        if verdict.drifted:
            fired.append({"window": [window_start.isoformat(), end.isoformat()], "drifted": verdict.drifted})
        start += dt.timedelta(days=7)
    print(f"2013, weekly: {len(fired)} of {weeks} windows right after a 28-day reference fired: {fired}")
    return {"windows": weeks, "fired": fired}


def bound_scale_rates(draws: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """Measure how often one more null value passes the column bound, per scale, shape and block count.

    Student's one-sided prediction bound (``prediction_bound``) at 0.05/12 (Bonferroni over 12 columns,
    flight_delay's count), fed k values and judged on one more from the same distribution, ``draws`` times:
    the rate over the nominal one (1 = honest, < 1 conservative). Shapes: |normal| (a column whose level
    moves from day to day), |1 + normal| (a level plus noise) and the normed Wasserstein distance between
    2,000 and 6,000 draws of a log-normal (a heavy-tailed column's sampling noise alone, at the monitor's
    smallest window), for which the rate with Evidently's 0.1 also required is given too.
    """
    import math

    import numpy as np
    from scipy.stats import t

    rng = np.random.default_rng(seed)
    rate = 0.05 / 12
    quantiles = np.linspace(0.0005, 0.9995, 1000)
    noise = []
    for _ in range(3000):
        small, large = rng.lognormal(0, 1, 2000), rng.lognormal(0, 1, 6000)
        noise.append(
            np.mean(np.abs(np.quantile(small, quantiles) - np.quantile(large, quantiles))) / large.std()
        )
    pool = np.asarray(noise)
    shapes = {
        "abs_normal": lambda size: np.abs(rng.standard_normal(size)),
        "abs_level_plus_noise": lambda size: np.abs(1 + rng.standard_normal(size)),
        "wasserstein_noise_lognormal": lambda size: rng.choice(pool, size),
    }
    scales = {"log": (np.log, np.exp), "sqrt": (np.sqrt, np.square)}
    figures: dict[str, Any] = {}
    for shape, draw in shapes.items():
        for k in (3, 4, 6, 9, 15, 30):
            nulls, new = draw((draws, k)), draw(draws)
            for scale, (forward, back) in scales.items():
                values = forward(nulls)
                factor = t.ppf(1 - rate, k - 1) * math.sqrt(1 + 1 / k)
                bound = back(values.mean(axis=1) + factor * values.std(axis=1, ddof=1))
                # The same bound as the monitor's, vectorised over the draws:
                assert math.isclose(bound[0], prediction_bound(nulls[0], rate, scale), rel_tol=1e-9)
                figures.setdefault(shape, {}).setdefault(scale, {})[k] = round(
                    float(np.mean(new > bound) / rate), 2
                )
                if shape == "wasserstein_noise_lognormal":  # a distance, so Evidently's 0.1 applies too
                    figures[shape].setdefault(f"{scale}_and_evidently_0.1", {})[k] = round(
                        float(np.mean((new > bound) & (new >= 0.1)) / rate), 2
                    )
        print(f"bound scales, {shape}: rate / nominal by k blocks {figures[shape]}")
    return {"nominal_rate": rate, "draws": draws, "rate_over_nominal": figures}


def main() -> None:
    """Time the peer and check_drift per drift scenario, compare verdicts, measure peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the reference and of each window"
    )
    parser.add_argument("--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS)
    parser.add_argument("--scenarios", nargs="*", default=list(DRIFT_SCENARIOS), choices=DRIFT_SCENARIOS)
    parser.add_argument(
        "--calibration-rows", type=int, default=20_000, help="rows per day of the calibration"
    )
    parser.add_argument(
        "--clean-days", type=int, default=10, help="clean days checked per calibration anchor"
    )
    parser.add_argument("--only-calibration", action="store_true", help="run the calibration figures only")
    parser.add_argument(
        "--seasons", action="store_true", help="only flight_delay's June champion in July and December"
    )
    parser.add_argument(
        "--bound-scales", action="store_true", help="only the column bound's false-alarm rate per scale"
    )
    parser.add_argument("--memory-probe", nargs=2, metavar=("REFERENCE", "CURRENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.sample_rows)
        return
    if args.bound_scales:
        print(json.dumps({"bench": "drift", "bound_scales": bound_scale_rates()}))
        return
    if args.seasons:
        print(json.dumps({"bench": "drift", "seasons": season_figures()}))
        return
    if args.only_calibration:
        calibration = calibration_figures(args.calibration_rows, args.clean_days)
        print(json.dumps({"bench": "drift", "calibration": calibration}))
        return

    started = time.perf_counter()
    reference = week_features(REFERENCE_START, args.rows, "none")
    print(
        f"reference: {len(reference):,} rows ({REFERENCE_START} + 6 days, clean), {len(NUMERIC)} numeric + "
        f"{len(CATEGORICAL)} categorical columns, built in {time.perf_counter() - started:.1f}s"
    )
    warm = reference.iloc[:: max(1, len(reference) // 5000)]  # spread over the week: history present
    evidently_drift(warm, warm, numeric=NUMERIC, categorical=CATEGORICAL)  # imports Evidently for both
    check_drift(warm, warm, numeric=NUMERIC, categorical=CATEGORICAL)
    profile, profile_s = timed(
        lambda: ReferenceProfile.build(
            reference, numeric=NUMERIC, categorical=CATEGORICAL, sample_rows=args.sample_rows
        )
    )

    rows: list[dict[str, Any]] = []
    agree = total = 0
    max_diff = max_bound = 0.0
    bounds_hold = True
    current = reference
    for scenario in args.scenarios:
        current = week_features(CURRENT_START, args.rows, scenario)
        peer, peer_s = timed(
            lambda current=current: evidently_drift(
                reference, current, numeric=NUMERIC, categorical=CATEGORICAL
            )
        )
        ours, ours_s = timed(
            lambda current=current: check_drift(
                reference, current, numeric=NUMERIC, categorical=CATEGORICAL, sample_rows=args.sample_rows
            )
        )
        _, profiled_s = timed(
            lambda current=current: check_drift(profile, current, numeric=NUMERIC, categorical=CATEGORICAL)
        )
        peer_by = {c.column: c for c in peer.columns}
        differ = []
        for column in ours.columns:
            theirs = peer_by[column.column]
            same = column.drifted == theirs.drifted and column.method == theirs.method
            agree, total = agree + same, total + 1
            if not same:
                differ.append(column.column)
            diff = abs(column.score - theirs.score)
            max_diff, max_bound = max(max_diff, diff), max(max_bound, column.error_bound)
            bounds_hold &= diff <= column.error_bound + 1e-12
        print(
            f"{scenario:26s} peer {peer_s:6.2f}s  ours {ours_s:5.2f}s (profiled {profiled_s:4.2f}s)  "
            f"{peer_s / ours_s:5.1f}x  drifted {ours.drifted_names or 'none'}  disagree {differ or 'none'}"
        )
        rows.append(
            {
                "scenario": scenario,
                "peer_s": round(peer_s, 2),
                "ours_s": round(ours_s, 2),
                "profiled_s": round(profiled_s, 2),
                "drifted": ours.drifted_names,
                "peer_drifted": peer.drifted_names,
                "recomputed": ours.recomputed,
            }
        )

    memory = measure_memory(reference, current, args.sample_rows)
    print(
        f"peak memory of the check at {len(reference):,} + {len(current):,} rows: "
        f"{memory['check_peak_mib']} MiB allocated by the check (tracemalloc), "
        f"{memory['process_peak_rss_mib']} MiB peak RSS of the whole process (both frames loaded, libraries "
        f"imported: {memory['rss_before_check_mib']} MiB before the check)"
    )
    calibration = calibration_figures(args.calibration_rows, args.clean_days)
    peer_s = statistics.median(r["peer_s"] for r in rows)
    ours_s = statistics.median(r["ours_s"] for r in rows)
    print(
        f"max |score - peer score| {max_diff:.5f}, max error bound {max_bound:.5f}, "
        f"bounds hold: {bounds_hold}; total bench time {time.perf_counter() - started:.0f}s"
    )
    print(
        json.dumps(
            {
                "bench": "drift",
                "rows_reference": len(reference),
                "rows_current": args.rows,
                "columns": len(NUMERIC) + len(CATEGORICAL),
                "sample_rows": args.sample_rows,
                "peer_s": round(peer_s, 2),
                "ours_s": round(ours_s, 2),
                "ratio": round(peer_s / ours_s, 1),
                "profiled_s": round(statistics.median(r["profiled_s"] for r in rows), 2),
                "reference_profile_s": round(profile_s, 2),
                "agreement": round(agree / total, 4),
                "verdicts": total,
                "max_score_diff": round(max_diff, 5),
                "max_error_bound": round(max_bound, 5),
                "bounds_hold": bounds_hold,
                "peak_mib": memory["check_peak_mib"],
                "process_peak_rss_mib": memory["process_peak_rss_mib"],
                "rss_before_check_mib": memory["rss_before_check_mib"],
                "scenarios": rows,
                "calibration": calibration,
            }
        )
    )


if __name__ == "__main__":
    main()
