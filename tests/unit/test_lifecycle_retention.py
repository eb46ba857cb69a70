"""Retention on a seeded data root (local folder and S3 through moto): the dry run lists, and the apply
deletes, exactly the expired objects; what the champion needs and what a legal hold names stays."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from mlloop.lifecycle.holds import KeptVersion, declared_holds, version_holds
from mlloop.lifecycle.retention import (
    RetentionPlan,
    apply_plan,
    plan_retention,
    write_plan_report,
    zone_objects,
)
from mlloop.storage import Storage
from mlloop.usecase import RetentionSpec, UseCase, ZoneRetention, load_use_case

TODAY = date(2026, 6, 30)
CHAMPION = "a" * 64  # trained on 03-01..03-02 (context 02-10), labels known 2026-03-20
NEWEST = "b" * 64
OLD = "c" * 64
OTHER_USE_CASE = "d" * 64
PARTITIONED = ("raw", "validated", "labels", "inference", "quarantine")
DAYS = ["2026-01-05", "2026-01-20", "2026-02-10", "2026-03-01", "2026-03-02", "2026-05-20", "2026-06-29"]
POLICY = RetentionSpec(
    raw=ZoneRetention(days=100),
    quarantine=ZoneRetention(days=30),
    validated=ZoneRetention(days=100),
    labels=ZoneRetention(days=100),
    inference=ZoneRetention(days=30),
    snapshots=ZoneRetention(count=1),
    reports=ZoneRetention(days=60),
    legal_holds=["quarantine/transactions/date=2026-05-20", "2026-01-05"],
)


@pytest.fixture
def use_case() -> UseCase:
    return load_use_case("card_fraud").model_copy(update={"retention": POLICY})


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Iterator[Storage]:
    if request.param == "local":
        yield Storage(str(tmp_path / "data"))
        return
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        yield Storage("s3://lake/mlloop", s3_client=client)


def _snapshot(storage: Storage, digest: str, use_case: str, as_of: str, days: list[str], context: list[str]):
    storage.write_bytes(f"snapshots/{digest}/data.parquet", b"x" * 100)
    sources = [{"day": d, "key": f"validated/transactions/date={d}/b1.parquet"} for d in days + context]
    storage.write_json(
        f"snapshots/{digest}/manifest.json",
        {
            "use_case": use_case,
            "as_of": f"{as_of}T00:00:00+00:00",
            "days": days,
            "source_partitions": sources,
        },
    )


def _seed(storage: Storage) -> None:
    for day in DAYS:
        for zone in PARTITIONED:
            storage.write_bytes(f"{zone}/transactions/date={day}/b1.parquet", b"p" * 10)
        storage.write_json(f"reports/validation/transactions/date={day}/b1.json", {})
        storage.write_json(f"reports/validation/labels/transactions/date={day}/l1.json", {})
    storage.write_bytes("raw/flights/date=2026-01-05/f.parquet", b"other dataset")
    _snapshot(storage, CHAMPION, "card_fraud", "2026-03-20", ["2026-03-01", "2026-03-02"], ["2026-02-10"])
    _snapshot(storage, NEWEST, "card_fraud", "2026-06-29", ["2026-06-29"], [])
    _snapshot(storage, OLD, "card_fraud", "2026-01-10", ["2026-01-05"], [])
    _snapshot(storage, OTHER_USE_CASE, "flight_delay", "2026-01-10", ["2026-01-05"], [])
    for digest in (CHAMPION, OLD):
        storage.write_json(f"reports/validation/transactions/snapshots/{digest}.json", {})
    for check, version in (("20260325T060000-2026-03-24", "3"), ("20260401T060000-2026-03-31", "2")):
        storage.write_json(
            f"reports/monitoring/transactions/decisions/{check}.json", {"champion_version": version}
        )
        storage.write_bytes(f"reports/monitoring/transactions/{check}/data_drift.html", b"<html/>")


def _expected_expired() -> set[str]:
    """Worked out by hand from POLICY, the champion's lineage and the legal holds.

    01-05 is under legal hold in every zone; the champion keeps the raw and validated days (and their
    validation reports) of 02-10 (history context), 03-01 and 03-02, and the label deliveries 03-01..03-20.
    """
    expired = {f"{zone}/transactions/date=2026-01-20/b1.parquet" for zone in PARTITIONED}
    expired |= {"labels/transactions/date=2026-02-10/b1.parquet"}
    # Quarantine and inference keep 30 days (quarantine's 05-20 is under legal hold).
    for day in ("2026-02-10", "2026-03-01", "2026-03-02"):
        expired |= {
            f"quarantine/transactions/date={day}/b1.parquet",
            f"inference/transactions/date={day}/b1.parquet",
        }
    expired |= {"inference/transactions/date=2026-05-20/b1.parquet"}
    expired |= {f"snapshots/{OLD}/data.parquet", f"snapshots/{OLD}/manifest.json"}  # count=1 keeps NEWEST
    # Reports keep 60 days: before 2026-05-01.
    expired |= {
        "reports/validation/transactions/date=2026-01-20/b1.json",
        "reports/validation/labels/transactions/date=2026-01-20/l1.json",
        "reports/validation/labels/transactions/date=2026-02-10/l1.json",
        f"reports/validation/transactions/snapshots/{OLD}.json",
        "reports/monitoring/transactions/decisions/20260401T060000-2026-03-31.json",
        "reports/monitoring/transactions/20260401T060000-2026-03-31/data_drift.html",
    }
    return expired


def _plan(storage: Storage, use_case: UseCase) -> RetentionPlan:
    kept = [KeptVersion("fraud-detector", "3", "champion", CHAMPION)]
    holds = declared_holds(use_case.retention) + version_holds(storage, use_case, kept)
    return plan_retention(
        zone_objects(storage, use_case), use_case.retention, TODAY, holds, use_case="card_fraud"
    )


def test_dry_run_lists_exactly_the_expired_objects_and_why_the_rest_is_kept(storage, use_case) -> None:
    _seed(storage)
    before = set(storage.list(""))
    plan = _plan(storage, use_case)
    report = write_plan_report(
        storage, plan, "transactions", dry_run=True, at=datetime(2026, 6, 30, 3, tzinfo=UTC)
    )

    assert {d.key for d in plan.expired} == _expected_expired()
    assert plan.expired_bytes == sum(o.size for o in storage.list_objects("") if o.key in _expected_expired())
    held = {d.key: d.held_by for d in plan.held}
    assert "champion" in held[f"snapshots/{CHAMPION}/manifest.json"]
    assert "champion" in held["validated/transactions/date=2026-02-10/b1.parquet"]  # history context
    assert "champion" in held["labels/transactions/date=2026-03-02/b1.parquet"]
    assert (
        "monitoring check 20260325T060000"
        in held["reports/monitoring/transactions/decisions/20260325T060000-2026-03-24.json"]
    )
    assert "legal hold" in held["quarantine/transactions/date=2026-05-20/b1.parquet"]
    assert "legal hold" in held["raw/transactions/date=2026-01-05/b1.parquet"]
    assert set(storage.list("")) - before == {
        storage.key(report),
        storage.key(report.replace(".json", ".txt")),
    }
    text = storage.read_bytes(report.replace(".json", ".txt")).decode()
    assert "dry run: nothing deleted" in text and f"would delete {len(_expected_expired())} objects" in text
    assert (
        "older than retention.raw.days=100" in text
        and "beyond the newest retention.snapshots.count=1" in text
    )
    # Another dataset and another use case's snapshot are not this use case's to delete.
    assert not any(
        k.startswith(("raw/flights", f"snapshots/{OTHER_USE_CASE}"))
        for k in held | {d.key: "" for d in plan.expired}
    )


def test_apply_deletes_exactly_what_the_written_plan_lists(storage, use_case) -> None:
    _seed(storage)
    plan = _plan(storage, use_case)
    report = write_plan_report(
        storage, plan, "transactions", dry_run=False, at=datetime(2026, 6, 30, 3, tzinfo=UTC)
    )
    before = set(storage.list(""))

    result = apply_plan(storage, RetentionPlan.from_dict(storage.read_json(report)), _plan(storage, use_case))

    assert before - set(storage.list("")) == _expected_expired()
    assert result["deleted"] == len(_expected_expired()) and result["kept_since_plan"] == 0
    assert _plan(storage, use_case).expired == []  # nothing left to expire


def test_apply_keeps_what_a_hold_added_since_the_plan_protects(storage, use_case) -> None:
    _seed(storage)
    planned = _plan(storage, use_case)
    later = use_case.model_copy(
        update={"retention": POLICY.model_copy(update={"legal_holds": [*POLICY.legal_holds, "inference/"]})}
    )

    result = apply_plan(storage, planned, _plan(storage, later))

    assert storage.exists("inference/transactions/date=2026-05-20/b1.parquet")
    assert result["kept_since_plan"] == 5  # the five expired inference days
    assert not storage.exists("quarantine/transactions/date=2026-03-01/b1.parquet")


def test_a_missing_manifest_keeps_every_day_of_the_lineage_zones(tmp_path, use_case) -> None:
    storage = Storage(str(tmp_path / "data"))
    _seed(storage)
    kept = [KeptVersion("fraud-detector", "4", "previous", "e" * 64)]
    plan = plan_retention(
        zone_objects(storage, use_case),
        use_case.retention,
        TODAY,
        version_holds(storage, use_case, kept),
        use_case="card_fraud",
    )
    assert not [d for d in plan.expired if d.zone in ("raw", "validated", "labels")]
    assert any(d.zone == "quarantine" for d in plan.expired)


def test_retention_shorter_than_the_loop_reads_is_refused() -> None:
    document = load_use_case("card_fraud").model_dump(by_alias=True)
    document["retention"] = {"validated": {"days": 30}}
    with pytest.raises(
        ValueError, match=r"retention.validated.days is 30, but this use case reads 90 days back"
    ):
        UseCase.model_validate(document)


def test_kept_versions_name_a_version_as_text_whatever_the_client_returns(tmp_path) -> None:
    """A database-backed MLflow client returns version numbers as ints, the REST one as strings: both hold."""
    from types import SimpleNamespace

    from mlloop.lifecycle.holds import kept_versions

    champion = SimpleNamespace(version=1, tags={"mlloop.snapshot_digest": CHAMPION})

    class DatabaseClient:
        def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
            from mlflow.exceptions import MlflowException

            if alias != "champion":
                raise MlflowException(f"alias {alias} not found")
            return champion

        def search_model_versions(self, query: str) -> list:
            return []

    (kept,) = kept_versions(DatabaseClient(), "fraud-detector")  # type: ignore[arg-type]
    assert kept.version == "1" and kept.label == "fraud-detector v1 (champion)"
    storage = Storage(str(tmp_path))
    storage.write_json("reports/monitoring/transactions/decisions/c1.json", {"champion_version": "1"})
    holds = version_holds(storage, load_use_case("card_fraud"), [kept])
    assert any(h.prefix == "reports/monitoring/transactions/decisions/c1.json" for h in holds)
