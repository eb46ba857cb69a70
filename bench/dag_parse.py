"""Benchmark: what parsing each DAG file costs, against a trivial TaskFlow DAG.

Run: ``.venv/bin/python bench/dag_parse.py [--rounds 5]``. The dag-processor re-parses every DAG file
all the time, so a DAG file must import nothing heavy and cost about what a trivial TaskFlow DAG
costs. For each file in ``dags/``, fresh interpreters alternately import Airflow's SDK and run the
trivial DAG, then the DAG file; the minimum over ``--rounds`` of each is the run least disturbed by
other load. Prints one line per DAG file, then one JSON line; ``ratio`` is the worst file's cost over
the trivial DAG's (goal: at most 1.2). Which heavy libraries a DAG file imports is a test
(tests/dags/test_dag_integrity.py); this timing is a benchmark because timings on a shared machine
are noisy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.2
TRIVIAL_DAG = textwrap.dedent("""
    import pendulum
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["trivial"])
    def trivial():
        @task
        def hello() -> int:
            return 1

        hello()

    trivial()
""")
TIMED_IMPORT = (
    "import time, runpy, sys; t = time.perf_counter(); import airflow.sdk; "
    "runpy.run_path(sys.argv[1]); print(time.perf_counter() - t)"
)


def fresh_import_seconds(path: Path) -> float:
    """Seconds for a fresh interpreter to import Airflow's SDK and run ``path`` (what a parse costs)."""
    proc = subprocess.run(
        [sys.executable, "-c", TIMED_IMPORT, str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Time every DAG file against the trivial DAG; print a line per file and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved fresh imports per file")
    args = parser.parse_args(argv)
    dag_files = sorted(p for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
    with tempfile.TemporaryDirectory(prefix="mlloop-bench-dag-parse-") as folder:
        trivial = Path(folder) / "trivial_dag.py"
        trivial.write_text(TRIVIAL_DAG)
        baseline: list[float] = []
        files: dict[str, float] = {}
        for path in dag_files:
            ours = []
            for _ in range(args.rounds):
                baseline.append(fresh_import_seconds(trivial))
                ours.append(fresh_import_seconds(path))
            files[path.name] = min(ours)
    base = min(baseline)
    print(f"{'DAG file':<28}{'parse s':>10}{'x trivial':>11}")
    print(f"{'(trivial TaskFlow DAG)':<28}{base:>10.3f}{1.0:>11.2f}")
    for name, seconds in files.items():
        print(f"{name:<28}{seconds:>10.3f}{seconds / base:>11.2f}")
    worst = max(files.values()) / base
    summary = {
        "bench": "dag_parse",
        "trivial_s": round(base, 3),
        **{f"{name.removesuffix('.py')}_s": round(seconds, 3) for name, seconds in files.items()},
        "ratio": round(worst, 2),
        "goal_ratio_at_most": GOAL,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
