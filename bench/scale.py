"""Benchmark: ``create_snapshot`` on many generated rows against a bare pyarrow read and write of them.

Run: ``.venv/bin/python bench/scale.py [--rows-per-day 500000] [--days 2] [--chunk-rows N]``. Generates
``--days`` days of ``--rows-per-day`` card transactions, ingests each day as the platform does (land, GX raw
suite, PII tokenised, published to ``validated/``) in a child process, then snapshots the window with the
labels delivered for it (``snapshot_days``: features, feature suite, labels, canonical Parquet) in a fresh
child process, and reads and writes the same validated rows with bare pyarrow in another. Each child
reports its own wall seconds and peak RSS (``getrusage``), so ingest memory never counts against the
snapshot. Prints a few human lines, then exactly one JSON line: rows, seconds, peak_rss_gb, bare_seconds,
bare_peak_rss_gb and ratio (snapshot seconds / bare seconds), and the same ratio in CPU seconds
(cpu_ratio: steadier than wall time on a shared machine; pyarrow's threads count in both sides).

``--chunk-rows`` sets ``MLLOOP_SNAPSHOT_CHUNK_ROWS`` for the snapshot child (the bounded-memory path); on
code without that setting it is ignored. ``--root`` reuses a data root, so a second run skips ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

FIRST_DAY = date(2026, 3, 2)
PII_KEY = b"bench-scale-pii-key-0123456789ab"
USE_CASE = "card_fraud"


def _peak_rss_gb() -> float:
    """Return this process's peak resident set size in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _cpu_seconds() -> float:
    """Return this process's user plus system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _window(days: int) -> list[date]:
    """Return the benchmark's window of ``days`` days from FIRST_DAY."""
    return [FIRST_DAY + timedelta(days=i) for i in range(days)]


def _ingest(root: str, day: date, rows: int) -> dict[str, object]:
    """Ingest one generated day into ``root`` (child process)."""
    from mlloop.ingestion.batches import ingest_day
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    started = time.perf_counter()
    result = ingest_day(Storage(root), load_use_case(USE_CASE), day, PII_KEY, rows=rows)
    return {"rows": result["rows"], "seconds": time.perf_counter() - started}


def _snapshot(root: str, days: int) -> dict[str, object]:
    """Snapshot the window with its delivered labels, as the train DAG does (child process)."""
    from mlloop.storage import Storage
    from mlloop.training.windows import snapshot_days
    from mlloop.usecase import load_use_case

    window = _window(days)
    as_of = datetime.combine(window[-1] + timedelta(days=90), datetime.min.time(), tzinfo=UTC)
    started, cpu = time.perf_counter(), _cpu_seconds()
    manifest = snapshot_days(Storage(root), load_use_case(USE_CASE), window, as_of=as_of)
    seconds = time.perf_counter() - started
    return {
        "rows": manifest.row_count,
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu,
        "digest": manifest.digest,
    }


def _bare(root: str, days: int) -> dict[str, object]:
    """Read the window's validated Parquet files and write them as one zstd Parquet file (child process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for d in _window(days) for p in Path(root, "validated").glob(f"*/date={d}/*.parquet"))
    started, cpu = time.perf_counter(), _cpu_seconds()
    table = pa.concat_tables([pq.read_table(f) for f in files])
    with tempfile.TemporaryDirectory() as out:
        pq.write_table(table, Path(out, "bare.parquet"), compression="zstd")
    seconds = time.perf_counter() - started
    return {"rows": table.num_rows, "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu}


def _child(step: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run one step of this script in a fresh interpreter and return its JSON result with its peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--step", step, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench/scale.py: the {step} step failed (exit {done.returncode}); its log is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_step(step: str, root: str, value: str) -> None:
    """Run a step in this (child) process and print its result with the peak RSS as one JSON line."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if step == "ingest":
        day, rows = value.split(":")
        result = _ingest(root, date.fromisoformat(day), int(rows))
    elif step == "snapshot":
        result = _snapshot(root, int(value))
    else:
        result = _bare(root, int(value))
    print(json.dumps({**result, "peak_rss_gb": round(_peak_rss_gb(), 3)}))


def main() -> None:
    """Ingest the window (unless already there), then time the snapshot and the bare peer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=None, help="MLLOOP_SNAPSHOT_CHUNK_ROWS")
    parser.add_argument("--root", default=None, help="data root to (re)use; default a temporary folder")
    parser.add_argument("--step", choices=["ingest", "snapshot", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--value", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        _run_step(args.step, args.root, args.value)
        return

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        root = args.root or scratch
        ingest_s = 0.0
        for day in _window(args.days):
            if any(Path(root, "validated").glob(f"*/date={day}/*.parquet")):
                continue
            done = _child("ingest", "--root", root, "--value", f"{day}:{args.rows_per_day}")
            ingest_s += float(done["seconds"])  # type: ignore[arg-type]
            print(f"ingested {day}: {done['rows']} rows in {done['seconds']:.1f}s, {done['peak_rss_gb']} GB")
        env = {"MLLOOP_SNAPSHOT_CHUNK_ROWS": str(args.chunk_rows)} if args.chunk_rows else None
        snap = _child("snapshot", "--root", root, "--value", str(args.days), env=env)
        print(f"snapshot: {snap['rows']} rows in {snap['seconds']:.1f}s, peak {snap['peak_rss_gb']} GB")
        bare = _child("bare", "--root", root, "--value", str(args.days))
        print(
            f"bare read+write: {bare['rows']} rows in {bare['seconds']:.2f}s, peak {bare['peak_rss_gb']} GB"
        )
    print(
        json.dumps(
            {
                "rows": snap["rows"],
                "rows_per_day": args.rows_per_day,
                "days": args.days,
                "chunk_rows": args.chunk_rows,
                "ingest_seconds": round(ingest_s, 2),
                "seconds": round(float(snap["seconds"]), 2),  # type: ignore[arg-type]
                "peak_rss_gb": snap["peak_rss_gb"],
                "bare_seconds": round(float(bare["seconds"]), 2),  # type: ignore[arg-type]
                "bare_peak_rss_gb": bare["peak_rss_gb"],
                "ratio": round(float(snap["seconds"]) / float(bare["seconds"]), 2),  # type: ignore[arg-type]
                "cpu_seconds": round(float(snap["cpu_seconds"]), 2),  # type: ignore[arg-type]
                "bare_cpu_seconds": round(float(bare["cpu_seconds"]), 2),  # type: ignore[arg-type]
                "cpu_ratio": round(float(snap["cpu_seconds"]) / float(bare["cpu_seconds"]), 2),  # type: ignore[arg-type]
                "digest": snap["digest"],
            }
        )
    )


if __name__ == "__main__":
    main()
