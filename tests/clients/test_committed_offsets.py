"""Committed offsets without group membership: consumers that assign partitions
themselves commit and read back offsets (with metadata) through the group
coordinator, and the offsets survive a restart of every broker. OffsetDelete removes
offsets of topics no member subscribes to, and offsets of groups that have been empty
longer than offsets.retention.minutes expire."""

import shutil
import signal
import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.structs import OffsetAndMetadata

from conftest import Broker, unique


def setup_topic(broker, partitions=3, records=30):
    topic = unique("commits")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=10)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(records):
        p.produce(topic, value=b"%d" % i, partition=i % partitions)
    assert p.flush(30) == 0
    return topic


def consumer(broker, group):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })


def test_commit_and_read_back_with_confluent_kafka(broker):
    topic = setup_topic(broker)
    group = unique("g")
    c = consumer(broker, group)
    commits = [TopicPartition(topic, 0, 4, metadata="checkpoint-a"),
               TopicPartition(topic, 2, 7)]
    c.commit(offsets=commits, asynchronous=False)
    got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    assert [(t.partition, t.offset) for t in got] == [(0, 4), (1, -1001), (2, 7)]
    assert got[0].metadata == "checkpoint-a"

    # A later commit of one partition keeps the others.
    c.commit(offsets=[TopicPartition(topic, 2, 9)], asynchronous=False)
    got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    assert [t.offset for t in got] == [4, -1001, 9]

    # A consumer starting from the committed offsets reads from there.
    c.assign([TopicPartition(topic, 0)])   # OFFSET_STORED by default
    msg = c.poll(10)
    assert msg is not None and not msg.error()
    assert (msg.partition(), msg.offset()) == (0, 4)
    c.close()

    # Another group sees nothing of it.
    other = consumer(broker, unique("g"))
    assert other.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == -1001
    other.close()


def test_commit_and_read_back_with_kafka_python(broker):
    topic = setup_topic(broker)
    group = unique("g")
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                      enable_auto_commit=False)
    tp = KpTopicPartition(topic, 1)
    c.assign([tp])
    c.commit({tp: OffsetAndMetadata(6, "from-kafka-python", -1)})
    assert c.committed(tp) == 6
    c.close()


def test_offsets_survive_a_restart_of_every_broker(broker):
    topic = setup_topic(broker)
    group = unique("g")
    c = consumer(broker, group)
    c.commit(offsets=[TopicPartition(topic, 1, 11)], asynchronous=False)
    c.close()
    for b in getattr(broker, "brokers", [broker]):
        b.restart(signal.SIGKILL)
    c = consumer(broker, group)
    got = c.committed([TopicPartition(topic, 1)], timeout=30)
    assert got[0].offset == 11
    c.close()


def test_offset_delete_with_kafka_python(broker):
    from kafka import KafkaAdminClient
    from kafka.errors import GroupSubscribedToTopicError, NoError
    topic = setup_topic(broker)
    group = unique("g")
    c = consumer(broker, group)
    c.commit(offsets=[TopicPartition(topic, p, 5 + p) for p in range(3)], asynchronous=False)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    result = admin.delete_group_offsets(group, [KpTopicPartition(topic, 1)])
    assert result == {KpTopicPartition(topic, 1): NoError}
    got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    assert [t.offset for t in got] == [5, -1001, 7]
    c.close()

    # While a member subscribes to the topic, its offsets stay.
    member = consumer(broker, group)
    member.subscribe([topic])
    while not member.assignment():
        member.poll(0.2)
    result = admin.delete_group_offsets(group, [KpTopicPartition(topic, 0)])
    assert result == {KpTopicPartition(topic, 0): GroupSubscribedToTopicError}
    member.close()
    admin.close()


def test_offsets_of_empty_groups_expire_after_the_retention(tmp_path):
    # Its own broker, with offsets.retention.minutes = 0.05 (3 s).
    b = Broker(str(tmp_path), ["--offsets-retention-minutes=0.05"]).start()
    try:
        topic = setup_topic(b)
        idle, active = unique("g"), unique("g")
        c = consumer(b, idle)
        c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        c.close()
        member = consumer(b, active)
        member.subscribe([topic])
        while not member.assignment():
            member.poll(0.2)
        member.commit(offsets=[TopicPartition(topic, 1, 4)], asynchronous=False)

        deadline = time.time() + 30
        probe = consumer(b, idle)
        while time.time() < deadline:
            if probe.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == -1001:
                break
            member.poll(0.2)
        expired = time.time() - deadline + 30
        assert probe.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == -1001
        probe.close()
        # The idle group is gone; the one with a member keeps its offsets.
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        listed = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
        assert idle not in listed and active in listed, listed
        assert member.committed([TopicPartition(topic, 1)], timeout=10)[0].offset == 4
        member.close()
        print(f"offsets of the idle group expired {expired:.1f} s after the commit (retention 3 s)")
    finally:
        b.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_commit_from_outside_an_active_group_is_refused(broker, protocol):
    """Kafka takes a commit with generation -1 (an admin reset, a consumer that
    assigns itself) only while the group has no members: into a live group it is
    UNKNOWN_MEMBER_ID, and the offsets stay as the members left them."""
    topic = setup_topic(broker, partitions=1, records=10)
    group = unique("g")
    member = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group,
        "group.protocol": protocol, "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    member.subscribe([topic])
    deadline = time.time() + 30
    while not member.assignment() and time.time() < deadline:
        member.poll(0.5)
    assert member.assignment(), "the member got no partition"
    member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    reset = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 9)])])[group]
    with pytest.raises(KafkaException) as refused:
        parts = reset.result(timeout=10).topic_partitions
        for p in parts:   # errors come per partition
            if p.error:
                raise KafkaException(p.error)
    assert refused.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID, refused.value

    outsider = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group,
        "enable.auto.commit": False,
    })
    with pytest.raises(KafkaException) as refused:
        outsider.commit(offsets=[TopicPartition(topic, 0, 8)], asynchronous=False)
    assert refused.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID, refused.value
    got = outsider.committed([TopicPartition(topic, 0)], timeout=10)
    assert got[0].offset == 3
    outsider.close()

    # Once the group is empty, the same reset is taken.
    member.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        parts = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 9)])]
        )[group].result(timeout=10).topic_partitions
        if not parts[0].error:
            break
        time.sleep(0.5)
    assert not parts[0].error, parts[0].error


def test_deleting_a_topic_deletes_its_committed_offsets(broker):
    """Offsets committed for a topic do not outlive it: a group consuming a
    re-created topic of the same name starts where auto.offset.reset says."""
    topic = setup_topic(broker, partitions=2, records=20)
    group = unique("g")
    c = consumer(broker, group)
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 9)],
             asynchronous=False)
    c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=10)
    deadline = time.time() + 30
    while True:
        try:
            admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=10)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce(topic, value=b"new-%d" % i, partition=i % 2)
    assert p.flush(30) == 0

    c = consumer(broker, group)
    got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert [t.offset for t in got] == [-1001, -1001], got
    c.subscribe([topic])
    first = {}
    deadline = time.time() + 30
    while len(first) < 2 and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            first.setdefault(msg.partition(), msg.offset())
    c.close()
    assert first == {0: 0, 1: 0}, first
