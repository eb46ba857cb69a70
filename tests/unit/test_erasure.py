"""Right to erasure on a seeded data root: the dry run counts and changes nothing; the apply leaves no row
of the subject (value, token or key) in any Parquet object, keeps every other row, renames what is named
by content, re-digests the snapshot, tags the version trained on it, writes a ledger without the value,
and a second apply changes nothing."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import (
    BatchRejectedError,
    LandedBatch,
    _quarantine,
    batch_id_of,
    day_batch_id,
    publish_validated,
)
from mlloop.ingestion.pii import token
from mlloop.lifecycle.erasure import ErasureRequestError, erase_subject, parse_subject
from mlloop.lifecycle.erasure_cli import main
from mlloop.registry.tags import ERASURE_AFFECTED_TAG, SNAPSHOT_DIGEST_TAG
from mlloop.storage import Storage
from mlloop.training.snapshot import create_snapshot, load_snapshot
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.unit

PII_KEY = "erasure-test-key-0123456789"
DAY1, DAY2 = date(2026, 3, 1), date(2026, 3, 2)
ROWS = 200
MODEL = "fraud-detector"
INFERENCE_STAMP = "20260302T000000-abcdefabcdef"


@dataclass
class Seeded:
    storage: Storage
    card: str
    keys: set[str]
    digest: str
    tracking_uri: str
    raw1: str
    raw2: list[str]
    batch2: str


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _land(storage: Storage, day: date, files: list[pd.DataFrame], labels: pd.DataFrame) -> LandedBatch:
    """Land files as ingestion does (raw named by content id), publish them, and write their labels."""
    use_case = load_use_case("card_fraud")
    data = sorted((_parquet(f) for f in files), key=batch_id_of)
    ids = [batch_id_of(d) for d in data]
    uris = [
        storage.write_bytes(f"raw/transactions/date={day}/{i}.parquet", d)
        for i, d in zip(ids, data, strict=True)
    ]
    batch = LandedBatch("transactions", day.isoformat(), day_batch_id(ids), uris, 0, "none", True)
    publish_validated(storage, use_case, batch, PII_KEY.encode())
    keys = pd.concat(files).transaction_id
    storage.write_frame(
        f"labels/transactions/date={day}/{batch.batch_id}.parquet", labels[labels.transaction_id.isin(keys)]
    )
    storage.write_json(f"reports/validation/transactions/date={day}/{batch.batch_id}.json", {"ok": True})
    return batch


@pytest.fixture(params=["local", "s3"])
def seeded(request, tmp_path: Path, mlloop_env) -> Iterator[Seeded]:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlloop_env(data_root=tmp_path / "data", pii_key=PII_KEY, mlflow_tracking_uri=tracking_uri)
    if request.param == "local":
        yield _seed(Storage(str(tmp_path / "data")), tmp_path, tracking_uri)
        return
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        yield _seed(Storage("s3://lake/mlloop", s3_client=client), tmp_path, tracking_uri)


def _seed(storage: Storage, tmp_path: Path, tracking_uri: str) -> Seeded:
    """Seed the subject's rows in raw, quarantine, validated, labels, inference and a snapshot."""
    from mlflow import MlflowClient

    use_case = load_use_case("card_fraud")
    day1, day2 = (generate_day(d, rows=ROWS, seed=7) for d in (DAY1, DAY2))
    tx1, tx2 = day1.transactions.copy(), day2.transactions.copy()
    card = str(tx1.card_number.iloc[0])
    tx1.loc[[5, 9], "card_number"] = card  # three rows of the card on day 1, two on day 2 (one per file)
    tx2.loc[[3, 150], "card_number"] = card
    keys = {*tx1.transaction_id[tx1.card_number == card], *tx2.transaction_id[tx2.card_number == card]}
    labels = pd.concat([day1.labels, day2.labels], ignore_index=True)

    batch1 = _land(storage, DAY1, [tx1], labels)
    batch2 = _land(storage, DAY2, [tx2.iloc[:100], tx2.iloc[100:]], labels)
    with pytest.raises(BatchRejectedError):  # day 1 was rejected once (say, by an earlier contract)
        _quarantine(
            storage, use_case, batch1, [storage.read_bytes(batch1.raw_uri)], {"failures": []}, "seeded"
        )
    for day in (DAY1, DAY2):
        served = storage.read_days("validated", "transactions", [day])
        served = served.rename(columns={"card_number_token": "card_number"}).assign(score=0.1)
        storage.write_frame(f"inference/transactions/date={day}/part-{INFERENCE_STAMP}.parquet", served)
    snapshot = create_snapshot(
        storage,
        use_case,
        [DAY1, DAY2],
        labels=labels,
        as_of=datetime(2026, 3, 20, tzinfo=UTC),
        validate=False,
    )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(MODEL)
    for digest in (snapshot.digest, "f" * 64):
        client.create_model_version(MODEL, str(tmp_path / "model"), tags={SNAPSHOT_DIGEST_TAG: digest})
    return Seeded(
        storage, card, keys, snapshot.digest, tracking_uri, batch1.raw_uri, batch2.raw_uris, batch2.batch_id
    )


