"""Consumer groups (classic protocol) with confluent-kafka, kafka-python and aiokafka:
members split the partitions, every record is consumed, commits persist, and
ListGroups/DescribeGroups report the group. (A restarted or killed member, and
members joining and leaving, are tested on both protocols in
test_consumer_protocol.py.)"""

import asyncio
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique

PARTITIONS = 12
N = 1200


def setup_topic(broker, n=N):
    topic = unique("groups")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)
    produce(broker, topic, 0, n)
    return topic


def produce(broker, topic, start, end):
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(start, end):
        p.produce(topic, value=b"%d" % i, partition=i % PARTITIONS)
    assert p.flush(30) == 0


def group_consumer(broker, group, **conf):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        **conf,
    })


def run_members(broker, topic, group, members, until, **conf):
    """Runs consumers in threads until `until(consumed)`; returns what each consumed
    and each one's assignment at the moment `until` held."""
    consumed, assigned, lock = {}, {}, threading.Lock()
    stop = threading.Event()

    def member(n):
        c = group_consumer(broker, group, **conf)
        # The whole current assignment, read after each poll: with an incremental
        # (cooperative) assignor on_assign carries only what was added.
        c.subscribe([topic])
        while not stop.is_set():
            m = c.poll(0.2)
            with lock:
                assigned[n] = sorted(p.partition for p in c.assignment())
            if m is not None and not m.error():
                with lock:
                    consumed.setdefault(n, []).append(int(m.value()))
        c.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    snapshot = {}
    while time.time() < deadline:
        with lock:
            if until(consumed, assigned):
                # What the group looked like when it was done; members leaving
                # below rebalance it again.
                snapshot = dict(assigned)
                break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return consumed, snapshot


def committed(broker, group, topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    c.close()
    return [t.offset for t in got]


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_split_the_partitions(broker, strategy):
    topic = setup_topic(broker)
    group = unique("g")

    def done(consumed, assigned):
        return sum(len(v) for v in consumed.values()) >= N and len(assigned) == 3 \
            and all(len(a) == PARTITIONS // 3 for a in assigned.values())

    consumed, assigned = run_members(broker, topic, group, 3, done,
                                     **{"partition.assignment.strategy": strategy})
    parts = sorted(p for a in assigned.values() for p in a)
    assert parts == list(range(PARTITIONS)), f"each partition to one member: {assigned}"
    assert all(len(a) == 4 for a in assigned.values()), assigned
    values = sorted(v for vs in consumed.values() for v in vs)
    assert values == list(range(N)), "every record consumed exactly once"
    # close() committed what each member consumed.
    assert committed(broker, group, topic) == [N // PARTITIONS] * PARTITIONS


def consume_and_commit(broker, group, topic, n, protocol="classic"):
    """One member subscribes, reads `n` records, commits them and closes."""
    conf = {"enable.auto.commit": False}
    if protocol == "consumer":
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "group.protocol": "consumer", "auto.offset.reset": "earliest", **conf})
    else:
        c = group_consumer(broker, group, **conf)
    c.subscribe([topic])
    seen = 0
    while seen < n:
        m = c.poll(5)
        assert m is not None, "records arrive"
        if not m.error():
            seen += 1
    c.commit(asynchronous=False)
    c.close()


def test_list_and_describe_groups(broker):
    topic = setup_topic(broker, n=120)
    group = unique("g")
    c = group_consumer(broker, group)
    c.subscribe([topic])
    deadline = time.time() + 20
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    mine = [g for g in listed.valid if g.group_id == group]
    assert mine and str(mine[0].state).endswith("STABLE"), listed.valid
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert str(described.state).endswith("STABLE")
    assert len(described.members) == 1
    assert described.members[0].host == "/127.0.0.1", described.members[0].host
    assert sorted(tp.partition for tp in described.members[0].assignment.topic_partitions) \
        == list(range(PARTITIONS))
    c.close()


def test_kafka_python_group(broker):
    from kafka import KafkaConsumer
    topic = setup_topic(broker, n=240)
    group = unique("g")
    got, assignments, lock = [], {}, threading.Lock()
    stop = threading.Event()

    def member(n):
        # One consumer per thread, as applications run them.
        c = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                          auto_offset_reset="earliest", session_timeout_ms=6000,
                          heartbeat_interval_ms=500)
        while not stop.is_set():
            for records in c.poll(timeout_ms=200).values():
                with lock:
                    got.extend(int(r.value) for r in records)
            assignments[n] = sorted(tp.partition for tp in c.assignment())
        c.commit()
        c.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        with lock:
            split = sorted(p for a in assignments.values() for p in a) == list(range(PARTITIONS))
            if len(got) >= 240 and len(assignments) == 2 and split \
                    and all(assignments.values()):
                break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert sorted(got) == list(range(240))
    assert sorted(p for a in assignments.values() for p in a) == list(range(PARTITIONS)), assignments
    assert all(assignments.values()), f"both members got partitions: {assignments}"
    assert committed(broker, group, topic) == [20] * PARTITIONS


