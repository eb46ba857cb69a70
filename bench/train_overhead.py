"""Benchmark: train_card_fraud through Airflow against the same steps called directly, on the same snapshot.

Run: ``.venv/bin/python bench/train_overhead.py [--rows 1000000] [--days 5]``. Starts a throwaway embedded
stack (Airflow + MLflow on free ports, state in a temporary folder), ingests ``--days`` generated days of
``--rows / --days`` rows each straight through the ingestion functions (untimed), builds the snapshot
once (untimed, so both sides find it), then times:

- airflow: a manual ``train_card_fraud`` run (snapshot, train in a subprocess, gate, promote) from the REST
  trigger until the run is finished, through the real scheduler and LocalExecutor, after one untimed
  ``monitor_card_fraud`` run has started the executor's workers (as in any deployment that has been up);
- direct: the same steps called one after the other in one fresh Python script (``assemble_snapshot``,
  ``train``, ``gate_challenger``, ``promote_or_reject``), timed from its start, imports included once, to
  its end; it registers under another model name so neither side has a champion to beat.

Prints a few human lines, then one line of JSON with both wall times and their ratio (target <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mlloop.orchestration.names import dag_names

USE_CASE = "card_fraud"  # the generated use case the stack's demo data belongs to
MONITOR_DAG = dag_names(USE_CASE).monitor
TRAIN_DAG = dag_names(USE_CASE).train

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_DAY = date(2026, 1, 5)  # old enough that every label has arrived
log = logging.getLogger("bench.train_overhead")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _services(env: dict[str, str], command: str) -> None:
    argv = [sys.executable, "-m", "mlloop.ops.services", command]
    subprocess.run(argv, env=env, cwd=REPO_ROOT, check=True, timeout=600)


def _ingest(days: list[date], rows: int) -> None:
    """Land, validate and publish each day (what ingest_card_fraud does), untimed."""
    from mlloop.config import get_settings
    from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    settings = get_settings()
    storage, use_case = Storage.from_settings(settings), load_use_case(USE_CASE)
    for day in days:
        started = time.perf_counter()
        batch = land_batch(storage, use_case, day, rows=rows)
        validate_landed_batch(storage, use_case, batch)
        publish_validated(storage, use_case, batch, b"bench-pii-key-0123456789abcdef!!")
        log.info("ingested %s: %d rows in %.1fs", day, rows, time.perf_counter() - started)


def _direct_script(
    env: dict[str, str], window: int, end_day: str, seed: int
) -> tuple[float, dict[str, float]]:
    """Run the direct script in a fresh interpreter; return its wall time and its steps' times."""
    argv = [sys.executable, __file__, "--direct", str(window), end_day, str(seed)]
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=1800
    )
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(done.stdout.strip().splitlines()[-1])


def _direct(window: int, end_day: str, seed: int) -> dict[str, float]:
    """Run snapshot -> train -> gate -> promote in this process; return each step's wall time."""
    from mlloop.training.fit import TrainConfig
    from mlloop.training.pipeline import assemble_snapshot, gate_challenger, promote_or_reject
    from mlloop.training.train import train

    steps: dict[str, float] = {}
    started = last = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[step], last = round(now - last, 1), now

    snap = assemble_snapshot(window, end_day, as_of=datetime.now(UTC), use_case=USE_CASE)
    lap("snapshot")
    result = train(TrainConfig(snapshot=snap["digest"], seed=seed, dag_run_id=f"bench-{time.time_ns()}"))
    lap("train")
    decision = gate_challenger(result, None, use_case=USE_CASE)
    lap("gate")
    promote_or_reject(result, decision, actor="bench", promote=decision["promote"], use_case=USE_CASE)
    lap("promote")
    steps["total"] = round(time.perf_counter() - started, 1)
    return steps


def _warm_executor(api: Any) -> None:
    """Run monitor_card_fraud once (no champion yet: quiet in seconds), untimed.

    The LocalExecutor starts its workers on the first task, from a forkserver that imports the tasks'
    libraries then (``[scheduler] mp_forkserver_preload``); a running deployment has paid that long before.
    """
    from mlloop.ops.demo import wait_for_run

    api.wait_for_dag(MONITOR_DAG)
    api.set_paused(MONITOR_DAG, False)
    run_id = f"bench-warm-{time.time_ns()}"
    started = time.perf_counter()
    api.trigger(MONITOR_DAG, run_id, {"dry_run": True})
    state = wait_for_run(api, MONITOR_DAG, run_id)
    log.info("executor warm-up (%s, untimed): %s in %.1fs", MONITOR_DAG, state, time.perf_counter() - started)


