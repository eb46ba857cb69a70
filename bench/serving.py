"""Benchmark: the scoring service against ``mlflow models serve`` on the same registered model.

Run: ``.venv/bin/python bench/serving.py [--seconds 15] [--concurrency 8] [--use-cases 1]``. Sets up,
untimed, in a temporary folder: an MLflow server (SQLite, local artifacts) on a free port, three
generated days (20,000 rows each) ingested and snapshotted, one XGBoost model trained by the training
CLI's code with 200 rounds and promoted to ``champion``. Then it starts both servers on 127.0.0.1:

- ours: ``python -m mlloop.serving`` (request validation, history features, model, inference log),
  measured at ``POST /predict/card_fraud``. It serves a use-case folder of ``--use-cases`` declarations:
  card_fraud and copies of it with their own dataset and model (the same trained version registered
  under each copy's name and promoted), so with N > 1 every copy has a champion loaded, a follower
  polling the registry and a worker of its own while one use case takes the load;
- peer: ``mlflow models serve --env-manager local`` on the *same booster*, registered a second time as
  a pyfunc whose ``predict`` only maps the categorical columns onto the model's categories (the XGBoost
  flavour cannot take string categoricals from JSON). The peer gets the model's 23 ready-made features
  (``dataframe_split``); ours gets raw transactions and builds them. The peer does less work per row.

A separate process drives each server with the same load: ``--concurrency`` keep-alive HTTP/1.1
connections, each sending its next request as soon as the answer arrives, for ``--seconds`` after a
warm-up, once with single-row requests and once with 100-row batches (the same transactions for both
servers). Prints throughput and p50/p99 latency per case, then one JSON line; ``ratio`` is our single-row
throughput over the peer's (target >= 10, with our single-row p99 under 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow.pyfunc

REPO_ROOT = Path(__file__).resolve().parents[1]
DAYS = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(3)]
TRAFFIC_DAY = dt.date(2026, 3, 5)
ROWS_PER_DAY = 20_000
PII_KEY = "bench-pii-key-0123456789abcdef!!"
log = logging.getLogger("bench.serving")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f}s")
        time.sleep(0.5)


class _PeerModel(mlflow.pyfunc.PythonModel):  # pickled by value (cloudpickle); see module docstring
    """The booster behind a pyfunc: categoricals mapped onto the model's categories, then predict_proba."""

    def __init__(self, vocabularies: dict[str, list[str]]) -> None:
        self.vocabularies = vocabularies

    def load_context(self, context: Any) -> None:
        import xgboost as xgb

        self.model = xgb.XGBClassifier()
        self.model.load_model(context.artifacts["booster"])

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        import pandas as pd

        frame = model_input.copy()
        for column, vocabulary in self.vocabularies.items():
            frame[column] = pd.Categorical(frame[column], categories=vocabulary)
        return self.model.predict_proba(frame)[:, 1]


def _declare_use_cases(tmp: Path, tracking_uri: str, version: str, count: int) -> Path:
    """Write card_fraud (model bench-ours) and ``count - 1`` copies with champions; return the folder."""
    import mlflow
    import yaml

    from mlloop.registry.champion import promote
    from mlloop.usecase import USECASE_DIR

    folder = tmp / "usecases"
    folder.mkdir()
    base = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    client = mlflow.MlflowClient(tracking_uri, tracking_uri)
    trained = client.get_model_version("bench-ours", version)
    for i in range(1, count + 1):
        name, model = ("card_fraud", "bench-ours") if i == 1 else (f"card_fraud_{i}", f"bench-ours-{i}")
        declaration = {**base, "name": name, "model_name": model}
        if i > 1:
            declaration["dataset"] = f"transactions_{i}"
            client.create_registered_model(model)
            model_id = trained.model_id or trained.source.removeprefix("models:/")  # the logged model
            copy = client.create_model_version(model, source=trained.source, run_id=trained.run_id,
                                               tags=trained.tags, model_id=model_id)  # fmt: skip
            promote(client, model, copy.version, actor="bench", reason="bench", gate_report="-")
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    return folder


