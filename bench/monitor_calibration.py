"""Benchmark: how often the monitor's decisions are wrong, measured offline on generated days.

Run: ``.venv/bin/python bench/monitor_calibration.py [--starts 3] [--clean-days 60] [--drift-days 3]
[--rows 20000] [--rows-60k-starts 1] [--workers 2]``. The functions ``monitor_<use case>`` runs
(``check_evidence``, ``decide``), through ``mlloop.monitoring.replay``, with no stack:

- per start date, a week of history lands first (a deployment's champion learns days whose 7-day history
  features saw earlier days; without them its features come from a cold start no later day has), then the
  champion is trained with the project's trainer on 4 clean days (labels known as on the day after its last
  day plus ``label_maturity_days``, as the default training window sees them);
- then ``--clean-days`` clean days follow, each checked alone ``--label-age`` days after it (as the demo
  checks its days: most labels known): a clean day that fires is a false alarm;
- then, per drift scenario of the generator, ``--drift-days`` days of a lasting drift, each checked the
  same way: the detection delay is the number of drifted days before the first one that fires (0: the
  first drifted day fires; null: none did).
The same at 60,000 rows a day (``--rows-60k-starts`` starts). No threshold is fitted here: the monitor's
policy is the use case's (``load_monitor_config(use_case=...)``).

Also the promotion gate (``evaluate_gate``, the use case's policy) on random, constant and perfect scores at
base rates 1%, 10%, 35% and 50% (holdouts of 5,000 rows; the precision target half-way between the base
rate and 1, as such a use case would declare it): ``random_model_promotions`` counts the base rates at
which the random model was promoted.

Prints human lines, then exactly one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

DRIFTS = ("covariate_amount", "covariate_new_categories", "covariate_channel", "prior", "concept")
BASE_RATES = (0.01, 0.10, 0.35, 0.50)
HISTORY_DAYS = 7  # the longest history feature window


def run_start(start: date, *, rows: int, clean_days: int, drift_days: int, label_age: int) -> dict[str, Any]:
    """Run one start date in a data root of its own, removed afterwards (``_run_start``)."""
    root = tempfile.mkdtemp(prefix="mlloop-bench-monitor-")
    try:
        return _run_start(
            root, start, rows=rows, clean_days=clean_days, drift_days=drift_days, label_age=label_age
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_start(
    root: str, start: date, *, rows: int, clean_days: int, drift_days: int, label_age: int
) -> dict[str, Any]:
    """Train a champion on 4 clean days from ``start``, then check clean days and each drift scenario."""
    from mlloop.config import get_settings
    from mlloop.monitoring.replay import check_days, land_days, train_champion
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    started = time.perf_counter()
    use_case = load_use_case(get_settings().use_case)
    storage = Storage(root)
    window = use_case.training.window_days
    history = [(start - timedelta(days=HISTORY_DAYS - i), "none") for i in range(HISTORY_DAYS)]
    land_days(storage, use_case, history, rows)
    train = [(start + timedelta(days=i), "none") for i in range(window)]
    trained_on = land_days(storage, use_case, train, rows)
    trained_at = start + timedelta(days=window + use_case.label_maturity_days)
    champion = train_champion(storage, use_case, trained_on, trained_at)
    first = start + timedelta(days=window)
    monitored = [(first + timedelta(days=i), "none") for i in range(clean_days)]
    for n, scenario in enumerate(DRIFTS):
        block = first + timedelta(days=clean_days + n * drift_days)
        monitored += [(block + timedelta(days=i), scenario) for i in range(drift_days)]
    land_days(storage, use_case, monitored, rows)
    checked_at = [
        datetime.combine(d + timedelta(days=label_age), day_time(12), tzinfo=UTC) for d, _ in monitored
    ]
    checks = check_days(storage, use_case, champion, monitored, checked_at, overrides={"cooldown_hours": 0})
    clean = [c for c in checks if c.scenario == "none"]
    delays: dict[str, int | None] = {}
    for scenario in DRIFTS:
        fired = [c.retrains for c in checks if c.scenario == scenario]
        delays[scenario] = fired.index(True) if True in fired else None
    return {
        "start": start.isoformat(),
        "rows_per_day": rows,
        "clean_days": len(clean),
        # A clean day whose decision asks for a retrain; a fire on prediction drift alone that the next
        # check did not confirm (confirm_prediction_drift) retrains nothing and is counted apart.
        "false_alarms": sum(c.retrains for c in clean),
        "unconfirmed_alarms": sum(bool(c.unconfirmed) for c in clean),
        "false_alarm_rules": sorted({rule for c in clean if c.retrains for rule in c.fired_rules}),
        "clean_findings": sum(bool(c.findings) for c in clean),
        "detection_delay_days": delays,
        "drift_rules": {
            s: sorted({r for c in checks if c.scenario == s for r in c.fired_rules}) for s in DRIFTS
        },
        "false_alarm_days": [f"{c.day}: {c.reason[:300]}" for c in clean if c.retrains],
        "unconfirmed_days": [f"{c.day}: {c.reason[:300]}" for c in clean if c.unconfirmed],
        "seconds": round(time.perf_counter() - started, 1),
    }


def gate_on_no_skill(seed: int = 7, rows: int = 5000) -> dict[str, Any]:
    """Run the gate on random, constant and perfect scores at each base rate; return what it promoted."""
    import numpy as np
    import pandas as pd

    from mlloop.config import get_settings
    from mlloop.promotion import ScoredModel, evaluate_gate, load_gate_config
    from mlloop.usecase import load_use_case

    use_case = load_use_case(get_settings().use_case)
    rng = np.random.default_rng(seed)
    promoted: dict[str, dict[str, bool]] = {}
    for rate in BASE_RATES:
        # A use case at this base rate declares a precision target above it (half-way to 1 here); the
        # gate refuses one at or below the base rate, which every threshold meets.
        overrides = {"slice_columns": [], "fixed_precision": round((1 + rate) / 2, 3)}
        config = load_gate_config(overrides, use_case=use_case)
        labels = (rng.random(rows) < rate).astype(np.int8)
        holdout = pd.DataFrame({use_case.target_column: labels})
        models = {
            "random": rng.random(rows),
            "constant": np.full(rows, 0.5),
            "perfect": labels + rng.random(rows) * 0.1,
        }
        promoted[str(rate)] = {}
        for name, scores in models.items():
            model = ScoredModel(f"{name}/{rate}", scores, batch_latency_ms_per_1k_rows=1.0, size_mb=1.0)
            decision = evaluate_gate(
                model, None, holdout, target_column=use_case.target_column, config=config
            )
            promoted[str(rate)][name] = bool(decision.promote)
    return promoted


def main(argv: list[str] | None = None) -> int:
    """Run the offline monitor and gate checks; print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="start dates at --rows rows a day")
    parser.add_argument("--clean-days", type=int, default=60, help="clean days checked per start")
    parser.add_argument("--drift-days", type=int, default=3, help="days of each drift scenario per start")
    parser.add_argument("--rows", type=int, default=20_000, help="rows a day (the default volume)")
    parser.add_argument("--rows-60k-starts", type=int, default=1, help="start dates at 60,000 rows a day")
    parser.add_argument("--label-age", type=int, default=12, help="days between a day and its check")
    parser.add_argument("--workers", type=int, default=2, help="start dates run at once (processes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    first = date(2025, 2, 3)
    span = HISTORY_DAYS + 4 + args.clean_days + len(DRIFTS) * args.drift_days + 7
    plan = [(args.rows, i) for i in range(args.starts)]
    plan += [(60_000, args.starts + i) for i in range(args.rows_60k_starts)]
    runs = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        pending = [
            pool.submit(
                run_start,
                first + timedelta(days=i * span + HISTORY_DAYS),
                rows=rows,
                clean_days=args.clean_days,
                drift_days=args.drift_days,
                label_age=args.label_age,
            )
            for rows, i in plan
        ]
        for done in as_completed(pending):
            run = done.result()
            runs.append(run)
            print(
                f"{run['start']} {run['rows_per_day']:>6} rows/day: "
                f"{run['false_alarms']}/{run['clean_days']} clean days fired "
                f"{run['false_alarm_rules'] or ''} ({run['unconfirmed_alarms']} unconfirmed); "
                f"delays {run['detection_delay_days']} "
                f"({run['seconds']:.0f}s)",
                flush=True,
            )
    runs.sort(key=lambda r: (r["rows_per_day"], r["start"]))
    gate = gate_on_no_skill()
    for rate, outcome in gate.items():
        print(
            f"gate at base rate {rate}: "
            + ", ".join(f"{m} {'promoted' if p else 'rejected'}" for m, p in outcome.items())
        )

    def summary(selected: list[dict[str, Any]]) -> dict[str, Any]:
        clean = sum(r["clean_days"] for r in selected)
        alarms = sum(r["false_alarms"] for r in selected)
        waiting = sum(r["unconfirmed_alarms"] for r in selected)
        worst: dict[str, int | None] = {}
        for scenario in DRIFTS:
            delays = [r["detection_delay_days"][scenario] for r in selected]
            worst[scenario] = None if None in delays or not delays else max(delays)
        return {
            "clean_days": clean,
            "false_alarms": alarms,
            "false_alarm_rate": round(alarms / clean, 4) if clean else None,
            "unconfirmed_alarms": waiting,
            "detection_delay_days": worst,
        }

    default = [r for r in runs if r["rows_per_day"] == args.rows]
    result = {
        "bench": "monitor_calibration",
        **summary(default),
        "rows_per_day": args.rows,
        "rows_60k": summary([r for r in runs if r["rows_per_day"] == 60_000]),
        "random_model_promotions": sum(o["random"] for o in gate.values()),
        "constant_model_promotions": sum(o["constant"] for o in gate.values()),
        "perfect_model_promotions": sum(o["perfect"] for o in gate.values()),
        "base_rates": list(BASE_RATES),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
