"""Scaling a running cluster from 3 to 4 brokers and back under produce load
(cluster pass only: it adds a broker to the module's 3-broker cluster).

The fourth broker starts with --broker-id=auto, takes its share of the partitions,
and is stopped with SIGTERM (what Kubernetes does on scale-in). Checked: every
acknowledged record is read back once and in order, the producer saw no errors
(only retries), and moving leadership read no data from the object store. The
numbers it prints are the ones in docs/operations.md ("Scaling out and in")."""

import json
import shutil
import signal
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, unique

PARTITIONS = 12


class Load:
    """An idempotent producer sending sequence-numbered records until stopped."""

    def __init__(self, bootstrap, topic):
        self.topic, self.stop_flag = topic, threading.Event()
        self.acked, self.errors, self.ack_times = {}, [], []
        self.retries = 0
        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                           "acks": "all", "linger.ms": 5, "statistics.interval.ms": 500,
                           "stats_cb": self.stats})
        self.thread = threading.Thread(target=self.run)

    def stats(self, raw):
        s = json.loads(raw)
        self.retries = max(self.retries, sum(b.get("txretries", 0) for b in s["brokers"].values()))

    def report(self, err, msg):
        if err:
            self.errors.append(err)
        else:
            self.acked[(msg.partition(), msg.offset())] = msg.value()
            self.ack_times.append(time.time())

    def run(self):
        seq = 0
        while not self.stop_flag.is_set():
            for _ in range(50):
                self.p.produce(self.topic, f"{seq:012d}".encode() * 16, key=str(seq),
                               partition=seq % PARTITIONS, on_delivery=self.report)
                seq += 1
            self.p.poll(0.01)
        self.p.flush(60)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join()


def admin_json(b, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}{path}", timeout=10) as r:
        return json.load(r)


def led(b):
    return b.metric("sluice_partitions_led")


def wait_until(cond, timeout=60):
    start = time.time()
    while not cond():
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.time() - start


def test_scale_out_and_in_moves_leaders_without_copying_data(broker):
    cluster = broker
    topic = unique("scale")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS)])[topic].result(30)

    load = Load(cluster.bootstrap, topic).start()
    time.sleep(3)
    total_partitions = sum(led(b) for b in cluster.brokers)

    # Scale out: a fourth broker with an id claimed in etcd.
    d = tempfile.mkdtemp(prefix="sluice-test-")
    fourth = Broker(d, [f"--etcd={cluster.etcd.url}", "--broker-id=auto",
                        f"--object-store=s3://{cluster.s3.bucket}/cluster",
                        f"--s3-endpoint={cluster.s3.endpoint}"])
    started = time.time()
    fourth.start()
    ready = time.time() - started
    share = total_partitions // 4
    took = wait_until(lambda: led(fourth) >= share)
    # Brokers 1-3 have fixed ids; the auto id is the lowest one nobody holds.
    assert {0, 1, 2, 3} == {b["id"] for b in admin_json(fourth, "/admin/v1/cluster")["brokers"]}
    gets_joining = fourth.metric("sluice_object_store_bytes_total", 'kind="get"')
    stored = sum(b.metric("sluice_flush_bytes_sum") for b in cluster.brokers)
    time.sleep(3)
    served = fourth.metric("sluice_requests_total", 'api="Produce"')

    # Scale in: SIGTERM, as Kubernetes stops a pod.
    before_in = time.time()
    fourth.stop(signal.SIGTERM)
    handoff = time.time() - before_in
    wait_until(lambda: sum(led(b) for b in cluster.brokers) == total_partitions)
    time.sleep(2)
    load.stop()
    shutil.rmtree(d, ignore_errors=True)

    # A clean exit released the id: the next auto broker gets it at once.
    fifth = Broker(tempfile.mkdtemp(prefix="sluice-test-"), fourth.extra_args).start()
    ids = [b["id"] for b in admin_json(fifth, "/admin/v1/cluster")["brokers"]]
    fifth.stop()
    shutil.rmtree(fifth.data_dir, ignore_errors=True)
    assert 0 in ids and len(ids) == 4, ids

    assert load.errors == [], load.errors[:5]
    # What the brokers answered: only retriable partition errors, if any.
    answered = {}
    for b in cluster.brokers:
        body = urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics").read().decode()
        for line in body.splitlines():
            if line.startswith("sluice_produce_errors_total{"):
                labels, n = line.rsplit(" ", 1)
                answered[labels] = answered.get(labels, 0) + float(n)
    assert all('retriable="true"' in k for k in answered), answered
    gaps = sorted(b - a for a, b in zip(load.ack_times, load.ack_times[1:]))
    print(f"\nscale: {len(load.acked)} records acknowledged, {len(load.errors)} delivery errors, "
          f"{load.retries} producer retries")
    print(f"scale out: broker ready in {ready:.2f}s, leads {share}+ of {total_partitions:.0f} "
          f"partitions {took:.2f}s later, read {gets_joining:.0f} bytes from the object store "
          f"(cluster held {stored / 2**20:.1f} MiB), then served {served:.0f} produce requests")
    print(f"scale in: SIGTERM to exit {handoff:.2f}s; longest pause between acks {gaps[-1]:.3f}s")
    print(f"produce partition errors answered by the 3 remaining brokers: {answered or 'none'}")

    # Moving leadership copies nothing: the new broker's only object reads would be
    # fetches, and nobody fetched.
    assert gets_joining == 0
    assert served > 0, "the new broker led partitions but received no produces"

    # Every acknowledged record once, in order, with its value.
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("scale-check"),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, last = {}, {}
    deadline = time.time() + 120
    while len(seen) < len(load.acked) and time.time() < deadline:
        for m in c.consume(1000, timeout=1):
            assert not m.error(), m.error()
            key = (m.partition(), m.offset())
            assert key not in seen, f"duplicate {key}"
            seq = int(m.value()[:12])
            assert last.get(m.partition(), -1) < seq, f"out of order at {key}"
            last[m.partition()] = seq
            seen[key] = m.value()
    c.close()
    missing = [k for k, v in load.acked.items() if seen.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged records not read back, e.g. {missing[:3]}"
