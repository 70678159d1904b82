"""Log compaction with real clients: on a topic with `cleanup.policy=compact`, the
history before the active segment keeps only the latest record per key, tombstones
go after `delete.retention.ms`, offsets keep their gaps, and ListOffsets still
reports the same earliest and latest offsets. A record without a key is refused,
as Kafka refuses it. The brokers look for work every 300 ms (conftest)."""

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from conftest import unique

KEYS = 20
ROUNDS = 10


def consume_all(broker, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("compact"),
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.time() + 20
    while time.time() < deadline:
        m = c.poll(1)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                break
            raise KafkaException(m.error())
        out.append((m.offset(), m.key(), m.value()))
    c.close()
    return out


def offsets(admin, topic):
    tp = TopicPartition(topic, 0)
    return tuple(admin.list_offsets({tp: spec})[tp].result(10).offset
                 for spec in (OffsetSpec.earliest(), OffsetSpec.latest()))


def test_compaction_keeps_the_latest_value_per_key(broker):
    topic = unique("compact")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0",
    })])[topic].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    latest = {}
    for r in range(ROUNDS):
        for k in range(KEYS):
            key, value = b"key-%d" % k, b"round-%d-key-%d" % (r, k)
            p.produce(topic, key=key, value=value)
            latest[key] = value
        assert p.flush(30) == 0
    for k in range(5):  # tombstones
        p.produce(topic, key=b"key-%d" % k, value=None)
        del latest[b"key-%d" % k]
    assert p.flush(30) == 0
    # Later records, so the tombstones leave the active segment (the last 1 KiB).
    for i in range(3):
        p.produce(topic, key=b"filler", value=b"x" * 600)
        assert p.flush(30) == 0
    latest[b"filler"] = b"x" * 600
    produced = ROUNDS * KEYS + 5 + 3
    assert offsets(admin, topic) == (0, produced)

    # A record without a key is refused.
    errors = []
    p.produce(topic, key=None, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD

    deadline = time.time() + 30
    while True:
        records = consume_all(broker, topic)
        if len(records) <= KEYS or time.time() > deadline:
            break
        time.sleep(0.5)
    offsets_seen = [o for o, _, _ in records]
    assert offsets_seen == sorted(set(offsets_seen)), "ascending, no repeats"
    assert len(records) <= len(latest) + 2, records  # + the filler in the active segment
    last = {}
    for _, key, value in records:
        last[key] = value
    assert last == latest
    assert not any(k == b"key-%d" % i for _, k, _ in records for i in range(5)), "tombstoned"
    # The log still spans the same offsets.
    assert offsets(admin, topic) == (0, produced)
    assert sum(b.metric("sluice_log_cleanings_total")
               for b in getattr(broker, "brokers", [broker])) >= 1


def test_compact_and_delete_both_apply(broker):
    topic = unique("compact-delete")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "cleanup.policy": "compact,delete", "segment.bytes": "1024",
        "retention.ms": "86400000", "min.cleanable.dirty.ratio": "0.01",
        # Old timestamps would otherwise send everything to the lake at once.
        "sluice.lake.after.ms": "-1",
    })])[topic].result(10)
    # One batch per round.
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})

    def produce_round(r, timestamp):
        for k in range(KEYS):
            p.produce(topic, key=b"key-%d" % k, value=b"round-%d-key-%d" % (r, k),
                      timestamp=timestamp)
        assert p.flush(30) == 0

    # Rounds 0-7 are two days old: retention deletes all but the active segment
    # (round 7, the last 1 KiB).
    two_days_ago = int(time.time() * 1000) - 2 * 86_400_000
    for r in range(8):
        produce_round(r, two_days_ago)
    deadline = time.time() + 30
    while offsets(admin, topic)[0] < 7 * KEYS and time.time() < deadline:
        time.sleep(0.3)
    assert offsets(admin, topic) == (7 * KEYS, 8 * KEYS)

    # Rounds 8 and 9 are new: compaction leaves one record per key before the
    # active segment (round 9). Round 7, no longer active, is either deleted by
    # time or, if the cleaner got to it first, merged with round 8 (whose newer
    # timestamps then keep it), as in Kafka; either way its values are superseded.
    for r in (8, 9):
        produce_round(r, int(time.time() * 1000))
    deadline = time.time() + 30
    while time.time() < deadline:
        records = consume_all(broker, topic)
        if len(records) <= 2 * KEYS:
            break
        time.sleep(0.3)
    earliest, latest = offsets(admin, topic)
    assert earliest >= 7 * KEYS and latest == 10 * KEYS
    before_active = [(k, v) for o, k, v in records if o < 9 * KEYS]
    assert len(before_active) == KEYS == len({k for k, _ in before_active}), before_active
    assert all(v.startswith(b"round-8-") for _, v in before_active)
    assert [v for o, _, v in records if o >= 9 * KEYS] == \
        [b"round-9-key-%d" % k for k in range(KEYS)]
