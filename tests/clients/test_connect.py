"""Kafka Connect and MirrorMaker 2 (tests/connect/pom.xml) on this module's brokers.

- A distributed Connect worker keeps its configs, source offsets and statuses in three
  compacted topics on the broker (the worker refuses topics that are not compacted)
  and runs the FileStream connectors: lines written to a file go to a topic and from
  there to another file, in order and exactly once, across a kill -9 of the broker
  coordinating the sink's group (on a cluster) and a restart of the worker, which
  finds its connectors and offsets again in those topics.
- MirrorMaker 2 copies a topic of 100,000 records and a consumer group's committed
  offsets from Apache Kafka to this module's broker (the migration in
  docs/migration.md); the group's consumer then resumes on the new broker where it
  stopped on Kafka, skipping nothing.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import ROOT, ApacheKafka, Cluster, free_port, unique

KAFKA_SH = ROOT / "tests" / "kafka" / "kafka.sh"


class JavaProcess:
    """A Connect worker or MirrorMaker 2, its output in a log file next to its config."""

    def __init__(self, tool, config_path):
        self.tool, self.config_path = tool, config_path
        self.log_path = config_path + ".log"
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(KAFKA_SH), self.tool, self.config_path],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=6000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except FileNotFoundError:
            return ""


def write_properties(path, props):
    with open(path, "w") as f:
        for k, v in props.items():
            f.write(f"{k}={v}\n")


class Worker(JavaProcess):
    def __init__(self, directory, bootstrap, name):
        self.port = free_port()
        self.topics = {kind: f"{name}-{kind}" for kind in ("configs", "offsets", "status")}
        path = os.path.join(directory, "worker.properties")
        write_properties(path, {
            "bootstrap.servers": bootstrap,
            "group.id": name,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "config.storage.topic": self.topics["configs"],
            "offset.storage.topic": self.topics["offsets"],
            "status.storage.topic": self.topics["status"],
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.flush.interval.ms": 1000,
            "listeners": f"http://127.0.0.1:{self.port}",
            "rest.advertised.host.name": "127.0.0.1",
        })
        super().__init__("connect-distributed", path)

    def rest(self, method, path, body=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return json.loads(text) if text else None

    def wait_ready(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.alive(), f"the Connect worker exited:\n{self.tail()}"
            try:
                self.rest("GET", "/connectors")
                return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.5)
        raise AssertionError(f"the Connect worker's REST API did not answer:\n{self.tail()}")

    def wait_running(self, connector, timeout=120):
        deadline = time.time() + timeout
        status = None
        while time.time() < deadline:
            try:
                status = self.rest("GET", f"/connectors/{connector}/status")
                if status["connector"]["state"] == "RUNNING" and status["tasks"] and all(
                        t["state"] == "RUNNING" for t in status["tasks"]):
                    return status
            except urllib.error.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{connector} not RUNNING: {status}\n{self.tail()}")


def append_lines(path, lo, hi):
    with open(path, "a") as f:
        for i in range(lo, hi):
            f.write(f"line {i:05d}\n")


def wait_lines(path, n, worker, timeout=120):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.5)
    raise AssertionError(f"{len(lines)} of {n} lines in {path}\n{worker.tail()}")


def test_connect_filestream_distributed_worker(broker):
    d = tempfile.mkdtemp(prefix="connect-test-")
    name = unique("connect")
    topic = f"{name}-lines"
    source_file, sink_file = os.path.join(d, "in.txt"), os.path.join(d, "out.txt")
    open(source_file, "w").close()
    worker = Worker(d, broker.bootstrap, name)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        worker.start()
        worker.wait_ready()
        worker.rest("PUT", "/connectors/file-source/config", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1", "file": source_file, "topic": topic})
        worker.rest("PUT", "/connectors/file-sink/config", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1", "file": sink_file, "topics": topic})
        worker.wait_running("file-source")
        worker.wait_running("file-sink")

        append_lines(source_file, 0, 1000)
        wait_lines(sink_file, 1000, worker)

        # The worker's own topics: compacted (it checks), the configs topic one partition.
        res = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in worker.topics.values()]
        for r, f in admin.describe_configs(res).items():
            assert f.result(timeout=30)["cleanup.policy"].value == "compact", r
        meta = admin.list_topics(timeout=10).topics
        assert len(meta[worker.topics["configs"]].partitions) == 1

        if isinstance(broker, Cluster):
            # kill -9 the broker coordinating the sink's consumer group, mid-stream.
            group = "connect-file-sink"
            desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
            victim = broker.brokers[desc.coordinator.id - 1]
            victim.stop(signal.SIGKILL)
            append_lines(source_file, 1000, 1500)
            wait_lines(sink_file, 1500, worker)
            victim.start()
        else:
            append_lines(source_file, 1000, 1500)
            wait_lines(sink_file, 1500, worker)

        # The worker stops; lines written meanwhile are picked up by the next worker,
        # which reads its connectors, their offsets and statuses from the broker.
        worker.stop()
        append_lines(source_file, 1500, 2000)
        worker.start()
        worker.wait_ready()
        assert sorted(worker.rest("GET", "/connectors")) == ["file-sink", "file-source"]
        worker.wait_running("file-source")
        worker.wait_running("file-sink")
        lines = wait_lines(sink_file, 2000, worker)
        time.sleep(3)  # a duplicate would arrive now
        with open(sink_file) as f:
            lines = f.read().splitlines()
        want = [f"line {i:05d}" for i in range(2000)]
        first = next((i for i, (a, b) in enumerate(zip(lines, want)) if a != b), None)
        assert lines == want, (f"{len(lines)} lines, {len(set(lines))} distinct, "
                               f"first out of place at {first}")
        worker.stop()
    except BaseException:
        print(worker.tail())
        raise
    finally:
        worker.stop(signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


RECORDS = 100_000
MIRROR_PARTITIONS = 3


def read_all(bootstrap, topic, partitions):
    """Every record of `topic`, per partition, as (offset, key, value, timestamp, headers)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    out = {}
    for p in range(partitions):
        end = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        out[p] = []
        c.assign([TopicPartition(topic, p, 0)])
        deadline = time.time() + 120
        while len(out[p]) < end and time.time() < deadline:
            for m in c.consume(10_000, timeout=1):
                if not m.error():
                    out[p].append((m.offset(), m.key(), m.value(), m.timestamp()[1],
                                   tuple(m.headers() or ())))
    c.close()
    return out


