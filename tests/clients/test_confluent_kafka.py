"""librdkafka through confluent-kafka: admin, ordering, codecs, headers, timestamps,
offsets by time, size limits, long polling and idempotent producing."""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewPartitions, NewTopic)

from conftest import unique

N = 20_000


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, name, partitions=1, config=None):
    a = admin(broker)
    a.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=10)


def consume_all(broker, topic, partitions, expected, **conf):
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "unused",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **conf,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + 60
    while len(out) < expected and time.time() < deadline:
        for m in c.consume(num_messages=1000, timeout=1):
            if m.error():
                raise KafkaException(m.error())
            out.append(m)
    c.close()
    return out


def test_topic_admin_and_error_codes(broker):
    name = unique("admin")
    a = admin(broker)
    a.create_topics([NewTopic(name, 3, 1, config={"retention.ms": "3600000"})])[name].result(10)
    md = a.list_topics(timeout=10)
    assert len(md.topics[name].partitions) == 3

    dup = a.create_topics([NewTopic(name, 1, 1)])[name]
    with pytest.raises(KafkaException) as e:
        dup.result(timeout=10)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    bad = a.create_topics([NewTopic("bad name!", 1, 1)])["bad name!"]
    with pytest.raises(KafkaException) as e:
        bad.result(timeout=10)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = a.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].is_default

    res.set_config("retention.bytes", "1000000")
    a.alter_configs([res])[res].result(timeout=10)
    configs = a.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.bytes"].value == "1000000"

    a.create_partitions([NewPartitions(name, 5)])[name].result(timeout=10)
    # On a cluster another broker may answer; it learns of the change within moments.
    deadline = time.time() + 5
    while len(a.list_topics(timeout=10).topics[name].partitions) != 5 and time.time() < deadline:
        time.sleep(0.05)
    assert len(a.list_topics(timeout=10).topics[name].partitions) == 5
    shrink = a.create_partitions([NewPartitions(name, 2)])[name]
    with pytest.raises(KafkaException) as e:
        shrink.result(timeout=10)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    a.delete_topics([name])[name].result(timeout=10)
    assert name not in a.list_topics(timeout=10).topics


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_ordering_dense_offsets_codecs_headers_timestamps(broker, codec):
    topic = unique(f"order-{codec}")
    create(broker, topic, 3)
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "compression.type": codec,
        "linger.ms": 5,
        "acks": "all",
    })
    base_ts = 1_700_000_000_000
    sent = {}
    for i in range(N):
        part = i % 3
        headers = [("i", str(i).encode()), ("null", None)] if i % 7 == 0 else None
        p.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode() * (1 + i % 5),
                  partition=part, headers=headers, timestamp=base_ts + i)
        sent.setdefault(part, []).append(i)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    msgs = consume_all(broker, topic, 3, N)
    assert len(msgs) == N
    by_part = {}
    for m in msgs:
        by_part.setdefault(m.partition(), []).append(m)
    for part, ms in by_part.items():
        assert [m.offset() for m in ms] == list(range(len(ms))), "offsets dense from 0"
        for m, i in zip(ms, sent[part]):
            assert m.key() == f"key-{i}".encode()
            assert m.value() == f"value-{i}".encode() * (1 + i % 5)
            assert m.timestamp() == (1, base_ts + i)  # (CreateTime, ts)
            if i % 7 == 0:
                assert m.headers() == [("i", str(i).encode()), ("null", None)]
            else:
                assert not m.headers()


def test_offsets_for_times(broker):
    topic = unique("times")
    create(broker, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for i in range(1000):
        p.produce(topic, value=b"x", partition=0, timestamp=1_000_000 + i * 10)
    p.flush(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    for ts, want in [(0, 0), (1_000_000, 0), (1_000_005, 1), (1_004_990, 499), (1_009_990, 999),
                     (1_009_991, -1)]:
        got = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0]
        assert got.offset == want, f"ts={ts}"
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 1000)
    c.close()


