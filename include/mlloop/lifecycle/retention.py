"""Retention: which of a use case's stored objects expire on a day, which are kept, and why.

A pure core in an I/O shell: ``zone_objects`` lists what a use case has in each zone (with the day each
object belongs to), ``plan_retention`` decides from the declaration's ``retention:`` limits and the holds
(``mlloop.lifecycle.holds``) alone, ``write_plan_report`` records the plan (JSON and text) under
``reports/housekeeping/``, and ``apply_plan`` deletes exactly what the plan lists and a fresh plan still
lists (so a version promoted in between keeps what it needs).

An object's day is its partition's (``date=YYYY-MM-DD``), a monitoring check's stamp, a snapshot's
``as_of`` (for the snapshot and the reports named by its digest), else the day it was last written.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from mlloop.storage import Storage, StorageError, StorageUnavailableError, StoredObject
from mlloop.usecase import RETENTION_ZONES

if TYPE_CHECKING:
    from mlloop.usecase import RetentionSpec, UseCase

log = logging.getLogger(__name__)

PARTITIONED_ZONES = ("raw", "quarantine", "validated", "labels", "inference")
REPORTS_AREA = "reports/housekeeping"
_DAY_IN_KEY = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_STAMP_IN_KEY = re.compile(r"/(\d{4})(\d{2})(\d{2})T\d{6}")
_DIGEST_IN_KEY = re.compile(r"(?:^|/)([0-9a-f]{64})(?:[./]|$)")


@dataclass(frozen=True)
class ZoneObject:
    """One stored object of a use case: its zone, the day it belongs to, and its size."""

    key: str
    zone: str
    day: str
    size: int


@dataclass(frozen=True)
class Hold:
    """What must not be deleted (objects under ``prefix``, or ``days`` of ``zones``) and why."""

    reason: str
    prefix: str | None = None
    zones: frozenset[str] = frozenset()
    days: frozenset[str] = frozenset()
    all_days: bool = False

    def covers(self, obj: ZoneObject) -> bool:
        """Return whether this hold keeps ``obj``."""
        if self.prefix is not None:
            return obj.key.startswith(self.prefix)
        return obj.zone in self.zones and (self.all_days or obj.day in self.days)


@dataclass(frozen=True)
class Decision:
    """One object the policy expires: deleted (``held_by`` empty) or kept by a hold."""

    key: str
    zone: str
    day: str
    size: int
    expired_because: str
    held_by: str = ""


@dataclass
class RetentionPlan:
    """What expires today, what a hold keeps although it expired, and what stays within the limits."""

    use_case: str
    today: str
    policy: dict[str, Any]
    holds: list[str]
    expired: list[Decision] = field(default_factory=list)
    held: list[Decision] = field(default_factory=list)
    retained: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def expired_bytes(self) -> int:
        """Return the bytes the expired objects hold."""
        return sum(d.size for d in self.expired)

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-able data."""
        return {
            "use_case": self.use_case,
            "today": self.today,
            "policy": self.policy,
            "holds": self.holds,
            "expired": [asdict(d) for d in self.expired],
            "held": [asdict(d) for d in self.held],
            "retained": self.retained,
            "expired_objects": len(self.expired),
            "expired_bytes": self.expired_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetentionPlan:
        """Return the plan ``to_dict`` wrote."""
        return cls(
            use_case=data["use_case"],
            today=data["today"],
            policy=data["policy"],
            holds=data["holds"],
            expired=[Decision(**d) for d in data["expired"]],
            held=[Decision(**d) for d in data["held"]],
            retained=data["retained"],
        )

    def to_text(self, *, dry_run: bool) -> str:
        """Return the plan as a readable report: per zone what is (or would be) deleted and what is kept."""
        verb = "would delete" if dry_run else "deletes"
        lines = [
            f"Housekeeping of use case {self.use_case} on {self.today} "
            f"({'dry run: nothing deleted' if dry_run else 'applied'})",
            f"It {verb} {len(self.expired)} objects, {_size(self.expired_bytes)}.",
            "",
        ]
        expired, held = _by_zone(self.expired), _by_zone(self.held)
        for zone in RETENTION_ZONES:
            gone, kept = expired.get(zone, []), held.get(zone, [])
            still = self.retained.get(zone, {"objects": 0, "bytes": 0})
            lines.append(
                f"{zone}: {verb} {len(gone)} objects ({_size(sum(d.size for d in gone))}); kept by a hold "
                f"{len(kept)}; within the limits {still['objects']} ({_size(still['bytes'])})"
            )
            for reason, decisions in _grouped(gone, "expired_because"):
                lines.append(f"  {verb} {len(decisions)} ({_days(decisions)}): {reason}")
            for reason, decisions in _grouped(kept, "held_by"):
                lines.append(f"  kept {len(decisions)} ({_days(decisions)}): {reason}")
        lines += ["", "Holds:", *(f"  - {hold}" for hold in self.holds or ["(none)"])]
        return "\n".join(lines) + "\n"


def _by_zone(decisions: Iterable[Decision]) -> dict[str, list[Decision]]:
    grouped: dict[str, list[Decision]] = defaultdict(list)
    for decision in decisions:
        grouped[decision.zone].append(decision)
    return grouped


def _grouped(decisions: list[Decision], attribute: str) -> list[tuple[str, list[Decision]]]:
    grouped: dict[str, list[Decision]] = defaultdict(list)
    for decision in decisions:
        grouped[getattr(decision, attribute)].append(decision)
    return sorted(grouped.items())


def _days(decisions: list[Decision]) -> str:
    days = sorted({d.day for d in decisions})
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}, {len(days)} days"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def report_prefixes(dataset: str) -> tuple[str, ...]:
    """Return the folders of a dataset's reports (validation, label feed, monitoring, housekeeping)."""
    return (
        f"reports/validation/{dataset}",
        f"reports/validation/labels/{dataset}",
        f"reports/monitoring/{dataset}",
        f"{REPORTS_AREA}/{dataset}",
    )


