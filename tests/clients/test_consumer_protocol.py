"""Consumer groups on the KIP-848 protocol (`group.protocol=consumer`, librdkafka via
confluent-kafka): the coordinator assigns partitions itself (uniform and range
assignors) and members converge incrementally. Members split the partitions, join
and leave without a stop-the-world rebalance, a killed member's partitions move
after the session timeout, every record is consumed at least once, committed
offsets never go backwards, and the admin API reports the group as a consumer
group. The brokers run with a 500 ms heartbeat interval and a 6 s session timeout
(conftest)."""

import multiprocessing
import os
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupType
from confluent_kafka.admin import AdminClient

from conftest import unique
from test_groups import PARTITIONS, committed, consume_and_commit, produce, setup_topic

N = 1200


PROTOCOLS = {
    "consumer": {"group.protocol": "consumer"},
    "classic": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                "partition.assignment.strategy": "cooperative-sticky"},
}


def member_conf(broker, group, protocol="consumer", **conf):
    return {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        **PROTOCOLS[protocol],
        **conf,
    }


class Member(threading.Thread):
    """One consumer in its own thread: records what it consumes and what it holds."""

    def __init__(self, broker, group, topics, seen, lock, **conf):
        # A daemon: a test that fails before `leave` must not hold pytest open.
        super().__init__(daemon=True)
        self.consumer = Consumer(member_conf(broker, group, **conf))
        self.topics, self.seen, self.lock = topics, seen, lock
        self.held = []
        self.stop = threading.Event()

    def run(self):
        self.consumer.subscribe(self.topics)
        while not self.stop.is_set():
            m = self.consumer.poll(0.2)
            if m is not None and not m.error():
                with self.lock:
                    self.seen.append((m.partition(), int(m.value())))
            self.held = sorted(p.partition for p in self.consumer.assignment())
        self.consumer.close()

    def leave(self):
        self.stop.set()
        self.join(timeout=60)


