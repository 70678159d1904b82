"""Apache Kafka's own command-line tools (from the Kafka 4 jars on Maven Central, run
by tests/kafka/kafka.sh) against Sluice, each checked by reading its output:
kafka-topics, kafka-console-producer and -consumer, kafka-consumer-groups,
kafka-configs, kafka-get-offsets, kafka-delete-records, kafka-broker-api-versions,
kafka-log-dirs, kafka-reassign-partitions, kafka-leader-election, kafka-transactions."""

import json
import re
import subprocess
import time

import pytest

from conftest import ROOT, unique

KAFKA_SH = str(ROOT / "tests" / "kafka" / "kafka.sh")


def tool(name, *args, stdin=None, timeout=120, check=True):
    p = subprocess.run([KAFKA_SH, name, *args], input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {p.returncode}:\n"
                             f"{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module", autouse=True)
def kafka_jars():
    # Resolve the jars once (Maven), outside any test's timeout.
    subprocess.run([KAFKA_SH, "classpath"], check=True, capture_output=True, timeout=900)


def eventually(check, timeout=15):
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_kafka_topics(broker):
    bs = broker.bootstrap
    topic = unique("tools-topic")
    out = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic,
               "--partitions", "3", "--config", "retention.ms=3600000").stdout
    assert f"Created topic {topic}." in out
    assert topic in tool("kafka-topics", "--bootstrap-server", bs, "--list").stdout.split()

    def described(partitions):
        out = tool("kafka-topics", "--bootstrap-server", bs, "--describe", "--topic", topic).stdout
        assert f"PartitionCount: {partitions}" in out, out
        assert "retention.ms=3600000" in out, out
        rows = [line for line in out.splitlines() if re.search(r"Partition: \d+\s+Leader: \d+", line)]
        assert len(rows) == partitions, out
    described(3)
    tool("kafka-topics", "--bootstrap-server", bs, "--alter", "--topic", topic, "--partitions", "5")
    eventually(lambda: described(5))
    dup = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic,
               "--partitions", "1", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stdout + dup.stderr
    tool("kafka-topics", "--bootstrap-server", bs, "--delete", "--topic", topic)
    eventually(lambda: assertion(topic not in tool("kafka-topics", "--bootstrap-server", bs,
                                                   "--list").stdout.split()))


def assertion(ok, message=""):
    assert ok, message


def test_console_producer_consumer_groups_and_offsets(broker):
    bs = broker.bootstrap
    topic, group = unique("tools-console"), unique("tools-group")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "2")
    lines = "".join(f"k{i}:v{i}\n" for i in range(20))
    tool("kafka-console-producer", "--bootstrap-server", bs, "--topic", topic,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
         stdin=lines)

    out = tool("kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic,
               "--group", group, "--from-beginning", "--max-messages", "20",
               "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:",
               "--timeout-ms", "60000").stdout
    assert sorted(out.split()) == sorted(f"k{i}:v{i}" for i in range(20))

    offsets = tool("kafka-get-offsets", "--bootstrap-server", bs, "--topic", topic).stdout.split()
    per_partition = {int(p): int(o) for _, p, o in (line.split(":") for line in offsets)}
    assert sum(per_partition.values()) == 20 and set(per_partition) == {0, 1}
    earliest = tool("kafka-get-offsets", "--bootstrap-server", bs, "--topic", topic,
                    "--time", "earliest").stdout.split()
    assert earliest == [f"{topic}:0:0", f"{topic}:1:0"]

    assert group in tool("kafka-consumer-groups", "--bootstrap-server", bs, "--list").stdout.split()
    described = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe",
                     "--group", group).stdout
    rows = [line.split() for line in described.splitlines() if line.startswith(group)]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert {(r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows} == {
        (topic, p, per_partition[p], per_partition[p], 0) for p in (0, 1)}, described

    reset = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--group", group,
                 "--reset-offsets", "--to-earliest", "--topic", topic, "--execute").stdout
    assert re.search(rf"{group}\s+{topic}\s+0\s+0", reset), reset
    described = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe",
                     "--group", group).stdout
    lags = {int(r[2]): int(r[5]) for r in (line.split() for line in described.splitlines()
                                            if line.startswith(group))}
    assert lags == per_partition, described

    out = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--delete", "--group", group).stdout
    assert "successful" in out, out
    assert group not in tool("kafka-consumer-groups", "--bootstrap-server", bs,
                             "--list").stdout.split()
    missing = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--delete", "--group",
                   group, check=False)
    assert "does not exist" in missing.stdout + missing.stderr, missing


