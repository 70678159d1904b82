"""Operating a broker or cluster under load: /metrics shows the documented series
with plausible values, and the CLI (a client of the admin API) shows topics,
partition leaders, offsets, group lag, and moves leaders with `topic reassign`."""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import sluice_bin, unique

VALUE = os.urandom(1024)


def brokers_of(broker):
    return getattr(broker, "brokers", [broker])


def cli(b, *args, check=True):
    return subprocess.run(
        [sluice_bin(), *args, "--admin-url", f"http://127.0.0.1:{b.http_port}"],
        capture_output=True, text=True, check=check, timeout=60)


def cli_json(b, *args):
    return json.loads(cli(b, *args, "--json").stdout)


def total(broker, name, label=""):
    return sum(b.metric(name, label) for b in brokers_of(broker))


def produce(bootstrap, topic, n, partitions, pause=0.0):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "linger.ms": 5, "compression.type": "none"})
    for i in range(n):
        p.produce(topic, VALUE, key=str(i), partition=i % partitions)
        if i % 100 == 0:
            p.poll(0)
            time.sleep(pause)
    assert p.flush(30) == 0


def test_metrics_and_cli_under_load(broker):
    first = brokers_of(broker)[0]
    topic, group = unique("ops"), unique("ops-group")
    out = cli(first, "topic", "create", topic, "--partitions", "4",
              "--config", "retention.ms=86400000").stdout
    assert f"created {topic} (4 partitions)" in out

    # Load in the background (at least 2 s) while /metrics is scraped.
    loader = threading.Thread(target=produce, args=(broker.bootstrap, topic, 4000, 4, 0.05))
    loader.start()
    during = 0
    while loader.is_alive():
        during = max(during, total(broker, "sluice_requests_total", 'api="Produce"'))
        time.sleep(0.1)
    loader.join()
    produce(broker.bootstrap, topic, 1000, 4)
    assert during > 0, "no produce request seen while the load ran"

    # A group consumes 3,000 of the 5,000 records and commits: lag 2,000.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen = 0
    deadline = time.time() + 60
    positions = {}
    while seen < 3000 and time.time() < deadline:
        for m in c.consume(500, timeout=1):
            assert not m.error(), m.error()
            if seen < 3000:
                seen += 1
                positions[m.partition()] = m.offset() + 1
    assert seen == 3000
    # Partitions not read yet are committed at 0, so the lag covers all four.
    c.commit(offsets=[TopicPartition(topic, p, positions.get(p, 0)) for p in range(4)],
             asynchronous=False)
    c.close()

    # Requests by API, with bytes and latency histograms.
    produces = total(broker, "sluice_requests_total", 'api="Produce"')
    assert produces >= during
    assert total(broker, "sluice_request_seconds_count", 'api="Produce"') == produces
    assert total(broker, "sluice_request_bytes_total", 'api="Produce",direction="in"') >= 5000 * 1024
    assert total(broker, "sluice_request_bytes_total", 'api="Fetch",direction="out"') >= 3000 * 1024
    assert total(broker, "sluice_request_seconds_bucket", 'api="Produce",le="+Inf"') == produces
    # Flushes: every committed object's size and time; they hold at least the values.
    flushes = total(broker, "sluice_flush_bytes_count")
    assert flushes > 0
    assert total(broker, "sluice_flush_seconds_count") == flushes
    assert total(broker, "sluice_flush_bytes_sum") >= 5000 * 1024
    # The object store saw those PUTs, the metadata store the commits.
    assert total(broker, "sluice_object_store_requests_total", 'kind="put",outcome="ok"') >= flushes
    assert total(broker, "sluice_object_store_request_seconds_count", 'kind="put"') >= flushes
    assert total(broker, "sluice_meta_request_seconds_count", 'op="txn"') >= flushes
    assert total(broker, "sluice_commits_total", 'outcome="committed"') >= flushes
    # Cache tiers and partitions led: every partition has exactly one leader.
    body = urllib.request.urlopen(f"http://127.0.0.1:{first.http_port}/metrics").read().decode()
    for family in ("sluice_cache_lookups_total", "sluice_partitions_led",
                   "sluice_meta_requests_total", "sluice_object_store_bytes_total"):
        assert f"# TYPE {family} " in body, family
    topics = cli_json(first, "topic", "list")
    assert total(broker, "sluice_partitions_led") == sum(len(t["partitions"]) for t in topics)

    # The CLI: leaders and offsets of every partition, from whichever broker asked.
    ids = {b["id"] for b in cli_json(first, "cluster", "describe")["brokers"]}
    assert len(ids) == len(brokers_of(broker))
    for b in brokers_of(broker):
        t = cli_json(b, "topic", "describe", topic)
        assert [p["partition"] for p in t["partitions"]] == [0, 1, 2, 3]
        assert all(p["leader"] in ids for p in t["partitions"])
        assert sum(p["high_watermark"] for p in t["partitions"]) == 5000
        assert all(p["size_bytes"] >= 1250 * 1024 for p in t["partitions"])
        assert t["configs"] == {"retention.ms": "86400000"}
    table = cli(first, "topic", "describe", topic).stdout
    assert "HIGH WATERMARK" in table and "1250" in table
    assert topic in cli(first, "topic", "list").stdout

    # Group lag, in the CLI and on the controller's /metrics.
    lag = cli_json(first, "group", "lag", group)
    assert lag[0]["lag"] == 2000
    assert sum(o["committed"] for o in lag[0]["offsets"]) == 3000
    assert group in cli(first, "group", "list").stdout
    assert "2000" in cli(first, "group", "describe", group).stdout
    deadline = time.time() + 10
    while total(broker, "sluice_consumer_group_lag", f'group="{group}",topic="{topic}"') != 2000:
        assert time.time() < deadline, "lag metric never reached 2000"
        time.sleep(0.2)