def _setup(tmp: Path, tracking_uri: str, use_cases: int) -> tuple[Path, str, list[dict[str, Any]], Any]:
    """Ingest, snapshot, train and promote; declare the use cases; register the peer pyfunc.

    Returns the use-case folder, the peer's name, our requests and the peer's features.
    """
    import mlflow

    from mlloop.config import get_settings
    from mlloop.data.generator import generate_day
    from mlloop.features.build import build_features, categorical_dtype, model_matrix
    from mlloop.ingestion.batches import ingest_day
    from mlloop.registry.champion import promote
    from mlloop.serving.client import request_rows
    from mlloop.storage import Storage
    from mlloop.training.fit import TrainConfig
    from mlloop.training.model_io import load_model, serving_frame
    from mlloop.training.train import train
    from mlloop.training.windows import snapshot_days
    from mlloop.usecase import load_use_case

    os.environ.update(
        MLLOOP_DATA_ROOT=str(tmp / "data"),
        MLLOOP_MLFLOW_TRACKING_URI=tracking_uri,
        MLLOOP_MODEL_NAME="bench-ours",
    )
    get_settings.cache_clear()
    storage, use_case = Storage(str(tmp / "data")), load_use_case("card_fraud")
    for day in DAYS:
        ingest_day(storage, use_case, day, PII_KEY.encode(), rows=ROWS_PER_DAY)
    manifest = snapshot_days(storage, use_case, DAYS, as_of=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    mlflow.set_tracking_uri(tracking_uri)
    result = train(TrainConfig(snapshot=manifest.digest, dag_run_id="bench-serving", max_rounds=200))
    client = mlflow.MlflowClient(tracking_uri, tracking_uri)
    promote(client, "bench-ours", result["version"], actor="bench", reason="bench", gate_report="-")
    model = load_model(f"models:/bench-ours/{result['version']}").model  # the booster, calibration aside
    log.info("model: %d trees (early stopping kept %s)", model.get_booster().num_boosted_rounds(),
             getattr(model, "best_iteration", "all"))  # fmt: skip

    booster_path = tmp / "booster.ubj"
    model.save_model(str(booster_path))
    spec = manifest.spec()
    vocabularies = {c: list(categorical_dtype(v).categories) for c, v in spec.categorical.items()}
    traffic = generate_day(TRAFFIC_DAY, rows=5000, seed=use_case.source.seed).transactions
    features = model_matrix(
        build_features(traffic, spec, key_column="transaction_id", time_column="event_time"),
        spec,
        manifest.feature_columns,
    )
    with mlflow.start_run(run_name="bench peer"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_PeerModel(vocabularies),
            artifacts={"booster": str(booster_path)},
            input_example=serving_frame(features.head(3)),
            registered_model_name="bench-peer",
        )
    log.info("peer registered as models:/bench-peer/%s", info.registered_model_version)
    folder = _declare_use_cases(tmp, tracking_uri, result["version"], use_cases)
    return folder, "bench-peer", request_rows(traffic, use_case), serving_frame(features)


def _bodies(ours_rows: list[dict[str, Any]], peer_frame: Any, batch: int) -> tuple[list[bytes], list[bytes]]:
    """Return the same transactions as request bodies for ours (raw rows) and the peer (features)."""
    ours, peer = [], []
    for start in range(0, len(ours_rows) - batch + 1, batch):
        chunk = ours_rows[start : start + batch]
        ours.append(json.dumps(chunk[0] if batch == 1 else chunk).encode())
        part = peer_frame.iloc[start : start + batch]
        split = json.loads(part.to_json(orient="split", index=False))
        peer.append(json.dumps({"dataframe_split": split}).encode())
    return ours, peer


async def _connection(host: str, port: int, path: str, bodies: list[bytes], offset: int, stop_at: float,
                      warm_until: float, latencies: list[float], errors: list[str],
                      extra_headers: str = "") -> None:  # fmt: skip
    """One keep-alive connection sending requests back to back until ``stop_at``."""
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    while (now := time.perf_counter()) < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
        ).encode()
        started = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        elapsed = time.perf_counter() - started
        status = status_line.split()[1] if len(status_line.split()) > 1 else b"?"
        if status != b"200":
            errors.append(status.decode())
        elif now >= warm_until:
            latencies.append(elapsed)
    writer.close()