def test_delete_records(broker, tmp_path):
    bs = broker.bootstrap
    topic = unique("tools-delete")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "1")
    tool("kafka-console-producer", "--bootstrap-server", bs, "--topic", topic,
         stdin="".join(f"r{i}\n" for i in range(10)))
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "offset": 4}]}))
    out = tool("kafka-delete-records", "--bootstrap-server", bs,
               "--offset-json-file", str(spec)).stdout
    assert f"partition: {topic}-0\tlow_watermark: 4" in out, out
    earliest = tool("kafka-get-offsets", "--bootstrap-server", bs, "--topic", topic,
                    "--time", "earliest").stdout.split()
    assert earliest == [f"{topic}:0:4"]
    out = tool("kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic,
               "--from-beginning", "--max-messages", "6", "--timeout-ms", "60000").stdout
    assert out.split() == [f"r{i}" for i in range(4, 10)]


def test_kafka_configs(broker):
    bs = broker.bootstrap
    topic = unique("tools-configs")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "1")
    tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name",
         topic, "--alter", "--add-config", "retention.ms=7200000,cleanup.policy=compact")
    out = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics",
               "--entity-name", topic, "--describe").stdout
    assert "retention.ms=7200000" in out and "cleanup.policy=compact" in out, out
    tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name",
         topic, "--alter", "--delete-config", "cleanup.policy")
    out = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics",
               "--entity-name", topic, "--describe").stdout
    assert "cleanup.policy" not in out and "retention.ms=7200000" in out, out
    bad = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics",
               "--entity-name", topic, "--alter", "--add-config", "retention.ms=soon", check=False)
    assert bad.returncode != 0

    # Cluster-wide dynamic broker default (--entity-default), applied to the topic.
    tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "brokers", "--entity-default",
         "--alter", "--add-config", "log.retention.bytes=123456789")
    try:
        out = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "brokers",
                   "--entity-default", "--describe").stdout
        assert "log.retention.bytes=123456789" in out, out

        def applied():
            out = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "topics",
                       "--entity-name", topic, "--describe", "--all").stdout
            assert re.search(r"retention.bytes=123456789 sensitive=false synonyms=\{"
                             r"DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.bytes=123456789", out), out
        eventually(applied)
        refused = tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "brokers",
                       "--entity-default", "--alter", "--add-config", "log.dirs=/elsewhere",
                       check=False)
        assert refused.returncode != 0
        assert "Cannot update these configs dynamically" in refused.stdout + refused.stderr
    finally:
        tool("kafka-configs", "--bootstrap-server", bs, "--entity-type", "brokers",
             "--entity-default", "--alter", "--delete-config", "log.retention.bytes")


def test_broker_api_versions(broker):
    out = tool("kafka-broker-api-versions", "--bootstrap-server", broker.bootstrap).stdout
    assert re.search(r"Produce\(0\): \d+ to \d+ \[usable: \d+\]", out), out
    assert re.search(r"Fetch\(1\): \d+ to \d+ \[usable: \d+\]", out), out
    assert re.search(r"ConsumerGroupHeartbeat\(68\): 0 to 1 \[usable: 1\]", out), out


def test_features(broker):
    # The consumer group protocol is finalized; transaction.version is advertised
    # (Sluice: supported up to 0 until transactions are served).
    out = tool("kafka-features", "--bootstrap-server", broker.bootstrap, "describe").stdout
    assert re.search(r"Feature: group.version\s+SupportedMinVersion: 0\s+SupportedMaxVersion: 1"
                     r"\s+FinalizedVersionLevel: 1", out), out
    assert re.search(r"Feature: transaction.version\s+SupportedMinVersion: 0", out), out


def broker_ids(bs):
    out = tool("kafka-broker-api-versions", "--bootstrap-server", bs).stdout
    return sorted({int(i) for i in re.findall(r"\(id: (\d+) rack", out)})


def leaders(bs, topic):
    out = tool("kafka-topics", "--bootstrap-server", bs, "--describe", "--topic", topic).stdout
    return {int(p): int(l) for p, l in re.findall(r"Partition: (\d+)\s+Leader: (-?\d+)", out)}


def test_log_dirs(broker):
    bs = broker.bootstrap
    topic = unique("tools-logdirs")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "2")
    tool("kafka-console-producer", "--bootstrap-server", bs, "--topic", topic,
         stdin="".join(f"record-{i:04d}\n" for i in range(200)))

    def described():
        out = tool("kafka-log-dirs", "--bootstrap-server", bs, "--describe",
                   "--topic-list", topic).stdout
        report = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        found = {}
        for b in report["brokers"]:
            for d in b["logDirs"]:
                assert d["error"] is None and d["logDir"], d
                for p in d["partitions"]:
                    found[p["partition"]] = (b["broker"], p["size"])
        # Each partition is reported by the broker that hosts it, with its bytes.
        assert set(found) == {f"{topic}-0", f"{topic}-1"}, report
        assert {p: b for p, (b, _) in found.items()} == {
            f"{topic}-{p}": b for p, b in leaders(bs, topic).items()}, report
        assert sum(size for _, size in found.values()) > 200 * 11, report
    eventually(described, timeout=30)


