"""Retention with real clients: DeleteRecords moves the log start offset (ListOffsets
and consumers from the beginning follow it); retention.ms and retention.bytes move
it by themselves, sparing the active segment (the newest segment.bytes) as Kafka
does; and the janitor then deletes the objects that held only deleted records. The
brokers run retention every 500 ms (conftest)."""

import time

from confluent_kafka import Consumer, OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from conftest import unique

PARTITIONS = 2


def setup(broker, config=None, batches=10, per_batch=10):
    topic = unique("retention")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config or {})])[topic].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    n = 0
    for _ in range(batches):
        for _ in range(per_batch):
            for part in range(PARTITIONS):
                p.produce(topic, value=b"%d" % n, partition=part)
                n += 1
        assert p.flush(30) == 0  # one flush, so one object, per round
    return admin, topic


def earliest(admin, topic, partition):
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10).offset


def latest(admin, topic, partition):
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(10).offset


def first_offset(broker, topic, partition):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    deadline = time.time() + 20
    while time.time() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            c.close()
            return m.offset()
    c.close()
    return None


def deletes(broker):
    return sum(b.metric("sluice_object_store_requests_total", 'kind="delete",outcome="ok"')
               for b in getattr(broker, "brokers", [broker]))


def test_delete_records_moves_the_log_start(broker):
    admin, topic = setup(broker)
    before = deletes(broker)
    got = admin.delete_records([TopicPartition(topic, 0, 55)])
    result = list(got.values())[0].result(10)
    assert result.low_watermark == 55
    assert earliest(admin, topic, 0) == 55
    assert earliest(admin, topic, 1) == 0, "the other partition is untouched"
    assert first_offset(broker, topic, 0) == 55
    # Offset -1 means the high watermark: everything goes.
    list(admin.delete_records([TopicPartition(topic, 1, -1)]).values())[0].result(10)
    assert earliest(admin, topic, 1) == latest(admin, topic, 1) == 100
    # Objects holding only deleted records of both partitions go (about the first
    # five flushes: partition 0 below 55, partition 1 entirely).
    deadline = time.time() + 15
    while deletes(broker) < before + 3 and time.time() < deadline:
        time.sleep(0.2)
    assert deletes(broker) >= before + 3, "the janitor deleted the expired objects"
    assert first_offset(broker, topic, 0) == 55, "what is left still reads"
    # Past the high watermark: refused.
    bad = list(admin.delete_records([TopicPartition(topic, 0, 1000)]).values())[0]
    try:
        bad.result(10)
        raise AssertionError("deleting past the high watermark must fail")
    except Exception as e:
        assert "OFFSET_OUT_OF_RANGE" in str(e), e


def test_retention_ms_and_retention_bytes(broker):
    # As in Kafka, the active segment is never deleted: with segment.bytes=100 it
    # is the last flush's slice.
    admin, by_time = setup(broker, {"retention.ms": "2000", "segment.bytes": "100"})
    deadline = time.time() + 20
    while earliest(admin, by_time, 0) < 90 and time.time() < deadline:
        time.sleep(0.2)
    start = earliest(admin, by_time, 0)
    assert 90 <= start < 100 == latest(admin, by_time, 0), start
    assert first_offset(broker, by_time, 0) == start

    # Ten flushes of about 10 records each per partition; keep about 3 flushes' worth.
    admin, by_size = setup(broker)
    size = latest(admin, by_size, 0)
    # Each flush's slice of a partition is one batch of 10 small records (~100 bytes).
    res = ConfigResource("topic", by_size,
                         set_config={"retention.bytes": "300", "segment.bytes": "100"})
    list(admin.alter_configs([res]).values())[0].result(10)
    deadline = time.time() + 20
    while earliest(admin, by_size, 0) == 0 and time.time() < deadline:
        time.sleep(0.2)
    start = earliest(admin, by_size, 0)
    assert 0 < start < size, f"log start {start}, high watermark {size}"
    assert first_offset(broker, by_size, 0) == start