def wait_for(cond, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def split_evenly(members, per):
    return lambda: sorted(p for m in members for p in m.held) == list(range(PARTITIONS)) \
        and all(len(m.held) == per for m in members)


@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_three_members_split_the_partitions(broker, assignor):
    topic = setup_topic(broker)
    group = unique("g848")
    seen, lock = [], threading.Lock()
    members = [Member(broker, group, [topic], seen, lock, **{"group.remote.assignor": assignor})
               for _ in range(3)]
    for m in members:
        m.start()
    assert wait_for(lambda: len(seen) >= N and split_evenly(members, 4)()), \
        [m.held for m in members]
    if assignor == "range":
        assert sorted(m.held for m in members) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for m in members:
        m.leave()
    assert sorted(v for _, v in seen) == list(range(N)), "every record consumed exactly once"
    # close() committed what each member consumed.
    assert committed(broker, group, topic) == [N // PARTITIONS] * PARTITIONS

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert str(described.state).endswith("EMPTY") and not described.members


# The classic protocol (with cooperative-sticky) goes through the same join and leave.
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_members_join_and_leave_and_commits_never_go_backwards(broker, protocol):
    topic = setup_topic(broker)
    group = unique("g848")
    seen, lock = [], threading.Lock()
    history = []

    def watch_commits(stop):
        while not stop.is_set():
            history.append(committed(broker, group, topic))
            time.sleep(0.3)

    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_commits, args=(stop_watch,))
    watcher.start()
    conf = {"auto.commit.interval.ms": 200, "protocol": protocol}
    first = Member(broker, group, [topic], seen, lock, **conf)
    first.start()
    assert wait_for(split_evenly([first], 12))

    # Two more join: the first gives up two thirds of its partitions.
    others = [Member(broker, group, [topic], seen, lock, **conf) for _ in range(2)]
    joined = time.time()
    for m in others:
        m.start()
    assert wait_for(split_evenly([first, *others], 4)), [m.held for m in (first, *others)]
    join_took = time.time() - joined
    produce(broker, topic, N, 2 * N)

    # One leaves: the two left take its partitions.
    left = time.time()
    others[0].leave()
    rest = [first, others[1]]
    assert wait_for(split_evenly(rest, 6)), [m.held for m in rest]
    leave_took = time.time() - left
    produce(broker, topic, 2 * N, 3 * N)
    assert wait_for(lambda: {v for _, v in seen} >= set(range(3 * N)))
    for m in rest:
        m.leave()
    stop_watch.set()
    watcher.join()

    history.append(committed(broker, group, topic))
    print(f"{protocol}: 2 joined, split 4/4/4 after {join_took:.2f} s; "
          f"1 left, split 6/6 after {leave_took:.2f} s")
    assert history[-1] == [3 * N // PARTITIONS] * PARTITIONS
    for before, after in zip(history, history[1:]):
        assert all(a >= b for a, b in zip(after, before)), f"{before} -> {after}"


def _consume_forever(conf, topic, ready):
    # It never commits, so everything it read must be read again by the survivor.
    c = Consumer({**conf, "enable.auto.commit": False})
    c.subscribe([topic], on_assign=lambda *_: ready.set())
    while True:
        c.poll(0.2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_killed_member_loses_its_partitions_after_the_session_timeout(broker, protocol):
    topic = setup_topic(broker, n=120)
    group = unique("g848")
    ready = multiprocessing.Event()
    victim = multiprocessing.Process(target=_consume_forever,
                                     args=(member_conf(broker, group, protocol), topic, ready))
    victim.start()
    assert ready.wait(30), "the first member got an assignment"
    seen, lock = [], threading.Lock()
    survivor = Member(broker, group, [topic], seen, lock, protocol=protocol)
    survivor.start()
    assert wait_for(lambda: len(survivor.held) == 6), survivor.held
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    killed = time.time()
    assert wait_for(lambda: len(survivor.held) == PARTITIONS), survivor.held
    took = time.time() - killed
    assert wait_for(lambda: {v for _, v in seen} >= set(range(120)))
    survivor.leave()
    print(f"{protocol}: the survivor held every partition {took:.1f} s after the kill "
          "(session timeout 6 s)")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_restarted_member_resumes_after_its_commits(broker, protocol):
    topic = setup_topic(broker)
    group = unique("g848")
    consume_and_commit(broker, group, topic, 600, protocol)
    positions = committed(broker, group, topic)
    assert sum(max(o, 0) for o in positions) == 600, positions

    # Every partition gets more records, so each has a first record to check.
    produce(broker, topic, N, 2 * N)
    c = Consumer(member_conf(broker, group, protocol, **{"enable.auto.commit": False}))
    c.subscribe([topic])
    first = {}
    deadline = time.time() + 30
    while len(first) < PARTITIONS and time.time() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            first.setdefault(m.partition(), m.offset())
    c.close()
    assert len(first) == PARTITIONS, first
    for p, o in first.items():
        assert o == max(positions[p], 0), f"partition {p} resumed at {o}, committed {positions[p]}"


def test_regex_subscription_and_admin_views(broker):
    prefix = unique("rx")
    topics = [setup_topic_named(broker, f"{prefix}-{i}") for i in range(2)]
    group = unique("g848")
    seen, lock = [], threading.Lock()
    m = Member(broker, group, [f"^{prefix}-.*"], seen, lock)
    m.start()
    assert wait_for(lambda: len(seen) >= 2 * 120), len(seen)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    mine = [g for g in listed.valid if g.group_id == group]
    assert mine and str(mine[0].state).endswith("STABLE"), listed.valid
    assert str(mine[0].type).endswith("CONSUMER"), mine[0].type
    # ListGroups v5 filters by type.
    classic = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(timeout=10)
    assert group not in {g.group_id for g in classic.valid}
    consumer = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(timeout=10)
    assert group in {g.group_id for g in consumer.valid}
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert str(described.state).endswith("STABLE")
    assert described.partition_assignor == "uniform"
    [member] = described.members
    assert member.host == "/127.0.0.1", member.host
    held = sorted((tp.topic, tp.partition) for tp in member.assignment.topic_partitions)
    assert held == sorted((t, p) for t in topics for p in range(PARTITIONS)), held
    m.leave()


def setup_topic_named(broker, topic):
    from confluent_kafka.admin import NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)
    produce(broker, topic, 0, 120)
    return topic


def test_a_classic_member_cannot_join_a_consumer_group(broker):
    topic = setup_topic(broker, n=120)
    group = unique("g848")
    seen, lock = [], threading.Lock()
    m = Member(broker, group, [topic], seen, lock)
    m.start()
    assert wait_for(lambda: len(m.held) == PARTITIONS)
    classic = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                        "session.timeout.ms": 6000})
    classic.subscribe([topic])
    errors = []
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        msg = classic.poll(0.2)
        if msg is not None and msg.error():
            errors.append(msg.error())
    classic.close()
    assert errors and "INCONSISTENT_GROUP_PROTOCOL" in str(errors[0]), errors
    assert len(m.held) == PARTITIONS, "the consumer group kept its partitions"
    m.leave()