def _snapshots_of(
    storage: Storage, use_case: UseCase
) -> tuple[dict[str, list[StoredObject]], dict[str, str]]:
    """Return the objects of each of ``use_case``'s snapshots and each one's ``as_of`` day, by digest."""
    folders: dict[str, list[StoredObject]] = defaultdict(list)
    for obj in storage.list_objects("snapshots"):
        folders[obj.key.split("/")[1]].append(obj)
    objects, days = {}, {}
    for digest, stored in folders.items():
        try:
            manifest = storage.read_json(f"snapshots/{digest}/manifest.json")
        except StorageUnavailableError:
            raise  # an unreachable store says nothing about the manifest
        except StorageError:
            log.warning("snapshots/%s has no manifest.json: not attributed to a use case, left alone", digest)
            continue
        if manifest.get("use_case") == use_case.name:
            objects[digest], days[digest] = stored, str(manifest["as_of"])[:10]
    return objects, days


def _day_of(obj: StoredObject, snapshot_day: dict[str, str]) -> str:
    """Return the day an object belongs to (see the module docstring)."""
    if match := _DAY_IN_KEY.search(obj.key):
        return match.group(1)
    if match := _STAMP_IN_KEY.search(obj.key):
        return "-".join(match.groups())
    if (match := _DIGEST_IN_KEY.search(obj.key)) and match.group(1) in snapshot_day:
        return snapshot_day[match.group(1)]
    return obj.modified.date().isoformat()


def zone_objects(storage: Storage, use_case: UseCase) -> list[ZoneObject]:
    """Return every object of ``use_case`` in the retention zones, with its zone and day."""
    dataset = use_case.dataset
    snapshots, snapshot_day = _snapshots_of(storage, use_case)
    found: dict[str, ZoneObject] = {}

    def add(zone: str, objects: Iterable[StoredObject]) -> None:
        for obj in objects:
            found.setdefault(obj.key, ZoneObject(obj.key, zone, _day_of(obj, snapshot_day), obj.size))

    for zone in PARTITIONED_ZONES:
        add(zone, storage.list_objects(f"{zone}/{dataset}"))
    for stored in snapshots.values():
        add("snapshots", stored)
    for prefix in report_prefixes(dataset):
        add("reports", storage.list_objects(prefix))
    return sorted(found.values(), key=lambda o: o.key)


