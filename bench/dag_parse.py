"""Benchmark: what parsing the DAG factory costs with 1, 2 and 10 use cases, against trivial DAGs.

Run: ``.venv/bin/python bench/dag_parse.py [--use-cases 1 2 10] [--rounds 5]``. The dag-processor
re-parses every DAG file all the time, so ``dags/use_cases.py`` must import nothing heavy and cost
about what the same number of trivial TaskFlow DAGs costs. For each count K, K declarations (copies of
card_fraud's, each with its own name, model_name and dataset) go into a temporary folder; fresh
interpreters then alternately parse a peer file defining 4*K trivial one-task TaskFlow DAGs and
``dags/use_cases.py`` with ``MLLOOP_USECASES_DIR`` pointing at that folder. The peer is fair because it
pays the same SDK import and builds as many DAGs through the same ``@dag``/``@task`` machinery, so the
ratio is what the factory adds (its imports, loading and checking declarations, richer DAGs), not the
cost of having more DAGs. Each parse must yield 4*K DAGs. A parse is timed in CPU seconds (the
interpreter's process time), which other load on a shared machine disturbs far less than wall time;
the minimum over ``--rounds`` is the run least disturbed. Prints one line per K, then one JSON line;
``ratio`` is the worst K's parse over its peer's (goal: at most 1.2). Which heavy libraries a DAG file
imports is a test (tests/dags/test_dag_integrity.py); this timing is a benchmark because timings on a
shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
FACTORY_DAG_FILE = REPO_ROOT / "dags" / "use_cases.py"
TEMPLATE_DECLARATION = REPO_ROOT / "include" / "mlloop" / "usecases" / "card_fraud.yaml"
DAGS_PER_USE_CASE = 4
GOAL = 1.2
# The same one-task shape as a single trivial TaskFlow DAG, built once per dag_id.
PEER_DAGS = textwrap.dedent("""
    import pendulum
    from airflow.sdk import dag, task

    for index in range({count}):

        @dag(
            dag_id=f"trivial_{{index:03d}}",
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            tags=["trivial"],
        )
        def trivial():
            @task
            def hello() -> int:
                return 1

            hello()

        globals()[f"trivial_{{index:03d}}"] = trivial()
""")
# CPU seconds of the SDK import and the file's run (wall time on a shared machine swings with the other
# load). After the clock it counts the DAGs in the file's globals, leaving out the factory's
# stand-ins for an invalid declaration (they would be a cheaper parse than the real DAGs).
TIMED_PARSE = (
    "import time, runpy, sys; t = time.process_time(); import airflow.sdk; "
    "g = runpy.run_path(sys.argv[1]); s = time.process_time() - t; "
    "print(sum(isinstance(v, airflow.sdk.DAG) and 'invalid-declaration' not in v.tags "
    "for v in g.values()), s)"
)


def write_declarations(folder: Path, count: int) -> list[str]:
    """Write ``count`` copies of card_fraud's declaration (uc_01, uc_02, ...) into ``folder``."""
    template = yaml.safe_load(TEMPLATE_DECLARATION.read_text())
    names = [f"uc_{index:02d}" for index in range(1, count + 1)]
    for name in names:
        declaration = template | {"name": name, "model_name": f"{name}-model", "dataset": name}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    return names


def fresh_parse(path: Path, env: dict[str, str]) -> tuple[int, float]:
    """Return (valid DAGs, CPU seconds) of a fresh interpreter importing the SDK and running ``path``."""
    proc = subprocess.run(
        [sys.executable, "-c", TIMED_PARSE, str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed:\n{proc.stderr[-3000:]}")
    dags, seconds = proc.stdout.strip().splitlines()[-1].split()
    return int(dags), float(seconds)


def expect_dags(path: Path, got: int, want: int) -> None:
    """Raise naming the file and the template when a parse built the wrong number of valid DAGs."""
    if got != want:
        raise RuntimeError(
            f"parsing {path.name} built {got} valid DAGs, expected {want} ({DAGS_PER_USE_CASE} per "
            f"declaration copied from {TEMPLATE_DECLARATION}); check the template with "
            "`mlloop use-cases check card_fraud` and the stand-in DAGs' pages for the error"
        )


def measure(count: int, rounds: int) -> dict[str, float | int]:
    """Time the factory with ``count`` declarations against a peer of as many trivial DAGs."""
    want = DAGS_PER_USE_CASE * count
    with tempfile.TemporaryDirectory(prefix="mlloop-bench-dag-parse-") as tmp:
        folder = Path(tmp) / "usecases"
        folder.mkdir()
        write_declarations(folder, count)
        peer = Path(tmp) / "trivial_dags.py"
        peer.write_text(PEER_DAGS.format(count=want))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"MLLOOP_USE_CASES", "MLLOOP_MODEL_NAME"}
        }
        env["MLLOOP_USECASES_DIR"] = str(folder)
        peer_times: list[float] = []
        parse_times: list[float] = []
        for _ in range(rounds):
            dags, seconds = fresh_parse(peer, env)
            expect_dags(peer, dags, want)
            peer_times.append(seconds)
            dags, seconds = fresh_parse(FACTORY_DAG_FILE, env)
            expect_dags(FACTORY_DAG_FILE, dags, want)
            parse_times.append(seconds)
    parse_s, peer_s = min(parse_times), min(peer_times)
    return {
        "dags": want,
        "parse_s": round(parse_s, 3),
        "peer_s": round(peer_s, 3),
        "ratio": round(parse_s / peer_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Time the factory at each use-case count; print a line per count and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--use-cases", type=int, nargs="+", default=[1, 2, 10], help="declaration counts to time"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved fresh parses per count")
    args = parser.parse_args(argv)
    results = {str(count): measure(count, args.rounds) for count in args.use_cases}
    print(f"{'K':>4}{'DAGs':>6}{'parse s':>10}{'peer s':>10}{'ratio':>8}{'per-DAG ms':>12}")
    for count, result in results.items():
        per_dag_ms = 1000 * result["parse_s"] / result["dags"]
        print(
            f"{count:>4}{result['dags']:>6}{result['parse_s']:>10.3f}{result['peer_s']:>10.3f}"
            f"{result['ratio']:>8.2f}{per_dag_ms:>12.1f}"
        )
    summary = {
        "bench": "dag_parse",
        "rounds": args.rounds,
        "use_cases": results,
        "ratio": max(result["ratio"] for result in results.values()),
        "goal_ratio_at_most": GOAL,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