def test_mirror_maker_2_moves_topic_and_group_from_kafka(broker):
    d = tempfile.mkdtemp(prefix="mm2-test-")
    kafka = ApacheKafka()
    mm2 = None
    topic, group = unique("orders"), unique("orders-app")
    try:
        kafka_admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        kafka_admin.create_topics([NewTopic(topic, MIRROR_PARTITIONS, 1)])[topic].result(
            timeout=60)
        p = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all", "linger.ms": 20})
        base = int(time.time() * 1000) - 3_600_000
        for i in range(RECORDS):
            p.produce(topic, key=f"k{i % 997}", value=f"order {i} " + "x" * 80,
                      partition=i % MIRROR_PARTITIONS, timestamp=base + i,
                      headers=[("seq", str(i).encode())])
            if i % 10_000 == 0:
                p.poll(0)
        assert p.flush(120) == 0

        # The application consumes about half on Kafka, commits and stops.
        c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        seen = set()
        deadline = time.time() + 120
        while len(seen) < RECORDS // 2 and time.time() < deadline:
            for m in c.consume(1000, timeout=1):
                if not m.error():
                    seen.add((m.partition(), m.offset()))
        c.commit(asynchronous=False)
        on_kafka = {tp.partition: tp.offset for tp in
                    c.committed([TopicPartition(topic, q) for q in range(MIRROR_PARTITIONS)],
                                timeout=30)}
        c.close()
        assert sum(on_kafka.values()) >= RECORDS // 2, on_kafka

        config = os.path.join(d, "mm2.properties")
        write_properties(config, {
            "clusters": "kafka, sluice",
            "kafka.bootstrap.servers": kafka.bootstrap,
            "sluice.bootstrap.servers": broker.bootstrap,
            "kafka->sluice.enabled": "true",
            "sluice->kafka.enabled": "false",
            "kafka->sluice.topics": topic,
            "kafka->sluice.groups": group,
            # Topic names unchanged on the new broker: clients move without renames.
            "replication.policy.class":
                "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
            "sync.group.offsets.enabled": "true",
            "sync.group.offsets.interval.seconds": 1,
            "emit.checkpoints.interval.seconds": 1,
            "emit.heartbeats.interval.seconds": 1,
            "refresh.topics.interval.seconds": 5,
            "refresh.groups.interval.seconds": 5,
            "replication.factor": 1,
            "offset-syncs.topic.replication.factor": 1,
            "checkpoints.topic.replication.factor": 1,
            "heartbeats.topic.replication.factor": 1,
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "dedicated.mode.enable.internode.rest": "false",
        })
        mm2 = JavaProcess("connect-mirror-maker", config)
        mm2.start()

        # Every record arrives, in its partition, at the same offset, with its key,
        # value, timestamp and headers.
        probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("probe")})
        deadline = time.time() + 300
        while time.time() < deadline:
            assert mm2.alive(), f"MirrorMaker 2 exited:\n{mm2.tail()}"
            try:
                ends = [probe.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1]
                        for q in range(MIRROR_PARTITIONS)]
                if sum(ends) >= RECORDS:
                    break
            except KafkaException:
                pass  # not created yet, or its leaders not yet known
            time.sleep(1)
        else:
            raise AssertionError(f"the topic did not arrive whole\n{mm2.tail()}")
        probe.close()
        source = read_all(kafka.bootstrap, topic, MIRROR_PARTITIONS)
        target = read_all(broker.bootstrap, topic, MIRROR_PARTITIONS)
        for q in range(MIRROR_PARTITIONS):
            assert target[q] == source[q], f"partition {q} differs"

        # The group's offsets arrive, translated; MirrorMaker 2 is stopped before the
        # application moves (the cut-over in docs/migration.md).
        deadline = time.time() + 180
        synced = {}
        while time.time() < deadline:
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
            synced = {tp.partition: tp.offset for tp in c.committed(
                [TopicPartition(topic, q) for q in range(MIRROR_PARTITIONS)], timeout=30)}
            c.close()
            if all(synced[q] >= 0 for q in synced):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"group offsets not synced: {synced}\n{mm2.tail()}")
        mm2.stop()
        for q in range(MIRROR_PARTITIONS):
            # Translation may go back a little (to the last offset sync), never forward.
            assert 0 < synced[q] <= on_kafka[q], (synced, on_kafka)

        # The application resumes on Sluice: from the synced offsets to the end.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        resumed = {}
        deadline = time.time() + 120
        while sum(len(v) for v in resumed.values()) < RECORDS - sum(synced.values()) \
                and time.time() < deadline:
            for m in c.consume(1000, timeout=1):
                if not m.error():
                    resumed.setdefault(m.partition(), []).append(m.offset())
        c.close()
        ends = {q: len(source[q]) for q in range(MIRROR_PARTITIONS)}
        for q in range(MIRROR_PARTITIONS):
            assert resumed.get(q) == list(range(synced[q], ends[q])), q
        reread = sum(on_kafka[q] - synced[q] for q in range(MIRROR_PARTITIONS))
        print(f"MirrorMaker 2: {RECORDS} records, the group resumed {reread} records "
              f"before where it stopped on Kafka (offsets synced: {synced}, "
              f"committed on Kafka: {on_kafka})")
    except BaseException:
        if mm2:
            print(mm2.tail())
        raise
    finally:
        if mm2:
            mm2.stop(signal.SIGKILL)
        kafka.stop()
        shutil.rmtree(d, ignore_errors=True)