def _drive(url: str, path: str, bodies: list[bytes], seconds: float, concurrency: int, queue: Any,
           extra_headers: str = "") -> None:  # fmt: skip
    """Load-generator process: ``concurrency`` connections for ``seconds`` after a 3 s warm-up."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        start = time.perf_counter()
        warm_until, stop_at = start + 3, start + 3 + seconds
        await asyncio.gather(
            *(
                _connection(
                    host,
                    int(port),
                    path,
                    bodies,
                    k * 7,
                    stop_at,
                    warm_until,
                    latencies,
                    errors,
                    extra_headers,
                )
                for k in range(concurrency)
            )
        )

    asyncio.run(main())
    queue.put({"latencies": latencies, "errors": len(errors), "seconds": seconds})


def _measure(url: str, path: str, bodies: list[bytes], seconds: float, concurrency: int,
             extra_headers: str = "") -> dict[str, float]:  # fmt: skip
    """Run the load generator in a separate process; return throughput and latency percentiles."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_drive, args=(url, path, bodies, seconds, concurrency, queue, extra_headers))
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(timeout=30)
    latencies = sorted(result["latencies"])
    if not latencies:
        raise RuntimeError(f"no successful request to {url}{path} ({result['errors']} errors)")

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    return {
        "rps": round(len(latencies) / result["seconds"], 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": result["errors"],
    }


# How the inference log and authentication are configured in each variant (MLLOOP_* settings).
LOG_VARIANTS = {
    "memory": {"MLLOOP_INFERENCE_WAL_SYNC": "off"},
    "wal_5ms": {"MLLOOP_INFERENCE_WAL_SYNC": "interval", "MLLOOP_INFERENCE_WAL_SYNC_MS": "5"},
    "wal_50ms": {"MLLOOP_INFERENCE_WAL_SYNC": "interval", "MLLOOP_INFERENCE_WAL_SYNC_MS": "50"},
    "wal_batch": {"MLLOOP_INFERENCE_WAL_SYNC": "batch"},
    "wal_5ms_auth": {"MLLOOP_INFERENCE_WAL_SYNC": "interval", "MLLOOP_INFERENCE_WAL_SYNC_MS": "5"},
}


def _measure_log_variants(tmp: Path, ours_env: dict[str, str], rows: list[dict[str, Any]],
                          args: argparse.Namespace) -> dict[str, dict[str, float]]:  # fmt: skip
    """Start one service per ``LOG_VARIANTS`` entry; measure single rows, rounds interleaved; return medians.

    Each variant's figures are the median over rounds of req/s and of p50/p99, and ``vs_memory``: the
    median over rounds of its req/s over the in-memory log's in the same round (with the range).
    """
    import statistics

    from mlloop.clock import now
    from mlloop.serving.auth import issue_key

    _, key = issue_key(tmp / "api-keys.json", "bench", ["card_fraud"], now())
    bodies = _single_bodies(rows)
    services: dict[str, tuple[str, str]] = {}
    procs = []
    try:
        for name, overrides in LOG_VARIANTS.items():
            port = _free_port()
            env = ours_env | overrides | {"MLLOOP_DATA_ROOT": str(tmp / f"served-{name}")}
            headers = ""
            if name.endswith("_auth"):
                env["MLLOOP_SERVING_API_KEYS_FILE"] = str(tmp / "api-keys.json")
                headers = f"Authorization: Bearer {key}\r\n"
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mlloop.serving", "--port", str(port), "--no-seed-history"],
                env=env, stdout=subprocess.DEVNULL, stderr=(tmp / f"ours-{name}.log").open("wb"),
            ))  # fmt: skip
            services[name] = (f"http://127.0.0.1:{port}", headers)
            _wait_http(f"{services[name][0]}/ready", procs[-1], f"the scoring service ({name})")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in services}
        for round_ in range(args.log_variants):
            for name, (url, headers) in services.items():
                runs[name].append(_measure(url, "/predict/card_fraud", bodies, args.seconds, args.concurrency,
                                           headers))  # fmt: skip
                log.info("round %d, %s: %s", round_ + 1, name, runs[name][-1])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    medians = {
        name: {
            m: round(statistics.median(r[m] for r in measured), 2)
            for m in ("rps", "p50_ms", "p99_ms", "errors")
        }
        for name, measured in runs.items()
    }
    for name, figures in medians.items():  # paired by round: the machine's load drifts between rounds
        ratios = [r["rps"] / m["rps"] for r, m in zip(runs[name], runs["memory"], strict=True)]
        figures["vs_memory"] = round(statistics.median(ratios), 3)
        figures["vs_memory_min"], figures["vs_memory_max"] = round(min(ratios), 3), round(max(ratios), 3)
    return medians


def _single_bodies(rows: list[dict[str, Any]]) -> list[bytes]:
    """Return one single-row request body per row."""
    return [json.dumps(row).encode() for row in rows]


