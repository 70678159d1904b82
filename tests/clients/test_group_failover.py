"""A consumer group on a 3-broker cluster whose coordinator's broker is killed with
SIGKILL mid-consumption, on the classic protocol and on KIP-848: the group finds the
new coordinator and carries on without a rebalance (the new coordinator loads the
group's state), every record is consumed at least once, and committed offsets never
go backwards.

Runs on its own cluster (etcd + S3 server + 3 brokers), whatever the suite's mode."""

import signal
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import pytest

from conftest import Cluster, unique

PARTITIONS = 12


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(3)
    yield c
    c.stop()


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    c.close()
    return [t.offset for t in got]


PROTOCOLS = {
    # The session outlasts the coordinator's failover (lease TTL 6 s), or librdkafka
    # gives its partitions up on its own.
    "classic": {"session.timeout.ms": 15000, "heartbeat.interval.ms": 500},
    # KIP-848: the broker sets the heartbeat interval and session timeout.
    "consumer": {"group.protocol": "consumer"},
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_group_survives_its_coordinator_being_killed(cluster, protocol):
    bootstrap = cluster.bootstrap
    topic, group = unique("gf"), unique("g")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)

    produced, consumed, lock = [0], set(), threading.Lock()
    stop = threading.Event()

    def producer():
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "linger.ms": 5})
        while not stop.is_set():
            p.produce(topic, value=b"%d" % produced[0], partition=produced[0] % PARTITIONS)
            produced[0] += 1
            p.poll(0)
            time.sleep(0.002)
        assert p.flush(60) == 0

    def member():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "auto.commit.interval.ms": 200,
                      **PROTOCOLS[protocol]})
        def rebalanced(*_):
            with lock:
                rebalances.append(time.time())

        c.subscribe([topic], on_assign=rebalanced, on_revoke=rebalanced, on_lost=rebalanced)
        while not stop.is_set() or time.time() < drain_until[0]:
            m = c.poll(0.2)
            if m is not None and not m.error():
                with lock:
                    consumed.add(int(m.value()))
        c.close()

    drain_until, rebalances = [float("inf")], []
    threads = [threading.Thread(target=producer)] + [threading.Thread(target=member) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(5)

    before = committed(bootstrap, group, topic)
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    coordinator = described.coordinator.id
    assert len(described.members) == 3, described.members
    cluster.brokers[coordinator - 1].stop(signal.SIGKILL)
    killed = time.time()

    # The group carries on: new records keep being consumed.
    with lock:
        seen_at_kill = len(consumed)
    while time.time() < killed + 30:
        with lock:
            if len(consumed) > seen_at_kill + 500:
                break
        time.sleep(0.1)
    resumed = time.time() - killed
    with lock:
        assert len(consumed) > seen_at_kill + 500, "consumption resumed after the kill"

    # The shard moves within the lease TTL (6 s); give the group time on the new
    # coordinator before the broker comes back (and takes shards back).
    time.sleep(max(0.0, killed + 12 - time.time()))
    restarted = time.time()
    cluster.brokers[coordinator - 1].start()
    time.sleep(3)
    stop.set()
    threads[0].join(timeout=60)
    drain_until[0] = time.time() + 15
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            if len(consumed) >= produced[0]:
                break
        time.sleep(0.2)
    for t in threads[1:]:
        t.join(timeout=60)

    assert consumed >= set(range(produced[0])), \
        f"{produced[0] - len(consumed & set(range(produced[0])))} records never consumed"
    after = committed(bootstrap, group, topic)
    assert all(a >= b for a, b in zip(after, before)), f"commits went backwards: {before} -> {after}"
    after_kill = [t for t in rebalances if killed <= t < restarted]
    print(f"{protocol}: coordinator broker {coordinator} killed; "
          f"consumption resumed after {resumed:.1f} s; "
          f"{len(after_kill)} rebalance callbacks in the {restarted - killed:.0f} s before "
          f"the broker restarted")
    # The new coordinator loaded the group from the metadata store: members kept
    # their ids, generation (epochs) and partitions.
    assert not after_kill, "no rebalance merely because the coordinator moved"