def _contents(storage: Storage) -> dict[str, str]:
    return {key: hashlib.sha256(storage.read_bytes(key)).hexdigest() for key in storage.list("")}


def _parquet_rows(storage: Storage) -> dict[str, pd.DataFrame]:
    return {
        key: pq.read_table(io.BytesIO(storage.read_bytes(key))).to_pandas()
        for key in storage.list("")
        if key.endswith(".parquet")
    }


def _subject_hits(frame: pd.DataFrame, seeded: Seeded) -> int:
    tok = token(seeded.card, PII_KEY.encode())
    hits = pd.Series(False, index=frame.index)
    for column in ("card_number", "card_number_token"):
        if column in frame.columns:
            hits |= frame[column].isin([seeded.card, tok])
    return int((hits | frame.transaction_id.isin(seeded.keys)).sum())


def test_the_dry_run_counts_per_zone_and_changes_nothing(seeded: Seeded) -> None:
    before = _contents(seeded.storage)

    plan = erase_subject(
        "card_fraud", f"card_number={seeded.card}", apply=False, actor="test", storage=seeded.storage
    )

    assert _contents(seeded.storage) == before
    assert plan["dry_run"] is True and plan["subject_keys"] == 5
    assert plan["counts"] == {
        "raw": {"objects": 3, "rows": 5},
        "quarantine": {"objects": 1, "rows": 3},
        "validated": {"objects": 2, "rows": 5},
        "labels": {"objects": 2, "rows": 5},
        "inference": {"objects": 2, "rows": 5},
        "snapshots": {"objects": 1, "rows": 5},
    }
    assert {o["key"] for o in plan["objects"] if o["zone"] == "snapshots"} == {
        f"snapshots/{seeded.digest}/data.parquet"
    }
    assert seeded.card not in json.dumps(plan)