def test_reassign_partitions(broker, tmp_path):
    bs = broker.bootstrap
    topic = unique("tools-reassign")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "2")
    ids = broker_ids(bs)
    current = eventually(lambda: assertion_value(leaders(bs, topic), lambda l: set(l) == {0, 1}))
    moving = tmp_path / "topics.json"
    moving.write_text(json.dumps({"version": 1, "topics": [{"topic": topic}]}))
    out = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--generate",
               "--topics-to-move-json-file", str(moving),
               "--broker-list", ",".join(map(str, ids))).stdout
    proposed = json.loads(out.split("Proposed partition reassignment configuration")[1].strip())
    assert sorted(p["partition"] for p in proposed["partitions"]) == [0, 1], out
    assert all(len(p["replicas"]) == 1 and p["replicas"][0] in ids
               for p in proposed["partitions"]), out
    # Partition 0 to another broker where there is one (the same broker otherwise).
    target = next((i for i in ids if i != current[0]), current[0])
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [target]}]}))
    out = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--execute",
               "--reassignment-json-file", str(plan)).stdout
    assert f"Successfully started partition reassignment for {topic}-0" in out, out

    def verified():
        out = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--verify",
                   "--reassignment-json-file", str(plan)).stdout
        assert f"Reassignment of partition {topic}-0 is completed." in out, out
    eventually(verified, timeout=60)
    assert leaders(bs, topic)[0] == target
    out = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--list").stdout
    assert "No partition reassignments found." in out, out
    out = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--cancel",
               "--reassignment-json-file", str(plan)).stdout
    assert "None of the specified partition reassignments are active." in out, out

    # A broker that does not exist is refused (the tool checks it against the cluster).
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 1, "replicas": [max(ids) + 100]}]}))
    bad = tool("kafka-reassign-partitions", "--bootstrap-server", bs, "--execute",
               "--reassignment-json-file", str(plan), check=False)
    assert bad.returncode != 0 and f"Unknown broker id {max(ids) + 100}" in bad.stdout + bad.stderr


def assertion_value(value, ok):
    assert ok(value), value
    return value


def test_leader_election(broker):
    bs = broker.bootstrap
    topic = unique("tools-elect")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", "2")
    eventually(lambda: assertion_value(leaders(bs, topic), lambda l: set(l) == {0, 1}
                                       and min(l.values()) >= 0))
    for kind in ("PREFERRED", "UNCLEAN"):
        out = tool("kafka-leader-election", "--bootstrap-server", bs, "--election-type", kind,
                   "--topic", topic, "--partition", "0").stdout
        assert f"Valid replica already elected for partitions {topic}-0" in out, out
    out = tool("kafka-leader-election", "--bootstrap-server", bs, "--election-type",
               "PREFERRED", "--all-topic-partitions")
    assert "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
    missing = tool("kafka-leader-election", "--bootstrap-server", bs, "--election-type",
                   "PREFERRED", "--topic", unique("no-such-topic"), "--partition", "0", check=False)
    assert missing.returncode != 0
    assert "UnknownTopicOrPartitionException" in missing.stdout + missing.stderr


def test_kafka_transactions(broker):
    """kafka-transactions (RFC 0010): list, describe and describe-producers show an
    open transaction as Kafka does, and find it again once it is committed."""
    from confluent_kafka import Producer
    bs = broker.bootstrap
    topic, txn_id = unique("tools-txn"), unique("tools-txn-id")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic,
         "--partitions", "1")
    p = Producer({"bootstrap.servers": bs, "transactional.id": txn_id})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"open", partition=0)
    p.flush(10)

    def listed():
        out = tool("kafka-transactions", "--bootstrap-server", bs, "list").stdout
        line = next((l for l in out.splitlines() if txn_id in l), "")
        assert "Ongoing" in line, out
        return line
    eventually(listed)
    out = tool("kafka-transactions", "--bootstrap-server", bs, "describe",
               "--transactional-id", txn_id).stdout
    assert "Ongoing" in out and f"{topic}-0" in out, out
    out = tool("kafka-transactions", "--bootstrap-server", bs, "describe-producers",
               "--topic", topic, "--partition", "0").stdout
    # The open transaction starts at offset 0 on the partition.
    assert re.search(r"\b0\s*$", out.strip().splitlines()[-1]), out

    p.commit_transaction(30)

    def committed():
        out = tool("kafka-transactions", "--bootstrap-server", bs, "describe",
                   "--transactional-id", txn_id).stdout
        assert "CompleteCommit" in out, out
    eventually(committed)