def _through_airflow(
    env: dict[str, str], window: int, end_day: str, seed: int
) -> tuple[float, str, dict[str, float]]:
    """Trigger train_card_fraud and wait for it; return the wall time, the final state and task durations."""
    from mlloop.ops.airflow_api import AirflowAPI

    port = env["MLLOOP_AIRFLOW_PORT"]
    password = next(
        line.split("=", 1)[1]
        for line in (Path(env["MLLOOP_STATE_DIR"]) / ".env").read_text().splitlines()
        if line.startswith("MLLOOP_AIRFLOW_PASSWORD=")
    )
    api = AirflowAPI(f"http://127.0.0.1:{port}", "admin", password)
    api.wait_for_dag(TRAIN_DAG)
    api.set_paused(TRAIN_DAG, False)
    _warm_executor(api)
    run_id = f"bench-{time.time_ns()}"
    started = time.perf_counter()
    api.trigger(TRAIN_DAG, run_id, {"window_days": window, "end_day": end_day, "seed": seed})
    while (state := api.run_state(TRAIN_DAG, run_id)) not in {"success", "failed"}:
        time.sleep(1)
    elapsed = time.perf_counter() - started
    tis = api.get(f"/dags/{TRAIN_DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    tasks = {ti["task_id"]: ti["duration"] and round(ti["duration"], 1) for ti in tis if ti["duration"]}
    log.info("airflow run %s: %s in %.1fs, task durations %s", run_id, state, elapsed, tasks)
    return elapsed, state, tasks


def main() -> int:
    """Set up, time both sides, print the JSON line; the stack is stopped whatever happens."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the snapshot, all days together")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--direct", nargs=3, metavar=("WINDOW", "END_DAY", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct:  # the peer: one plain script, started fresh by the parent
        print(json.dumps(_direct(int(args.direct[0]), args.direct[1], int(args.direct[2]))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    state = Path(tempfile.mkdtemp(prefix="mlloop-bench-overhead-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "MLLOOP_STATE_DIR": str(state),
        "MLLOOP_DATA_ROOT": str(state / "data"),
        "MLLOOP_AIRFLOW_PORT": str(_free_port()),
        "MLLOOP_MLFLOW_PORT": str(_free_port()),
        "MLLOOP_SERVING_PORT": str(_free_port()),
    }
    days = [FIRST_DAY + timedelta(days=i) for i in range(args.days)]
    end_day = days[-1].isoformat()
    _services(env, "up")
    try:
        os.environ |= {
            "MLLOOP_DATA_ROOT": env["MLLOOP_DATA_ROOT"],
            "MLLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{env['MLLOOP_MLFLOW_PORT']}",
        }
        _ingest(days, args.rows // args.days)
        from mlloop.training.pipeline import assemble_snapshot

        warm = assemble_snapshot(args.days, end_day, as_of=datetime.now(UTC), use_case=USE_CASE)
        log.info("snapshot %s: %d rows (built once, untimed)", warm["digest"][:12], warm["rows"])
        airflow_s, state_name, airflow_tasks = _through_airflow(env, args.days, end_day, args.seed)
        direct_env = os.environ | {"MLLOOP_MODEL_NAME": "fraud-detector-bench-direct"}
        direct_s, direct_steps = _direct_script(direct_env, args.days, end_day, args.seed)
        log.info("direct: %.1fs, steps %s", direct_s, direct_steps)
    finally:
        _services(env, "down")
    print(
        json.dumps(
            {
                "bench": "train_overhead",
                "rows": warm["rows"],
                "airflow_s": round(airflow_s, 1),
                "direct_s": round(direct_s, 1),
                "ratio": round(airflow_s / direct_s, 3),
                "airflow_run": state_name,
                "airflow_tasks_s": airflow_tasks,
                "direct_steps_s": direct_steps,
                "target_ratio": 1.25,
            }
        )
    )
    return 0 if state_name == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