def test_apply_erases_every_row_of_the_subject_and_keeps_the_rest(seeded: Seeded) -> None:
    from mlflow import MlflowClient

    storage = seeded.storage
    before = _parquet_rows(storage)
    ids_before = {k: set(f.transaction_id) for k, f in before.items()}
    assert sum(_subject_hits(f, seeded) for f in before.values()) == 5 * 5 + 3  # five zones, and quarantine

    result = erase_subject(
        "card_fraud", f"card_number={seeded.card}", apply=True, actor="cli:alice", storage=storage
    )

    after = _parquet_rows(storage)
    assert sum(_subject_hits(f, seeded) for f in after.values()) == 0
    # Every other row is kept: per zone, the transaction ids before less the subject's are those after.
    for zone in ("raw/", "quarantine/", "validated/", "labels/", "inference/", "snapshots/"):
        kept = set().union(*(ids - seeded.keys for k, ids in ids_before.items() if k.startswith(zone)))
        assert set().union(*(set(f.transaction_id) for k, f in after.items() if k.startswith(zone))) == kept

    # Content ids: raw files renamed by their new bytes, the day's validated, labels, quarantine and report
    # objects by the new batch id (a two-file day: the hash of its new file ids).
    raw = [k for k in storage.list("raw/transactions")]
    assert storage.key(seeded.raw1) not in raw and not any(storage.key(u) in raw for u in seeded.raw2)
    for key in raw:
        assert key.rsplit("/", 1)[1] == f"{batch_id_of(storage.read_bytes(key))}.parquet"
    day1_id = raw[0].rsplit("/", 1)[1].removesuffix(".parquet")
    day2_id = day_batch_id([k.rsplit("/", 1)[1].removesuffix(".parquet") for k in raw[1:]])
    assert day2_id != seeded.batch2
    for day, batch in ((DAY1, day1_id), (DAY2, day2_id)):
        for area in ("validated", "labels"):
            assert storage.list(f"{area}/transactions/date={day}") == [
                f"{area}/transactions/date={day}/{batch}.parquet"
            ]
        assert storage.exists(f"reports/validation/transactions/date={day}/{batch}.json")
    reason = storage.read_json(f"quarantine/transactions/date={DAY1}/{day1_id}/reason.json")
    assert reason["batch_id"] == day1_id and reason["raw_uris"] == [storage.uri(raw[0])]

    # The snapshot: a new digest that verifies, relinked to the renamed partitions; the old one is gone.
    (moved,) = result["snapshots"]
    assert moved["from"] == seeded.digest and moved["to"] != seeded.digest
    assert storage.list(f"snapshots/{seeded.digest}") == []
    frame, manifest = load_snapshot(storage, moved["to"])
    assert len(frame) == manifest.row_count == ROWS * 2 - 5
    assert all(storage.exists(p.key) for p in manifest.source_partitions)

    # The version trained on the old snapshot carries the ledger id; the other does not.
    client = MlflowClient(tracking_uri=seeded.tracking_uri, registry_uri=seeded.tracking_uri)
    tags = {str(v.version): v.tags for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert tags["1"][ERASURE_AFFECTED_TAG] == result["ledger_id"]
    assert ERASURE_AFFECTED_TAG not in tags["2"]

    # The ledger: who, what, the counts; never the value nor its token.
    text = storage.read_bytes("ledger/erasure/transactions.jsonl").decode()
    (entry,) = [json.loads(line) for line in text.splitlines()]
    assert seeded.card not in text and token(seeded.card, PII_KEY.encode()) not in text
    assert entry["ledger_id"] == result["ledger_id"] and entry["actor"] == "cli:alice"
    assert entry["column"] == "card_number" and len(entry["subject_hash"]) == 64
    assert entry["counts"]["raw"] == {"objects": 3, "rows": 5}
    assert entry["versions_tagged"] == [{"version": "1", "snapshot": seeded.digest}]

    # A second apply finds nothing and changes nothing.
    contents = _contents(storage)
    again = erase_subject(
        "card_fraud", f"card_number={seeded.card}", apply=True, actor="cli:alice", storage=storage
    )
    assert again["ledger_id"] is None and again["rows"] == 0
    assert _contents(storage) == contents


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("card_number", "it has no '='"),
        ("=4111", "an empty column"),
        ("card_number=", "an empty value"),
        ("iban=DE00", "'iban' is not a column of use case 'card_fraud'"),
    ],
)
def test_a_malformed_subject_or_unknown_column_is_refused_naming_the_columns(subject, expected) -> None:
    with pytest.raises(ErasureRequestError, match=expected) as info:
        parse_subject(subject, load_use_case("card_fraud"))
    assert "customer_id" in str(info.value) and "4111" not in str(info.value)