def test_reassign_moves_leaders_and_keeps_them(broker):
    first = brokers_of(broker)[0]
    topic = unique("moved")
    cli(first, "topic", "create", topic, "--partitions", "3")
    ids = [b["id"] for b in cli_json(first, "cluster", "describe")["brokers"]]
    before = cli_json(first, "topic", "describe", topic)["partitions"]
    target = next((i for i in ids if i != before[1]["leader"]), ids[0])
    out = cli(first, "topic", "reassign", topic, "--partitions", "1",
              "--broker", str(target)).stdout
    assert f"1/1 partition(s) led by broker {target}" in out
    after = cli_json(first, "topic", "describe", topic)
    assert after["partitions"][1]["leader"] == target
    assert after["pinned"] == {"1": target}
    # Produce to the moved partition and read it back.
    produce(broker.bootstrap, topic, 300, 3)
    t = cli_json(first, "topic", "describe", topic)
    assert sum(p["high_watermark"] for p in t["partitions"]) == 300
    out = cli(first, "topic", "reassign", topic, "--unpin").stdout
    assert "unpinned 3 partition(s)" in out
    assert cli_json(first, "topic", "describe", topic)["pinned"] == {}
    # Deleting the topic through the CLI.
    assert f"deleted {topic}" in cli(first, "topic", "delete", topic).stdout


def test_cli_reports_errors_with_the_api_status(broker):
    first = brokers_of(broker)[0]
    r = cli(first, "topic", "describe", unique("missing"), check=False)
    assert r.returncode == 2 and "404" in r.stderr
    r = cli(first, "topic", "create", unique("bad"), "--partitions", "0", check=False)
    assert r.returncode == 2 and "400" in r.stderr
    r = cli(first, "topic", "reassign", unique("nope"), "--broker", "99", check=False)
    assert r.returncode == 2 and "400" in r.stderr
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{first.http_port}/admin/v1/groups/{unique('g')}")
        raise AssertionError("unknown group answered 200")
    except urllib.error.HTTPError as e:
        assert e.code == 404
