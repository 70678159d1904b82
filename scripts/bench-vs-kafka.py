#!/usr/bin/env python3
"""Sluice beside Apache Kafka on this machine, in one run, with the same workloads.

  scripts/bench-vs-kafka.py [--messages N] [--skip-s3]

Brokers, one after another, each fresh: Apache Kafka 4.4 (tests/kafka/kafka.sh: one
KRaft node, its default 1 GiB heap, data in a temporary directory, no fsync per write
as Kafka's default), Sluice on its embedded default (objects in a local directory,
embedded metadata, default flags), and Sluice with its objects in an S3 server (moto
on loopback). Against each:

1. `sluice-bench --bootstrap` (librdkafka): N records of 1 KiB over 8 partitions with
   acks=all as fast as it goes; 5,000 msg/s for 10 s with a tailing consumer (produce
   and end-to-end latency p50/p99/p99.9); a catch-up consumer reading all N.
2. Kafka's `kafka-producer-perf-test` (the Java producer, its defaults: acks=all,
   idempotence on): N records of 1 KiB as fast as it goes, then 50,000 at 5,000/s
   (latency percentiles as the tool reports them).
3. Kafka's `kafka-consumer-perf-test`: the N records of step 2, from the beginning.

Measured on the broker process: CPU seconds (user + system, /proc/PID/stat) during
each produce and consume phase, per GB moved; its peak RSS (VmHWM) over the whole run;
and the size of its data (the data directory; for S3, the bucket's objects). Printed:
one line per measurement (`broker.metric: value`), then a Markdown table of every
measurement with the ratios Sluice / Kafka, which is what docs/benchmarks.md quotes.

Needs the release binaries (`cargo build --release -p sluice-server -p sluice-bench`;
$SLUICE_BIN and $SLUICE_BENCH override) and `moto_server` for the S3 pass.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))
import conftest  # noqa: E402  (the brokers the client tests start)

KAFKA_SH = ROOT / "tests" / "kafka" / "kafka.sh"
TICK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 8
RATE, RATE_RECORDS = 5000, 50_000


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dir_bytes(path):
    """Bytes on disk (allocated blocks: Kafka's preallocated indexes are sparse)."""
    return sum(f.stat().st_blocks * 512 for f in Path(path).rglob("*") if f.is_file())


class Kafka:
    name = "kafka"

    def __init__(self):
        self.broker = conftest.ApacheKafka()
        self.bootstrap = self.broker.bootstrap
        self.pid = int(open(os.path.join(self.broker.dir, "pid")).read())

    def data_bytes(self):
        return dir_bytes(os.path.join(self.broker.dir, "data"))

    def stop(self):
        self.broker.stop()


class Sluice:
    """The broker as a user starts it: `sluice serve` with default flags."""

    def __init__(self, name, s3=None):
        self.name, self.s3 = name, s3
        self.dir = tempfile.mkdtemp(prefix="sluice-bench-")
        port, http = conftest.free_port(), conftest.free_port()
        self.bootstrap, self.http = f"127.0.0.1:{port}", f"127.0.0.1:{http}"
        args = [conftest.sluice_bin(), "serve", "--data-dir", self.dir,
                "--kafka-listen", self.bootstrap, "--http-listen", self.http]
        if s3:
            args += [f"--object-store=s3://{s3.bucket}/bench", f"--s3-endpoint={s3.endpoint}"]
        self.log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     env={**os.environ, **conftest.AWS_TEST_ENV})
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.http}/readyz", timeout=1):
                    break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"sluice did not start; see {self.log.name}")
                time.sleep(0.1)

    def data_bytes(self):
        # The data (objects and the embedded metadata store), not the read cache.
        if self.s3:
            return self.s3_bytes() + dir_bytes(os.path.join(self.dir, "meta"))
        return dir_bytes(os.path.join(self.dir, "objects")) + dir_bytes(
            os.path.join(self.dir, "meta"))

    def s3_bytes(self):
        total, token = 0, None
        while True:
            url = f"{self.s3.endpoint}/{self.s3.bucket}?list-type=2&prefix=bench/"
            if token:
                url += "&continuation-token=" + urllib.request.quote(token)
            body = urllib.request.urlopen(url, timeout=30).read().decode()
            total += sum(int(s) for s in re.findall(r"<Size>(\d+)</Size>", body))
            m = re.search(r"<NextContinuationToken>([^<]+)<", body)
            if not m:
                return total
            token = m.group(1)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def create_topic(bootstrap, topic):
    """Creates `topic` and writes one record to each partition, so that its leaders
    are ready (Kafka answers LEADER_NOT_AVAILABLE for a moment after creation) before
    a measured producer starts."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=60)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for partition in range(PARTITIONS):
        p.produce(topic, b"warm-up", partition=partition)
    assert p.flush(60) == 0


def run_lines(cmd, on_line=None, timeout=1800):
    """Runs `cmd`, calling on_line for each line of its stdout as it comes."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    deadline = time.time() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if on_line:
            on_line(lines[-1])
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[0]} ran over {timeout} s")
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                           + "\n".join(lines[-20:]))
    return lines