def test_the_command_refuses_an_unknown_use_case_and_column(capsys, mlloop_env, tmp_path) -> None:
    mlloop_env(data_root=tmp_path / "data", pii_key=PII_KEY)
    assert main(["--use-case", "no_such_case", "--subject", "customer_id=C1"]) == 1
    assert "no_such_case" in capsys.readouterr().err
    assert main(["--use-case", "card_fraud", "--subject", "iban=DE00"]) == 1
    assert "'iban' is not a column" in capsys.readouterr().err


def test_mlloop_erase_reads_the_value_from_stdin_and_runs_the_dry_run(seeded: Seeded) -> None:
    from click.testing import CliRunner

    from mlloop.cli import cli

    if seeded.storage.root.startswith("s3://"):
        pytest.skip("the command opens MLLOOP_DATA_ROOT, the local root here")
    before = _contents(seeded.storage)
    result = CliRunner().invoke(
        cli, ["erase", "--use-case", "card_fraud", "--subject", "card_number=-"], input=f"{seeded.card}\n"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["dry_run"] is True and summary["rows"] == 5 * 5 + 3
    assert _contents(seeded.storage) == before


def test_the_erase_dag_is_a_manual_form_with_apply_off() -> None:
    from mlloop.orchestration.factory.erasure import build_erasure_dag

    use_case = load_use_case("card_fraud")
    dag = build_erasure_dag(use_case)
    params = dag.params.dump()
    assert dag.dag_id == "erase_card_fraud" and dag.schedule is None
    assert params == {"column": "card_number", "value": None, "apply": False}
    assert dag.params.get_param("column").schema["enum"] == use_case.columns


def test_a_csv_delivery_is_rewritten_as_text_in_its_dialect_and_renamed(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from mlloop.lifecycle.erasure import apply_erasure, plan_erasure, subject_of
    from mlloop.usecase import CsvOptions

    declared = load_use_case("card_fraud")
    source = declared.source.model_copy(
        update={"kind": "files", "format": "csv", "uri": "inbox", "csv": CsvOptions(delimiter=";")}
    )
    use_case = declared.model_copy(update={"source": source})
    storage = Storage(str(tmp_path / "data"))
    delivered = b"transaction_id;customer_id;amount\nT1;C1;12,50\nT2;C2;\nT3;C1;3\n"
    old = batch_id_of(delivered)
    raw_uri = storage.write_bytes(f"raw/transactions/date={DAY1}/{old}.csv", delivered)
    storage.write_bytes(f"quarantine/transactions/date={DAY1}/{old}/batch.csv", delivered)
    reason = {"batch_id": old, "raw_uris": [raw_uri]}
    storage.write_json(f"quarantine/transactions/date={DAY1}/{old}/reason.json", reason)
    subject = subject_of(use_case, "customer_id", "C1", PII_KEY.encode())

    plan, keys = plan_erasure(storage, use_case, subject, "hash")
    assert plan.counts()["raw"] == plan.counts()["quarantine"] == {"objects": 1, "rows": 2}
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    at = datetime(2026, 3, 5, tzinfo=UTC)
    apply_erasure(storage, use_case, subject, keys, plan, client=client, model=MODEL, actor="t", at=at)

    kept = b"transaction_id;customer_id;amount\nT2;C2;\n"  # the cells as delivered: "12,50" and "" untouched
    new = batch_id_of(kept)
    assert storage.list("raw") == [f"raw/transactions/date={DAY1}/{new}.csv"]
    assert storage.read_bytes(f"quarantine/transactions/date={DAY1}/{new}/batch.csv") == kept
    moved = storage.read_json(f"quarantine/transactions/date={DAY1}/{new}/reason.json")
    assert moved == {"batch_id": new, "raw_uris": [storage.uri(f"raw/transactions/date={DAY1}/{new}.csv")]}