def _print_variants(variants: dict[str, dict[str, float]]) -> None:
    """Print the single-row figures of each inference-log / auth variant."""
    head = f"{'single rows, variant':<28}{'req/s':>10}{'vs memory':>11}"
    print(f"{head}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, figures in variants.items():
        print(f"{name:<28}{figures['rps']:>10}{figures['vs_memory']:>11}{figures['p50_ms']:>10}"
              f"{figures['p99_ms']:>10}{figures['errors']:>8}   ratio range {figures['vs_memory_min']}"
              f"-{figures['vs_memory_max']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Set up, start both servers, measure four cases, print the summary and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per case")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--use-cases",
        type=int,
        default=1,
        help="declared use cases the service loads (card_fraud takes the load)",
    )
    parser.add_argument(
        "--log-variants",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also measure single rows with the inference log in memory only, with its write-ahead file "
        "(fsync every 5 ms, or per batch) and with API keys, ROUNDS times each, interleaved",
    )
    parser.add_argument("--variants-only", action="store_true", help="skip ours vs mlflow models serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("mlloop", "mlflow", "alembic", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from mlloop.ops.services import mlflow_server_argv

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="mlloop-bench-serving-") as folder:
        tmp = Path(folder)
        try:
            mlflow_port = _free_port()
            (tmp / "mlflow").mkdir()
            procs.append(subprocess.Popen(mlflow_server_argv(mlflow_port, tmp / "mlflow"), cwd=tmp / "mlflow",
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            tracking = f"http://127.0.0.1:{mlflow_port}"
            _wait_http(f"{tracking}/health", procs[-1], "MLflow server")
            usecases_dir, peer_name, rows, peer_frame = _setup(tmp, tracking, args.use_cases)

            env = {k: v for k, v in os.environ.items() if not k.startswith("MLLOOP_")}
            # mlflow models serve execs `uvicorn` from PATH
            path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            env.update(MLFLOW_TRACKING_URI=tracking, MLLOOP_MLFLOW_TRACKING_URI=tracking, PATH=path)
            ours_port, peer_port = _free_port(), _free_port()
            ours_env = env | {"MLLOOP_USECASES_DIR": str(usecases_dir), "MLLOOP_PII_KEY": PII_KEY,
                              "MLLOOP_DATA_ROOT": str(tmp / "served")}  # fmt: skip
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mlloop.serving", "--port", str(ours_port), "--no-seed-history"],
                env=ours_env, stdout=subprocess.DEVNULL, stderr=(tmp / "ours.log").open("wb"),
            ))  # fmt: skip
            ours = f"http://127.0.0.1:{ours_port}"
            _wait_http(f"{ours}/ready", procs[-1], "the scoring service")
            mlflow_bin = str(Path(sys.executable).parent / "mlflow")
            procs.append(subprocess.Popen(
                [mlflow_bin, "models", "serve", "-m", f"models:/{peer_name}/1", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(peer_port)],
                env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "peer.log").open("wb"),
            ))  # fmt: skip
            peer = f"http://127.0.0.1:{peer_port}"
            _wait_http(f"{peer}/ping", procs[-1], "mlflow models serve")

            results: dict[str, dict[str, float]] = {}
            variants = _measure_log_variants(tmp, ours_env, rows, args) if args.log_variants else {}
            for batch in () if args.variants_only else (1, 100):
                ours_bodies, peer_bodies = _bodies(rows, peer_frame, batch)
                # same payload check: both answer the same transactions with the same scores
                results[f"ours_{batch}"] = _measure(
                    ours, "/predict/card_fraud", ours_bodies, args.seconds, args.concurrency
                )
                log.info("ours, %d-row requests: %s", batch, results[f"ours_{batch}"])
                results[f"peer_{batch}"] = _measure(peer, "/invocations", peer_bodies, args.seconds,
                                                    args.concurrency)  # fmt: skip
                log.info("mlflow models serve, %d-row requests: %s", batch, results[f"peer_{batch}"])
        except Exception:
            for server_log in sorted(tmp.glob("*.log")):
                print(
                    f"--- {server_log.name}\n{server_log.read_text(errors='replace')[-3000:]}",
                    file=sys.stderr,
                )
            raise
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    if variants:
        _print_variants(variants)
    if args.variants_only:
        print(json.dumps({"bench": "serving_log_variants", "concurrency": args.concurrency,
                          "seconds": args.seconds, "rounds": args.log_variants, **variants}))  # fmt: skip
        return 0
    print(f"{'case':<28}{'req/s':>10}{'rows/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for key, figures in results.items():
        who, batch = key.split("_")
        name = f"{'ours' if who == 'ours' else 'mlflow models serve'}, {batch} row(s)"
        print(f"{name:<28}{figures['rps']:>10}{figures['rps'] * int(batch):>10.0f}{figures['p50_ms']:>10}"
              f"{figures['p99_ms']:>10}{figures['errors']:>8}")  # fmt: skip
    summary = {
        "bench": "serving",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "use_cases": args.use_cases,
        **{f"{k}_{m}": v for k, figures in results.items() for m, v in figures.items()},
        "ratio": round(results["ours_1"]["rps"] / results["peer_1"]["rps"], 2),
        "ratio_batch_100": round(results["ours_100"]["rps"] / results["peer_100"]["rps"], 2),
        "target_ratio": 10,
        "target_p99_ms": 20,
        **({"log_variants": variants} if variants else {}),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
