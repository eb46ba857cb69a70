"""The closed loop's timeline: judge detection and recovery per drift event, render and save the days.

``loop_outcome`` reads the per-day rows (served PR-AUC, the monitoring decision, the retrain) and says
when each drift event was detected and recovered; ``timeline`` renders the rows as a table and a PNG,
which ``save_timeline`` writes under ``reports/simulation/`` and logs to MLflow.
"""

from __future__ import annotations

import io
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlloop.storage import Storage

REPORTS_AREA = "reports/simulation"
EXPERIMENT = "mlloop-simulation"
# matplotlib and MLflow load inside the functions that use them: `mlloop simulate --help` and
# `mlloop demo --help` import this module.


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
    from mlflow import MlflowClient

    from mlloop.registry.champion import experiment_id
    from mlloop.registry.runner import use_configured_mlflow

    table, png = timeline(rows, title)
    table += "\n\n" + "\n".join(f"- {line}" for line in outcome_lines(loop_outcome(rows))) + "\n"
    prefix = f"{REPORTS_AREA}/{stamp}"
    uris = {
        "table": storage.write_bytes(f"{prefix}/timeline.md", table.encode()),
        "plot": storage.write_bytes(f"{prefix}/timeline.png", png),
        "rows": storage.write_json(f"{prefix}/timeline.json", list(rows)),
    }
    client = MlflowClient(tracking_uri=use_configured_mlflow())
    run = client.create_run(experiment_id(client, EXPERIMENT), run_name=f"simulation {stamp}")
    with tempfile.TemporaryDirectory(prefix="mlloop-timeline-") as tmp:
        for name, data in (("timeline.md", table.encode()), ("timeline.png", png)):
            (Path(tmp) / name).write_bytes(data)
            client.log_artifact(run.info.run_id, str(Path(tmp) / name))
    client.log_dict(run.info.run_id, list(rows), "timeline.json")
    client.set_terminated(run.info.run_id)
    uris["mlflow_run"] = run.info.run_id
    return uris
