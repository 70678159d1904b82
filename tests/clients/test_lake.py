"""The Parquet lake with real clients: with `sluice.lake.after.ms=0`, everything
produced is folded into Parquet under `lake/<topic>/partition=<p>/`, which is then the
one copy of those records. Kafka consumers read back exactly what was produced
(offsets, timestamps and their type, keys, values, repeated headers, nulls), also
after a restart; pyarrow and polars read the same rows in place (on the S3 server in
the S3 passes), and pyiceberg reads them through the topic's Iceberg table. The brokers look for runs to fold every 300 ms (conftest)."""

import os
import random
import time

import polars as pl
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME,
                             Consumer, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic
from pyiceberg.table import StaticTable

from conftest import AWS_TEST_ENV, unique

PARTITIONS = 3
RECORDS = 3000


def lake_location(broker, s3, topic):
    """(pyarrow filesystem, path, polars glob, polars storage options) of a topic's lake."""
    cluster = getattr(broker, "s3", None)
    server = cluster or s3
    if server is None:
        root = os.path.join(broker.data_dir, "objects", "lake", topic)
        return pafs.LocalFileSystem(), root, f"{root}/**/*.parquet", None
    prefix = "cluster" if cluster else "broker"
    fs = pafs.S3FileSystem(endpoint_override=server.endpoint, scheme="http",
                           access_key=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
                           secret_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
                           region=AWS_TEST_ENV["AWS_REGION"])
    path = f"{server.bucket}/{prefix}/lake/{topic}"
    options = {
        "aws_endpoint_url": server.endpoint,
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "aws_region": AWS_TEST_ENV["AWS_REGION"],
        "aws_allow_http": "true",
    }
    return fs, path, f"s3://{path}/**/*.parquet", options


def lake_table(location):
    fs, path, _, _ = location
    try:
        return ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table()
    except (FileNotFoundError, OSError):
        return None


def produce(broker, topic, rng, compression):
    """Produces RECORDS records; returns them by (partition, offset)."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                  "compression.type": compression})
    sent = {}

    def delivered(headers):
        def on_delivery(err, msg):
            assert err is None, err
            # The delivery report carries no headers: keep what was sent.
            sent[(msg.partition(), msg.offset())] = (msg.key(), msg.value(), headers or [],
                                                     msg.timestamp())
        return on_delivery

    for i in range(RECORDS):
        key = None if i % 5 == 0 else b"key-%d" % (i % 17)
        value = None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 600))
        headers = [("h", b"first"), ("h", b"second"), ("none", None)] if i % 3 == 0 else \
            [("trace", b"%d" % i)] if i % 3 == 1 else None
        kwargs = {"headers": headers} if headers else {}
        p.produce(topic, key=key, value=value, partition=i % PARTITIONS,
                  timestamp=1_700_000_000_000 + i, on_delivery=delivered(headers), **kwargs)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return sent


def consume_all(broker, topic, expected_count):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("lake"),
                  "enable.auto.commit": False,
                  "max.partition.fetch.bytes": 16384})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = {}
    deadline = time.time() + 60
    while len(got) < expected_count and time.time() < deadline:
        for m in c.consume(500, 1):
            assert m.error() is None, m.error()
            got[(m.partition(), m.offset())] = (m.key(), m.value(), m.headers() or [],
                                                m.timestamp())
    c.close()
    return got


def wait_for_lake(location, count):
    deadline = time.time() + 60
    table = None
    while time.time() < deadline:
        table = lake_table(location)
        if table is not None and table.num_rows >= count:
            return table
        time.sleep(0.5)
    raise AssertionError(f"lake holds {table.num_rows if table else 0} of {count} rows")


def wait_for_iceberg(location, count):
    """The current snapshot of the topic's Iceberg table, once it holds `count` rows."""
    fs, path, _, options = location
    # The table lives in the lake's Hadoop-catalog warehouse, namespace `kafka`.
    lake, topic = path.rsplit("/", 1)
    path = f"{lake}/_iceberg/kafka/{topic}"
    if options:
        uri = f"s3://{path}"
        props = {"s3.endpoint": options["aws_endpoint_url"],
                 "s3.access-key-id": options["aws_access_key_id"],
                 "s3.secret-access-key": options["aws_secret_access_key"],
                 "s3.region": options["aws_region"]}
    else:
        uri, props = f"file://{path}", {}
    deadline = time.time() + 60
    rows = None
    while time.time() < deadline:
        try:
            with fs.open_input_stream(f"{path}/metadata/version-hint.text") as f:
                version = int(f.read().decode())
        except (FileNotFoundError, OSError):
            time.sleep(0.5)
            continue
        table = StaticTable.from_metadata(f"{uri}/metadata/v{version}.metadata.json", props)
        rows = table.scan().to_arrow()
        if rows.num_rows >= count:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"the Iceberg table holds {rows.num_rows if rows else 0} of {count} rows")


@pytest.mark.parametrize("timestamp_type", ["CreateTime", "LogAppendTime"])
def test_lake_reads_back_identically_through_kafka_pyarrow_and_polars(broker, s3, timestamp_type):
    rng = random.Random(7)
    topic = unique("lake")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={
        "sluice.lake.after.ms": "0", "message.timestamp.type": timestamp_type,
    })])[topic].result(10)
    produced = {}
    for compression in ("none", "zstd"):
        produced.update(produce(broker, topic, rng, compression))
    assert len(produced) == 2 * RECORDS
    location = lake_location(broker, s3, topic)
    table = wait_for_lake(location, len(produced))

    # pyarrow: the same rows, partition from the hive path and the column alike.
    rows = table.to_pylist()
    assert len(rows) == len(produced)
    want_type = 0 if timestamp_type == "CreateTime" else 1
    for r in rows:
        key, value, headers, (ts_type, ts) = produced[(r["partition"], r["offset"])]
        assert (r["key"], r["value"]) == (key, value)
        assert [(h["key"], h["value"]) for h in r["headers"]] == headers
        assert r["timestamp"] == ts and r["timestamp_type"] == timestamp_type
        assert ts_type == (TIMESTAMP_CREATE_TIME if want_type == 0 else TIMESTAMP_LOG_APPEND_TIME)

    # polars, reading the files in place.
    _, _, glob, options = location
    frame = pl.read_parquet(glob, storage_options=options, hive_partitioning=False)
    assert frame.height == len(produced)
    assert frame.select(pl.col("offset").max()).item() == 2 * RECORDS // PARTITIONS - 1
    assert set(frame["partition"].unique().to_list()) == set(range(PARTITIONS))

    # pyiceberg: the topic's Iceberg table holds the same rows.
    table = wait_for_iceberg(location, len(produced))
    assert table.num_rows == len(produced)
    assert sorted(zip(table["partition"].to_pylist(), table["offset"].to_pylist())) == \
        sorted(produced)

    # Kafka consumers: record for record what was produced, from the Parquet.
    assert consume_all(broker, topic, len(produced)) == produced
    assert sum(b.metric("sluice_folds_total", 'format="parquet"')
               for b in getattr(broker, "brokers", [broker])) >= PARTITIONS
    if not hasattr(broker, "brokers"):
        broker.restart()
        assert consume_all(broker, topic, len(produced)) == produced, "after a rebuild"