def bench_binary():
    env = os.environ.get("SLUICE_BENCH")
    if env:
        return env
    return str(Path(conftest.sluice_bin()).with_name("sluice-bench"))


def measure(broker, messages):
    """Every measurement of one broker, as {metric: value}."""
    out = {}
    gb = messages * 1024 / 1e9

    # 1. librdkafka, through sluice-bench.
    marks = {"start": cpu_seconds(broker.pid)}

    def on_line(line):
        key, _, value = line.partition(": ")
        if key == "produce_throughput_msgs_s":
            marks["produced"] = cpu_seconds(broker.pid)
        elif key == "e2e_samples":
            marks["latency_done"] = cpu_seconds(broker.pid)
        elif key == "catchup_consume_msgs_s":
            marks["consumed"] = cpu_seconds(broker.pid)
        if key in ("produce_throughput_mb_s", "produce_latency_p50_ms",
                   "produce_latency_p99_ms", "produce_latency_p999_ms",
                   "e2e_latency_p50_ms", "e2e_latency_p99_ms", "e2e_latency_p999_ms",
                   "catchup_consume_mb_s"):
            out[f"rdkafka_{key}"] = float(value)

    run_lines([bench_binary(), "--bootstrap", broker.bootstrap, "--messages", str(messages),
               "--partitions", str(PARTITIONS), "--rate", str(RATE), "--rate-seconds",
               str(RATE_RECORDS // RATE), "--put-rate-partitions"], on_line)
    out["rdkafka_produce_cpu_s_per_gb"] = (marks["produced"] - marks["start"]) / gb
    out["rdkafka_consume_cpu_s_per_gb"] = (marks["consumed"] - marks["latency_done"]) / gb

    # 2. The Java producer, as fast as it goes and then at a fixed rate.
    create_topic(broker.bootstrap, "perf")
    props = ["--producer-props", f"bootstrap.servers={broker.bootstrap}", "acks=all"]
    before = cpu_seconds(broker.pid)
    lines = run_lines([str(KAFKA_SH), "kafka-producer-perf-test", "--topic", "perf",
                       "--num-records", str(messages), "--record-size", "1024",
                       "--throughput", "-1", *props])
    out["java_produce_cpu_s_per_gb"] = (cpu_seconds(broker.pid) - before) / gb
    m = re.search(r"records/sec \(([\d.]+) MB/sec\)", lines[-1])
    out["java_produce_mib_s"] = float(m.group(1))
    create_topic(broker.bootstrap, "perf-rate")
    lines = run_lines([str(KAFKA_SH), "kafka-producer-perf-test", "--topic", "perf-rate",
                       "--num-records", str(RATE_RECORDS), "--record-size", "1024",
                       "--throughput", str(RATE), *props])
    m = re.search(r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", lines[-1])
    out["java_produce_latency_p50_ms"] = float(m.group(1))
    out["java_produce_latency_p99_ms"] = float(m.group(3))
    out["java_produce_latency_p999_ms"] = float(m.group(4))

    # 3. The Java consumer reading step 2's records.
    before = cpu_seconds(broker.pid)
    lines = run_lines([str(KAFKA_SH), "kafka-consumer-perf-test", "--bootstrap-server",
                       broker.bootstrap, "--topic", "perf", "--num-records", str(messages),
                       "--timeout", "120000", "--group", "perf-consumer"])
    out["java_consume_cpu_s_per_gb"] = (cpu_seconds(broker.pid) - before) / gb
    header, row = lines[-2].split(", "), lines[-1].split(", ")
    stats = dict(zip((h.strip() for h in header), row))
    out["java_consume_mib_s"] = float(stats["fetch.MB.sec"])

    # Produced: both producers' N records and both latency phases' records; consumed:
    # both catch-up reads and the tailing consumer.
    produced_gb = (2 * messages + 2 * RATE_RECORDS) * 1024 / 1e9
    consumed_gb = (2 * messages + RATE_RECORDS) * 1024 / 1e9
    out["peak_rss_mib"] = peak_rss_mib(broker.pid)
    out["peak_rss_mib_per_gb_moved"] = out["peak_rss_mib"] / (produced_gb + consumed_gb)
    out["data_bytes_per_gb_produced"] = broker.data_bytes() / produced_gb
    return out


ROWS = [
    ("rdkafka_produce_throughput_mb_s", "produce, librdkafka, 1 KiB, acks=all (MB/s)"),
    ("java_produce_mib_s", "produce, kafka-producer-perf-test (MiB/s)"),
    ("rdkafka_produce_latency_p50_ms", "produce latency at 5,000/s, librdkafka, p50 (ms)"),
    ("rdkafka_produce_latency_p99_ms", "… p99 (ms)"),
    ("rdkafka_produce_latency_p999_ms", "… p99.9 (ms)"),
    ("rdkafka_e2e_latency_p50_ms", "end-to-end latency at 5,000/s, librdkafka, p50 (ms)"),
    ("rdkafka_e2e_latency_p99_ms", "… p99 (ms)"),
    ("rdkafka_e2e_latency_p999_ms", "… p99.9 (ms)"),
    ("java_produce_latency_p50_ms", "produce latency at 5,000/s, Java producer, p50 (ms)"),
    ("java_produce_latency_p99_ms", "… p99 (ms)"),
    ("java_produce_latency_p999_ms", "… p99.9 (ms)"),
    ("rdkafka_catchup_consume_mb_s", "catch-up consume, librdkafka (MB/s)"),
    ("java_consume_mib_s", "catch-up consume, kafka-consumer-perf-test (MiB/s)"),
    ("rdkafka_produce_cpu_s_per_gb", "broker CPU per GB produced, librdkafka (s)"),
    ("java_produce_cpu_s_per_gb", "broker CPU per GB produced, Java (s)"),
    ("rdkafka_consume_cpu_s_per_gb", "broker CPU per GB consumed, librdkafka (s)"),
    ("java_consume_cpu_s_per_gb", "broker CPU per GB consumed, Java (s)"),
    ("peak_rss_mib", "broker peak RSS (MiB)"),
    ("peak_rss_mib_per_gb_moved", "… per GB moved (MiB)"),
    ("data_bytes_per_gb_produced", "data on disk or in the bucket per GB produced (bytes)"),
]


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e9:.3f} G"
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--skip-s3", action="store_true")
    args = ap.parse_args()

    results = {}
    plans = [("kafka", Kafka), ("sluice", lambda: Sluice("sluice"))]
    if not args.skip_s3:
        plans.append(("sluice_s3", None))
    for name, start in plans:
        s3 = None
        if name == "sluice_s3":
            s3 = conftest.S3Server()
            broker = Sluice(name, s3)
        else:
            broker = start()
        try:
            results[name] = measure(broker, args.messages)
        finally:
            broker.stop()
            if s3:
                s3.stop()
        for k, v in results[name].items():
            print(f"{name}.{k}: {v:.2f}", flush=True)

    names = [n for n, _ in plans]
    head = "| measurement | Kafka 4.4 | Sluice | Sluice / Kafka |"
    sep = "|---|---|---|---|"
    if "sluice_s3" in names:
        head += " Sluice on S3 (moto) | S3 / Kafka |"
        sep += "---|---|"
    print()
    print(f"{args.messages:,} records of 1 KiB per producer run, {PARTITIONS} partitions, "
          f"one run, {time.strftime('%Y-%m-%d')}")
    print()
    print(head)
    print(sep)
    for key, label in ROWS:
        k = results["kafka"][key]
        cells = [label, fmt(k)]
        for n in names[1:]:
            v = results[n][key]
            r = v / k if k else float("nan")
            cells += [fmt(v), f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
