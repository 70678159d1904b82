"""Transactions through librdkafka (confluent-kafka), RFC 0010: committed
transactions are visible to read_committed consumers and aborted ones are not
(while read_uncommitted consumers see both), a consume-transform-produce loop
commits its input offsets in the transaction, a zombie producer is fenced, and a
transaction left open past its timeout is aborted by the coordinator."""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique


def create(broker, name, partitions=1):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=10)


def txn_producer(broker, txn_id, **conf):
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        **conf,
    })
    p.init_transactions(30)
    return p


def drain(broker, topic, partitions, isolation, idle=3.0, group=None):
    """Every message of `topic`, read until nothing new comes for `idle` seconds."""
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group or unique("reader"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    last = time.time()
    deadline = time.time() + 60
    while time.time() - last < idle and time.time() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append(m.value().decode())
            last = time.time()
    c.close()
    return out


def test_read_committed_sees_committed_transactions_only(broker):
    topic = unique("txn")
    create(broker, topic, partitions=3)
    p = txn_producer(broker, unique("tx"))
    for t in range(6):
        p.begin_transaction()
        for i in range(50):
            p.produce(topic, f"t{t}-{i}".encode(), partition=i % 3)
        if t % 2 == 0:
            p.commit_transaction(30)
        else:
            # Sent first: librdkafka drops what it has not sent when it aborts.
            p.flush(10)
            p.abort_transaction(30)

    committed = drain(broker, topic, 3, "read_committed")
    assert sorted(committed) == sorted(f"t{t}-{i}" for t in (0, 2, 4) for i in range(50))
    everything = drain(broker, topic, 3, "read_uncommitted")
    assert len(everything) == 300


def test_an_open_transaction_holds_read_committed_back(broker):
    topic = unique("open")
    create(broker, topic)
    p = txn_producer(broker, unique("tx"))
    p.begin_transaction()
    p.produce(topic, b"pending", partition=0)
    p.flush(10)
    assert drain(broker, topic, 1, "read_committed", idle=2) == []
    assert drain(broker, topic, 1, "read_uncommitted", idle=2) == ["pending"]
    p.commit_transaction(30)
    assert drain(broker, topic, 1, "read_committed") == ["pending"]


def test_consume_transform_produce_commits_offsets_with_the_output(broker):
    source, sink, group = unique("in"), unique("out"), unique("ctp")
    create(broker, source)
    create(broker, sink)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        plain.produce(source, str(i).encode(), partition=0)
    plain.flush(10)

    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    c.assign([TopicPartition(source, 0, 0)])
    p = txn_producer(broker, unique("ctp-tx"))
    seen = 0
    round_no = 0
    deadline = time.time() + 60
    while seen < 100 and time.time() < deadline:
        msgs = [m for m in c.consume(num_messages=20, timeout=1) if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(sink, (m.value().decode() + "!").encode(), partition=0)
        positions = [TopicPartition(source, 0, msgs[-1].offset() + 1)]
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        if round_no == 1:
            # One round aborted: its output must vanish and its input be read again.
            p.abort_transaction(30)
            c.seek(TopicPartition(source, 0, msgs[0].offset()))
        else:
            p.commit_transaction(30)
            seen += len(msgs)
        round_no += 1
    c.close()
    assert seen == 100

    out = drain(broker, sink, 1, "read_committed")
    assert sorted(out, key=lambda v: int(v[:-1])) == [f"{i}!" for i in range(100)]
    # The group's committed offset came with the last transaction.
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    deadline = time.time() + 15
    while True:
        committed = check.committed([TopicPartition(source, 0)], timeout=10)[0].offset
        if committed == 100 or time.time() > deadline:
            break
        time.sleep(0.2)
    check.close()
    assert committed == 100


def test_a_new_producer_with_the_same_id_fences_the_old_one(broker):
    topic, txn_id = unique("fence"), unique("tx")
    create(broker, topic)
    old = txn_producer(broker, txn_id)
    old.begin_transaction()
    old.produce(topic, b"zombie", partition=0)
    old.flush(10)

    new = txn_producer(broker, txn_id)  # aborts the old one's transaction
    new.begin_transaction()
    new.produce(topic, b"fresh", partition=0)
    new.commit_transaction(30)

    with pytest.raises(KafkaException) as e:
        old.produce(topic, b"late", partition=0)
        old.commit_transaction(10)
    assert e.value.args[0].fatal() or e.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    assert drain(broker, topic, 1, "read_committed") == ["fresh"]


def test_a_transaction_past_its_timeout_is_aborted(broker):
    topic = unique("timeout")
    create(broker, topic)
    p = txn_producer(broker, unique("tx"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, b"abandoned", partition=0)
    p.flush(10)
    # The coordinator aborts it: the stable offset moves past it.
    deadline = time.time() + 20
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("w"),
                  "isolation.level": "read_committed"})
    while time.time() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)
        if high >= 2:  # the record and the abort marker
            break
        time.sleep(0.5)
    c.close()
    assert high >= 2
    assert drain(broker, topic, 1, "read_committed", idle=2) == []


def test_offsets_pending_in_a_transaction_are_unstable_until_it_commits(broker):
    """KIP-447: a read_committed consumer's offset fetch (require_stable) does not
    answer while a transaction holds offsets for the group, then sees them."""
    source, group = unique("stable-in"), unique("stable")
    create(broker, source)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    p = txn_producer(broker, unique("stable-tx"))
    p.begin_transaction()
    p.send_offsets_to_transaction([TopicPartition(source, 0, 7)],
                                  c.consumer_group_metadata(), 30)
    with pytest.raises(KafkaException) as e:
        c.committed([TopicPartition(source, 0)], timeout=3)
    assert e.value.args[0].code() in (KafkaError._TIMED_OUT, KafkaError.UNSTABLE_OFFSET_COMMIT)
    p.commit_transaction(30)
    deadline = time.time() + 15
    while True:
        try:
            committed = c.committed([TopicPartition(source, 0)], timeout=5)[0].offset
        except KafkaException:
            committed = None
        if committed == 7 or time.time() > deadline:
            break
        time.sleep(0.2)
    c.close()
    assert committed == 7
