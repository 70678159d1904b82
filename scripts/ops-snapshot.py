#!/usr/bin/env python3
"""Starts a 3-broker cluster (etcd + moto, as the client tests do), runs produce load
with a consumer group that falls behind, and prints what an operator sees: the CLI's
cluster, topic and lag views, and a summary of /metrics (request latency quantiles,
flush sizes, object-store and etcd latency, cache hits, lag).

    python3 scripts/ops-snapshot.py [--seconds 10]

Needs the release binary (`cargo build --release -p sluice-server`), etcd and the test requirements (tests/clients/requirements.txt).
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
from confluent_kafka import Consumer, Producer  # noqa: E402
from conftest import Cluster, sluice_bin  # noqa: E402


def scrape(b):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=5) as r:
        return r.read().decode()


def series(text, name, label=""):
    pat = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$")
    out = []
    for line in text.splitlines():
        m = pat.match(line)
        if m and label in (m.group(1) or ""):
            out.append((m.group(1) or "", float(m.group(2))))
    return out


def quantile(texts, name, label, q):
    buckets = {}
    for t in texts:
        for labels, v in series(t, name + "_bucket", label):
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets[le] = buckets.get(le, 0) + v
    total = buckets.get("+Inf", 0)
    if not total:
        return float("nan")
    for le, v in sorted(((float(k), v) for k, v in buckets.items())):
        if v >= q * total:
            return le
    return float("inf")


def summed(texts, name, label=""):
    return sum(v for t in texts for _, v in series(t, name, label))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    cluster = Cluster(3)
    try:
        admin = f"http://127.0.0.1:{cluster.brokers[0].http_port}"
        cli = lambda *a: subprocess.run([sluice_bin(), *a, "--admin-url", admin],  # noqa: E731
                                        capture_output=True, text=True, check=True).stdout
        cli("topic", "create", "orders", "--partitions", "6")
        stop = threading.Event()
        sent = [0]

        def load():
            p = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 5,
                          "enable.idempotence": True})
            value = os.urandom(1024)
            while not stop.is_set():
                for i in range(200):
                    p.produce("orders", value, key=str(sent[0] + i))
                sent[0] += 200
                p.poll(0)
                time.sleep(0.002)
            p.flush(30)

        def consume():
            c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "billing",
                          "auto.offset.reset": "earliest", "auto.commit.interval.ms": 200})
            c.subscribe(["orders"])
            while not stop.is_set():
                c.consume(50, timeout=0.2)
                time.sleep(0.05)  # slower than the producer: lag grows
            c.close()

        threads = [threading.Thread(target=load), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        texts = [scrape(b) for b in cluster.brokers]
        stop.set()
        for t in threads:
            t.join()

        print(f"== load: {sent[0]} records of 1 KiB in {args.seconds:.0f} s, group 'billing' behind\n")
        print(cli("cluster", "describe"))
        print(cli("topic", "describe", "orders"))
        print(cli("group", "lag", "billing"))
        secs = args.seconds
        produce_api, put, txn = 'api="Produce"', 'kind="put"', 'op="txn"'
        produced = summed(texts, "sluice_request_bytes_total", 'api="Produce",direction="in"')
        fetched = summed(texts, "sluice_request_bytes_total", 'api="Fetch",direction="out"')
        flushes = summed(texts, "sluice_flush_bytes_count")
        print("== /metrics, summed over the 3 brokers, while the load ran")
        print(f"produce in {produced / secs / 2**20:.1f} MiB/s, fetch out {fetched / secs / 2**20:.1f} MiB/s")
        print(f"produce latency p50 <= {quantile(texts, 'sluice_request_seconds', produce_api, 0.5)} s, "
              f"p99 <= {quantile(texts, 'sluice_request_seconds', produce_api, 0.99)} s")
        print(f"flushes {flushes:.0f}, mean size {summed(texts, 'sluice_flush_bytes_sum') / max(flushes, 1) / 1024:.0f} KiB, "
              f"mean time {summed(texts, 'sluice_flush_seconds_sum') / max(flushes, 1) * 1000:.1f} ms")
        puts = summed(texts, "sluice_object_store_request_seconds_count", 'kind="put"')
        print(f"object-store PUTs {puts:.0f}, mean {summed(texts, 'sluice_object_store_request_seconds_sum', put) / max(puts, 1) * 1000:.1f} ms")
        txns = summed(texts, "sluice_meta_request_seconds_count", 'op="txn"')
        print(f"etcd txns {txns:.0f}, mean {summed(texts, 'sluice_meta_request_seconds_sum', txn) / max(txns, 1) * 1000:.1f} ms")
        hits = {tier: summed(texts, "sluice_cache_lookups_total", f'tier="{tier}"')
                for tier in ("memory", "disk", "object")}
        print(f"cache lookups by tier {hits}")
        print(f"partitions led {[summed([t], 'sluice_partitions_led') for t in texts]}")
        print(f"sluice_consumer_group_lag {series(''.join(texts), 'sluice_consumer_group_lag')}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
