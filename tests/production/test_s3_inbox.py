"""A files source's inbox on S3 (moto's server, a non-default endpoint), read with the storage settings."""

from __future__ import annotations

import datetime as dt
import uuid

from mlloop.data.flights import export_days
from mlloop.ingestion.batches import land_batch, open_inbox, publish_validated, validate_landed_batch
from mlloop.ingestion.labels_feed import land_labels
from mlloop.storage import Storage
from mlloop.usecase import load_use_case


def test_the_real_use_case_lands_from_an_s3_inbox_under_the_data_root(
    s3_server, mlloop_env, monkeypatch
) -> None:
    bucket = s3_server.create_bucket(f"inbox-{uuid.uuid4().hex[:12]}")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # only mlloop's own setting may point boto3 at the server
    mlloop_env(data_root=f"s3://{bucket}/platform", s3_endpoint_url=s3_server.endpoint_url)
    use_case = load_use_case("flight_delay")  # source.uri: inbox/flight_delay, relative to the data root

    inbox = open_inbox(use_case)
    assert inbox.root == f"s3://{bucket}/platform/inbox/flight_delay"
    day = dt.date(2026, 4, 1)
    export_days(inbox, "", [dt.date(2013, 6, 3)], (day - dt.date(2013, 6, 3)).days)

    storage = Storage.from_settings()
    landed = land_batch(storage, use_case, day)
    assert landed.raw_uri.startswith(f"s3://{bucket}/platform/raw/flights/date=2026-04-01/")
    assert validate_landed_batch(storage, use_case, landed)["rows"] == 988
    publish_validated(storage, use_case, landed, b"k" * 32)
    # The label feed is read from the same inbox: this day's labels became known on it and the next.
    feed = land_labels(storage, use_case, day + dt.timedelta(days=1))
    assert len(feed.landed) == 2 and feed.rows == 988 and not feed.quarantined
    assert all(uri.startswith(f"s3://{bucket}/platform/labels/flights/date=2026-04-0") for uri in feed.landed)