def test_max_message_bytes_is_enforced(broker):
    topic = unique("limit")
    create(broker, topic, 1, {"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "none"})
    errors = []
    p.produce(topic, value=b"x" * 5000, partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(30)  # separate batches: Kafka rejects a whole batch, not single records
    p.produce(topic, value=b"y" * 100, partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    codes = sorted((e.code() if e else 0) for e in errors)
    assert codes == [0, KafkaError.MSG_SIZE_TOO_LARGE]


def test_timestamps_out_of_the_topics_bounds_are_refused(broker):
    """message.timestamp.before.max.ms / after.max.ms (KIP-937): a CreateTime record
    too far from the broker's clock is refused with INVALID_TIMESTAMP; the bounds do
    not apply to LogAppendTime topics. Before, both configs were taken and ignored."""
    topic = unique("ts-bounds")
    create(broker, topic, 1, {"message.timestamp.before.max.ms": "3600000",
                              "message.timestamp.after.max.ms": "60000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    now = int(time.time() * 1000)
    results = {}
    for name, ts in [("now", now), ("old", now - 7_200_000), ("future", now + 600_000)]:
        p.produce(topic, value=name.encode(), partition=0, timestamp=ts,
                  on_delivery=lambda e, m, name=name: results.__setitem__(name, e))
        p.flush(30)  # one batch each: Kafka refuses a whole batch
    codes = {k: (e.code() if e else 0) for k, e in results.items()}
    assert codes == {"now": 0, "old": KafkaError.INVALID_TIMESTAMP,
                     "future": KafkaError.INVALID_TIMESTAMP}
    appended = unique("ts-bounds-lat")
    create(broker, appended, 1, {"message.timestamp.type": "LogAppendTime",
                                 "message.timestamp.before.max.ms": "3600000"})
    errors = []
    p.produce(appended, value=b"x", partition=0, timestamp=1,
              on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    assert errors == [None]


def test_log_append_time(broker):
    topic = unique("lat")
    create(broker, topic, 1, {"message.timestamp.type": "LogAppendTime"})
    p = Producer({"bootstrap.servers": broker.bootstrap})
    before = int(time.time() * 1000)
    p.produce(topic, value=b"x", partition=0, timestamp=1)
    p.flush(10)
    m = consume_all(broker, topic, 1, 1)[0]
    kind, ts = m.timestamp()
    assert kind == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= int(time.time() * 1000) + 1000


def test_long_poll_delivers_promptly(broker):
    topic = unique("poll")
    create(broker, topic, 1)
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "unused",
        "enable.auto.commit": False,  # no group coordinator yet: nothing to commit to
        "fetch.wait.max.ms": 5000,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    c.consume(num_messages=1, timeout=1)  # connection is up and a fetch is waiting
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    p.produce(topic, value=b"wake", partition=0)
    p.flush(10)
    sent = time.time()
    got = []
    while not got and time.time() - sent < 10:
        got = [m for m in c.consume(num_messages=1, timeout=0.05) if not m.error()]
    latency = time.time() - sent
    c.close()
    assert got and got[0].value() == b"wake"
    assert latency < 1.0, f"long poll took {latency:.3f}s"


def test_idempotent_producer(broker):
    topic = unique("idem")
    create(broker, topic, 2)
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 2,
    })
    for i in range(5000):
        p.produce(topic, key=str(i).encode(), value=str(i).encode(), partition=i % 2)
    assert p.flush(60) == 0
    msgs = consume_all(broker, topic, 2, 5000)
    assert len(msgs) == 5000
    values = sorted(int(m.value()) for m in msgs)
    assert values == list(range(5000))


def test_idempotent_producer_outlives_a_recreated_topic(broker):
    """librdkafka's 0107: a topic deleted and created again with fewer partitions
    holds no producer state, so the producer's next batches (sequence > 0) are taken,
    as Kafka takes them, not refused with a fatal OUT_OF_ORDER_SEQUENCE_NUMBER."""
    topic = unique("recreated")
    create(broker, topic, partitions=4)
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "linger.ms": 5, "error_cb": errors.append})
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)
    for i in range(40):
        p.produce(topic, value=b"%d" % i, partition=i % 4, on_delivery=report)
    assert p.flush(30) == 0 and not failed, failed
    a = admin(broker)
    a.delete_topics([topic])[topic].result(timeout=10)
    deadline = time.time() + 30
    while True:
        try:
            create(broker, topic, partitions=2)
            break
        except KafkaException:
            assert time.time() < deadline
            time.sleep(0.5)
    for i in range(40):
        p.produce(topic, value=b"again-%d" % i, partition=i % 2, on_delivery=report)
    assert p.flush(60) == 0
    assert not failed, failed
    assert not [e for e in errors if e.fatal()], errors
    got = consume_all(broker, topic, 2, 40)
    assert sorted(m.value() for m in got) == sorted(b"again-%d" % i for i in range(40))


def test_deprecated_configs_are_taken(broker):
    """librdkafka's admin tests: Kafka accepts (and ignores) the deprecated
    message.format.version and message.downconversion.enable."""
    a = admin(broker)
    topic = unique("deprecated")
    create(broker, topic, config={"message.format.version": "2.8",
                                  "message.downconversion.enable": "false"})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("message.format.version", "3.0",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(timeout=10)


def test_the_internal_topic_is_not_deleted_or_grown(broker):
    """The groups topic, like Kafka's __consumer_offsets, holds every group's state
    by shard: a client cannot delete it or add partitions (which would move every
    group to another shard)."""
    a = admin(broker)
    name = "__sluice_groups"
    assert name in a.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as refused:
        a.create_partitions([NewPartitions(name, 64)])[name].result(timeout=10)
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST, refused.value
    with pytest.raises(KafkaException) as refused:
        a.delete_topics([name])[name].result(timeout=10)
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST, refused.value
    assert name in a.list_topics(timeout=10).topics


def test_authorized_operations_without_an_authorizer_are_all(broker):
    """Asked for, a topic's, the cluster's and a group's authorized operations are
    every operation of the resource type, as Kafka reports them without an
    authorizer (librdkafka 0080/0081). Before, none were reported."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation
    topic = unique("ops")
    create(broker, topic, 1)
    a = admin(broker)
    described = a.describe_topics(TopicCollection([topic]),
                                  include_authorized_operations=True)[topic].result(30)
    assert set(described.authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}
    cluster = a.describe_cluster(include_authorized_operations=True).result(30)
    assert AclOperation.IDEMPOTENT_WRITE in cluster.authorized_operations
    assert AclOperation.CLUSTER_ACTION in cluster.authorized_operations
    group = unique("ops-group")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.time() + 30
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    groups = a.describe_consumer_groups([group], include_authorized_operations=True)
    g = groups[group].result(30)
    assert set(g.authorized_operations) == {AclOperation.READ, AclOperation.DELETE,
                                            AclOperation.DESCRIBE}
    c.close()


def test_keyless_records_on_a_compacted_topic_are_named(broker):
    """A batch of 100 records, 10 without a key, to a compacted topic: the batch is
    refused with INVALID_RECORD naming the 10 (KIP-467 record_errors), as Kafka
    does, so the client fails those 10 with INVALID_RECORD and the other 90 with its
    own "invalid record in the same batch" error, which it may send again
    (librdkafka 0011). Before, all 100 failed with INVALID_RECORD."""
    topic = unique("keyless")
    create(broker, topic, 1, {"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1000,
                  "batch.num.messages": 1000, "enable.idempotence": False})
    results = {}
    for i in range(100):
        key = None if i % 10 == 3 else f"k{i}".encode()
        p.produce(topic, key=key, value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda e, m, i=i: results.__setitem__(i, e))
    p.flush(60)
    codes = {i: e.code() for i, e in results.items()}
    assert sorted(i for i, c in codes.items() if c == KafkaError.INVALID_RECORD) == \
        [i for i in range(100) if i % 10 == 3]
    assert sorted(i for i, c in codes.items() if c == KafkaError._INVALID_DIFFERENT_RECORD) == \
        [i for i in range(100) if i % 10 != 3]


def test_dynamic_broker_configs_apply_to_topics(broker):
    """Broker-level IncrementalAlterConfigs and AlterConfigs (librdkafka 0081,
    `kafka-configs --entity-type brokers`): a log config set on the brokers
    (message.max.bytes) becomes the default of every topic that does not set its
    own, described with the broker as its source, and is enforced; DELETE restores
    the built-in default. A config fixed at start-up and a bad value get
    INVALID_REQUEST with Kafka's messages. Before, every broker resource was refused."""
    from confluent_kafka.admin import ConfigSource
    a = admin(broker)
    topic, own = unique("brokercfg"), unique("brokercfg-own")
    create(broker, topic, 1)
    create(broker, own, 1, {"max.message.bytes": "100000"})
    ids = sorted(a.list_topics(timeout=10).brokers)
    S, D = AlterConfigOpType.SET, AlterConfigOpType.DELETE

    def alter(i, name, value, op=S):
        res = ConfigResource(ConfigResource.Type.BROKER, str(i), incremental_configs=[
            ConfigEntry(name, value, incremental_operation=op)])
        a.incremental_alter_configs([res])[res].result(timeout=10)

    def topic_config(name):
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        return a.describe_configs([res])[res].result(timeout=10)["max.message.bytes"]

    def wait_for(name, value, source):
        # Every broker follows the config keys; on a cluster another broker may answer.
        deadline = time.time() + 10
        while time.time() < deadline:
            c = topic_config(name)
            if (c.value, c.source) == (value, source.value):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name}: {c.value} from {c.source}, wanted {value} from {source}")

    try:
        for i in ids:
            alter(i, "message.max.bytes", "2000")
        res = ConfigResource(ConfigResource.Type.BROKER, str(ids[0]))
        described = a.describe_configs([res])[res].result(timeout=10)
        assert described["message.max.bytes"].value == "2000"
        assert described["message.max.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert described["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
        wait_for(topic, "2000", ConfigSource.DYNAMIC_BROKER_CONFIG)
        wait_for(own, "100000", ConfigSource.DYNAMIC_TOPIC_CONFIG)

        p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "none"})
        errors = []
        for t in (topic, own):
            p.produce(t, value=b"x" * 5000, partition=0, on_delivery=lambda e, m: errors.append(e))
            p.flush(30)
        assert [e.code() if e else 0 for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE, 0]

        for name, value, message in [
                ("log.dirs", "/elsewhere", "Cannot update these configs dynamically: [log.dirs]"),
                ("log.retention.ms", "soon", "Invalid value soon for configuration log.retention.ms"),
                ("sasl.kerberos.min.time.before.relogin", "58000", "does not apply")]:
            with pytest.raises(KafkaException) as refused:
                alter(ids[0], name, value)
            assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST, refused.value
            assert message in refused.value.args[0].str(), refused.value

        # AlterConfigs (not incremental) replaces the broker's whole set.
        for i in ids:
            res = ConfigResource(ConfigResource.Type.BROKER, str(i),
                                 set_config={"message.max.bytes": "3000"})
            a.alter_configs([res])[res].result(timeout=10)
        wait_for(topic, "3000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    finally:
        for i in ids:
            alter(i, "message.max.bytes", None, D)
    wait_for(topic, "1048588", ConfigSource.DEFAULT_CONFIG)
