"""A stateful Kafka Streams application (tests/streams/StreamsApp.java: a word count
into a KTable store with its compacted changelog and a repartition topic, a windowed
count, and a stream-table join) on this module's brokers, with
processing.guarantee=at_least_once and with exactly_once_v2 (transactions, RFC 0010).
Its output must match what this test computes from the input on its own, across a
kill -9 of the group's coordinator broker (on a cluster) and a restart of the
application instance with its state directory wiped, so that its stores are restored
from their changelogs. With exactly_once_v2 the instance is killed with kill -9 (a
crash mid-transaction), and its output, read at read_committed, is still exact."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import ROOT, Cluster, unique

KAFKA_SH = ROOT / "tests" / "kafka" / "kafka.sh"
APP = ROOT / "tests" / "streams" / "StreamsApp.java"
PARTITIONS = 3
USERS = 10
N = 3000
WINDOW_MS = 60_000


def sentence(i):
    return f"s{i} a{i % 7} b{i % 11} c{i % 13}"


def expected_outputs(base_ms):
    words, windowed, enriched = Counter(), Counter(), {}
    for i in range(N):
        ts = base_ms + i * 100
        for w in sentence(i).split()[1:]:
            words[w] += 1
            windowed[f"{w}@{ts - ts % WINDOW_MS}"] += 1
        enriched[f"s{i}"] = f"r{(i % USERS) % 3}"
    return ({k: str(v) for k, v in words.items()},
            {k: str(v) for k, v in windowed.items()}, enriched)


class App:
    """One instance of the Streams application, its output in a log file."""

    def __init__(self, bootstrap, app_id, guarantee="at_least_once", suffix=""):
        self.bootstrap, self.app_id, self.guarantee = bootstrap, app_id, guarantee
        self.suffix = suffix
        self.state_dir = tempfile.mkdtemp(prefix="streams-state-")
        self.log_path = os.path.join(self.state_dir + "-log.txt")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        start = self.log.tell()
        self.proc = subprocess.Popen(
            [str(KAFKA_SH), "java", str(APP), self.bootstrap, self.app_id, self.state_dir,
             self.guarantee, self.suffix],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                if b"RUNNING" in f.read():
                    return
            assert self.proc.poll() is None, f"the Streams app exited:\n{self.tail()}"
            time.sleep(0.2)
        raise AssertionError(f"the Streams app did not reach RUNNING:\n{self.tail()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(timeout=90)
            if sig == signal.SIGTERM:
                assert rc in (0, 143), f"the Streams app exited {rc}:\n{self.tail()}"
        self.proc = None

    def tail(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def read_table(bootstrap, topic, isolation="read_uncommitted"):
    """The last value of every key in `topic`, read from the beginning to its end
    (the last stable offset, at read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": isolation})
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = {p.partition: c.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    table, done = {}, {p for p, end in ends.items() if end == 0}
    deadline = time.time() + 60
    while len(done) < PARTITIONS and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            table[m.key().decode()] = m.value().decode()
        # The position passes transaction markers, which are never delivered.
        for tp in c.position([TopicPartition(topic, p) for p in range(PARTITIONS)]):
            if tp.offset >= ends[tp.partition]:
                done.add(tp.partition)
    c.close()
    return table


def diff(got, want):
    wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    extra = sorted(set(got) - set(want))
    return f"{len(wrong)} keys differ (got, want), e.g. {dict(list(wrong.items())[:5])}; " \
           f"{len(extra)} unexpected keys, e.g. {extra[:5]}"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_streams_word_count_join_and_windows_survive_failures(broker, guarantee):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    app_id = unique("streams-app")
    eos = guarantee != "at_least_once"
    isolation = "read_committed" if eos else "read_uncommitted"
    suffix = "-eos" if eos else ""
    topics = [t + suffix for t in
              ("users", "sentences", "word-counts", "windowed-counts", "enriched")]
    for t in admin.list_topics(timeout=10).topics:
        if t in topics:
            pytest.fail(f"topic {t} exists already: this test needs its own broker")
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
        f.result(timeout=30)

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "linger.ms": 5})
    base_ms = (int(time.time() * 1000) - 3_600_000) // WINDOW_MS * WINDOW_MS
    # Older than every sentence: Streams processes a task's records in timestamp order,
    # so the table is loaded before the first sentence looks a user up.
    for u in range(USERS):
        producer.produce("users" + suffix, key=f"u{u}", value=f"r{u % 3}", timestamp=base_ms - 1000)
    assert producer.flush(30) == 0

    def produce(lo, hi):
        for i in range(lo, hi):
            producer.produce("sentences" + suffix, key=f"u{i % USERS}", value=sentence(i),
                             timestamp=base_ms + i * 100)
        assert producer.flush(120) == 0

    app = App(broker.bootstrap, app_id, guarantee, suffix)
    try:
        app.start()
        produce(0, N // 3)
        deadline = time.time() + 60
        while (not read_table(broker.bootstrap, "word-counts" + suffix, isolation)
               and time.time() < deadline):
            time.sleep(1)

        if isinstance(broker, Cluster):
            # kill -9 the broker coordinating the application's group, while it runs.
            group = admin.describe_consumer_groups([app_id])[app_id].result(timeout=30)
            victim = broker.brokers[group.coordinator.id - 1]
            victim.stop(signal.SIGKILL)
            produce(N // 3, 2 * N // 3)
            victim.start()
        else:
            produce(N // 3, 2 * N // 3)

        # A restart of the instance with its state directory gone: the stores come back
        # from their changelogs, and the counts go on from there. Exactly-once survives
        # a crash: kill -9, mid-transaction as likely as not.
        app.stop(signal.SIGKILL if eos else signal.SIGTERM)
        shutil.rmtree(app.state_dir)
        os.makedirs(app.state_dir)
        app.start()
        produce(2 * N // 3, N)

        want_words, want_windowed, want_enriched = expected_outputs(base_ms)
        deadline = time.time() + 120
        while True:
            got = [read_table(broker.bootstrap, t + suffix, isolation)
                   for t in ("word-counts", "windowed-counts", "enriched")]
            if got == [want_words, want_windowed, want_enriched] or time.time() > deadline:
                break
            time.sleep(2)
        assert got[0] == want_words, "word counts: " + diff(got[0], want_words)
        assert got[1] == want_windowed, "windowed counts: " + diff(got[1], want_windowed)
        assert got[2] == want_enriched, "join: " + diff(got[2], want_enriched)

        # The internal topics Streams created: the store's changelog is compacted.
        internal = admin.list_topics(timeout=10).topics
        changelog = f"{app_id}-word-counts-changelog"
        assert f"{app_id}-by-word-repartition" in internal, sorted(internal)
        assert changelog in internal, sorted(internal)
        res = ConfigResource(ConfigResource.Type.TOPIC, changelog)
        configs = admin.describe_configs([res])[res].result(timeout=30)
        assert configs["cleanup.policy"].value == "compact"
        app.stop()
    except BaseException:
        print(app.tail())
        raise
    finally:
        app.cleanup()