def _expiry(obj: ZoneObject, limits: Any, rank: int, today: date) -> str:
    """Return why ``obj`` expires under its zone's ``limits`` ('' when it does not)."""
    age = (today - date.fromisoformat(obj.day)).days
    unit = "snapshots" if obj.zone == "snapshots" else "days"
    if limits.days is not None and age > limits.days:
        return f"older than retention.{obj.zone}.days={limits.days}"
    if limits.count is not None and rank >= limits.count:
        return f"beyond the newest retention.{obj.zone}.count={limits.count} {unit}"
    return ""


def plan_retention(
    objects: Iterable[ZoneObject], retention: RetentionSpec, today: date, holds: list[Hold], *, use_case: str
) -> RetentionPlan:
    """Return what expires on ``today`` under ``retention``, and which holds keep what of it.

    A zone's ``count`` ranks its units newest first: days for the partitioned zones and reports, snapshots
    (by their ``as_of`` day, then digest) for the snapshot zone.
    """
    objects = list(objects)
    units: dict[str, list[str]] = defaultdict(list)
    for obj in objects:
        units[obj.zone].append(_unit(obj))
    ranks = {
        zone: {unit: rank for rank, unit in enumerate(sorted(set(values), reverse=True))}
        for zone, values in units.items()
    }
    plan = RetentionPlan(
        use_case=use_case,
        today=today.isoformat(),
        policy=retention.model_dump(mode="json"),
        holds=sorted({hold.reason for hold in holds}),
    )
    retained: dict[str, dict[str, int]] = {z: {"objects": 0, "bytes": 0} for z in RETENTION_ZONES}
    for obj in objects:
        why = _expiry(obj, retention.zone(obj.zone), ranks[obj.zone][_unit(obj)], today)
        if not why:
            retained[obj.zone]["objects"] += 1
            retained[obj.zone]["bytes"] += obj.size
            continue
        hold = next((h for h in holds if h.covers(obj)), None)
        decision = Decision(obj.key, obj.zone, obj.day, obj.size, why, hold.reason if hold else "")
        (plan.held if hold else plan.expired).append(decision)
    plan.retained = retained
    return plan


def _unit(obj: ZoneObject) -> str:
    """Return what a zone's ``count`` counts for ``obj``: its day, or for a snapshot its day and digest."""
    return f"{obj.day}/{obj.key.split('/')[1]}" if obj.zone == "snapshots" else obj.day


def write_plan_report(
    storage: Storage, plan: RetentionPlan, dataset: str, *, dry_run: bool, at: datetime
) -> str:
    """Write the plan (JSON, text) under ``reports/housekeeping/<dataset>/date=<day>/``; return its URI."""
    mode = "dry-run" if dry_run else "apply"
    base = f"{REPORTS_AREA}/{dataset}/date={plan.today}/{at:%Y%m%dT%H%M%S}-{mode}"
    storage.write_bytes(f"{base}.txt", plan.to_text(dry_run=dry_run).encode())
    return storage.write_json(f"{base}.json", plan.to_dict() | {"dry_run": dry_run})


def apply_plan(storage: Storage, planned: RetentionPlan, current: RetentionPlan) -> dict[str, int]:
    """Delete what ``planned`` expires and ``current`` (planned again now) still expires; return counts.

    An object the first plan listed that a hold now keeps (say, a version promoted since) is not deleted.
    """
    still = {d.key for d in current.expired}
    deleted = skipped = size = 0
    for decision in planned.expired:
        if decision.key not in still:
            skipped += 1
            log.info("Not deleting %s: the current plan keeps it", decision.key)
            continue
        storage.delete(decision.key)
        deleted += 1
        size += decision.size
        if deleted % 500 == 0:
            log.info("Deleted %d of %d expired objects", deleted, len(planned.expired))
    log.info("Deleted %d expired objects (%s); %d kept since the plan", deleted, _size(size), skipped)
    return {"deleted": deleted, "deleted_bytes": size, "kept_since_plan": skipped}