def test_aiokafka_group(broker):
    from aiokafka import AIOKafkaConsumer
    topic = setup_topic(broker, n=240)
    group = unique("g")

    async def run():
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                                      auto_offset_reset="earliest", session_timeout_ms=6000,
                                      heartbeat_interval_ms=500)
                     for _ in range(2)]
        for c in consumers:
            await c.start()
        got = []
        deadline = time.time() + 60
        while len(got) < 240 and time.time() < deadline:
            for c in consumers:
                batch = await c.getmany(timeout_ms=200)
                for records in batch.values():
                    got.extend(int(r.value) for r in records)
        assignments = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        for c in consumers:
            await c.commit()
            await c.stop()
        return got, assignments

    got, assignments = asyncio.run(run())
    assert sorted(got) == list(range(240))
    assert sorted(p for a in assignments for p in a) == list(range(PARTITIONS)), assignments
    assert committed(broker, group, topic) == [20] * PARTITIONS


def test_a_static_member_restarts_without_a_rebalance(broker):
    topic = setup_topic(broker, n=120)
    group = unique("g")
    events = {"a": [], "b": []}

    def start(name):
        c = group_consumer(broker, group, **{"group.instance.id": name})
        c.subscribe([topic],
                    on_assign=lambda c, ps: events[name].append(("assign", sorted(p.partition for p in ps))),
                    on_revoke=lambda c, ps: events[name].append(("revoke", sorted(p.partition for p in ps))))
        return c

    a, b = start("a"), start("b")
    deadline = time.time() + 30
    while time.time() < deadline and not (events["a"] and events["b"]
                                          and len(a.assignment()) + len(b.assignment()) == PARTITIONS):
        a.poll(0.1)
        b.poll(0.1)
    first_a = sorted(p.partition for p in a.assignment())
    assert first_a and len(first_a) + len(b.assignment()) == PARTITIONS
    b_events = list(events["b"])

    a.close()                      # a static member does not leave the group
    a = start("a")
    deadline = time.time() + 15
    while time.time() < deadline and not a.assignment():
        a.poll(0.1)
        b.poll(0.1)
    for _ in range(20):            # give a rebalance, if any, time to show
        a.poll(0.1)
        b.poll(0.1)
    assert sorted(p.partition for p in a.assignment()) == first_a, "same partitions back"
    assert events["b"] == b_events, f"the other member saw no rebalance: {events['b']}"
    a.close()
    b.close()


def test_a_group_with_only_offsets_is_listed_and_its_lag_computed(broker):
    topic = setup_topic(broker, n=120)                 # 10 records per partition
    group = unique("g")
    consume_and_commit(broker, group, topic, 60)
    # Its members are gone, and so is every coordinator's memory of it.
    for b in getattr(broker, "brokers", [broker]):
        b.restart(signal.SIGKILL)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    deadline = time.time() + 30
    mine = []
    while not mine and time.time() < deadline:
        listed = admin.list_consumer_groups().result(timeout=10)
        mine = [g for g in listed.valid if g.group_id == group]
        time.sleep(0.2)
    assert mine and str(mine[0].state).endswith("EMPTY"), mine
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert str(described.state).endswith("EMPTY") and not described.members

    # Lag: high watermark minus committed offset, summed over partitions.
    offsets = committed(broker, group, topic)
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lag-probe"})
    lag = 0
    for p, off in enumerate(offsets):
        _, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        assert high == 10
        lag += high - max(off, 0)
    probe.close()
    assert lag == 120 - 60


def test_a_replaced_static_member_is_fenced(broker):
    """librdkafka's static-membership tests: a consumer started with the
    group.instance.id of a live one replaces it; the replaced one's next commit (and
    heartbeat) answers FENCED_INSTANCE_ID, as Kafka does, not UNKNOWN_MEMBER_ID."""
    from confluent_kafka import KafkaError, KafkaException
    topic = setup_topic(broker, n=24)
    group = unique("g")

    def start():
        c = group_consumer(broker, group, **{"group.instance.id": "only",
                                             "enable.auto.commit": False})
        c.subscribe([topic])
        deadline = time.time() + 30
        while time.time() < deadline and not c.assignment():
            c.poll(0.1)
        assert c.assignment(), "no assignment"
        return c

    old = start()
    new = start()
    with pytest.raises(KafkaException) as fenced:
        old.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    assert fenced.value.args[0].code() == KafkaError.FENCED_INSTANCE_ID, fenced.value
    new.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    new.close()
