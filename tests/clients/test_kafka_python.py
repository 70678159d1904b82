"""kafka-python, an independent client implementation."""

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidTopicError, TopicAlreadyExistsError

from conftest import unique

N = 20_000


def test_admin_errors(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    name = unique("kp-admin")
    a.create_topics([NewTopic(name, 2, 1)])
    with pytest.raises(TopicAlreadyExistsError):
        a.create_topics([NewTopic(name, 2, 1)])
    with pytest.raises(InvalidTopicError):
        a.create_topics([NewTopic("no/slashes", 1, 1)])
    assert name in a.list_topics()
    a.close()


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_ordered(broker, codec):
    topic = unique(f"kp-{codec}")
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    a.create_topics([NewTopic(topic, 2, 1)])
    a.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                      linger_ms=5)
    for i in range(N):
        p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2,
               headers=[("h", b"%d" % i)], timestamp_ms=1_600_000_000_000 + i)
    p.flush(60)
    p.close()

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=10_000)
    c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    c.seek_to_beginning()
    got = {0: [], 1: []}
    for m in c:
        got[m.partition].append(m)
        if sum(map(len, got.values())) == N:
            break
    c.close()
    for part, ms in got.items():
        assert [m.offset for m in ms] == list(range(N // 2))
        idx = [int(m.key[1:]) for m in ms]
        assert idx == list(range(part, N, 2))
        m = ms[-1]
        i = idx[-1]
        assert m.value == b"v%d" % i
        assert m.timestamp == 1_600_000_000_000 + i
        assert list(m.headers) == [("h", b"%d" % i)]


def test_offsets_for_times(broker):
    topic = unique("kp-times")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    for i in range(100):
        p.send(topic, value=b"x", partition=0, timestamp_ms=5_000 + i)
    p.flush(30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    found = c.offsets_for_times({tp: 5_042})[tp]
    assert (found.offset, found.timestamp) == (42, 5_042)
    assert c.end_offsets([tp])[tp] == 100
    assert c.beginning_offsets([tp])[tp] == 0
    c.close()


def test_idempotent(broker):
    topic = unique("kp-idem")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all")
    for i in range(2000):
        p.send(topic, value=b"%d" % i, partition=0)
    p.flush(60)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=5000,
                      auto_offset_reset="earliest")
    c.assign([TopicPartition(topic, 0)])
    vals = [int(m.value) for m in c]
    c.close()
    assert vals == list(range(2000))


def test_fetch_session_follows_new_data(broker):
    """kafka-python uses incremental fetch sessions (KIP-227): after the first full
    fetch it sends only changes, and the broker answers only partitions with news."""
    topic = unique("kp-session")
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    a.create_topics([NewTopic(topic, 3, 1)])
    a.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      fetch_max_wait_ms=200)
    tps = [TopicPartition(topic, i) for i in range(3)]
    c.assign(tps)
    c.seek_to_beginning()
    got = []
    for round_ in range(5):
        for i in range(3):
            p.send(topic, value=b"%d-%d" % (round_, i), partition=i)
        p.flush(10)
        deadline = 20
        while len(got) < 3 * (round_ + 1) and deadline:
            for msgs in c.poll(timeout_ms=500).values():
                got.extend(m.value for m in msgs)
            deadline -= 1
    sessions = c._fetcher._session_handlers
    c.close()
    p.close()
    assert sorted(got) == sorted(b"%d-%d" % (r, i) for r in range(5) for i in range(3))
    assert any(h.next_metadata.session_id > 0 for h in sessions.values()), "no session was created"


def test_max_message_bytes_and_long_poll(broker):
    import time

    from kafka.errors import MessageSizeTooLargeError

    topic = unique("kp-limits")
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    a.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    a.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, retries=0)
    with pytest.raises(MessageSizeTooLargeError):
        p.send(topic, value=b"x" * 5000, partition=0).get(timeout=10)
    assert p.send(topic, value=b"small", partition=0).get(timeout=10).offset == 0

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=5000,
                      enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 1)
    c.poll(timeout_ms=200)  # a long-polling fetch is now waiting at the broker
    p.send(topic, value=b"wake", partition=0).get(timeout=10)
    sent = time.time()
    got = []
    while not got and time.time() - sent < 10:
        for msgs in c.poll(timeout_ms=50).values():
            got.extend(m.value for m in msgs)
    latency = time.time() - sent
    c.close()
    p.close()
    assert got == [b"wake"]
    assert latency < 1.0, f"long poll took {latency:.3f}s"
