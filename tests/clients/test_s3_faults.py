"""S3 that answers 503 SlowDown or stalls for a while: nothing acknowledged is lost or
duplicated, nothing unacknowledged is counted, and service resumes by itself.

Runs on S3 whatever SLUICE_TEST_OBJECT_STORE says: the faults are S3's."""

import shutil
import tempfile
import threading
import time

import pytest
from confluent_kafka import Producer

from conftest import Broker, S3Server
from s3_fault_proxy import FaultProxy
from test_confluent_kafka import consume_all, create

N = 4000


@pytest.fixture(scope="module")
def faulty():
    s3 = S3Server()
    proxy = FaultProxy(s3.port)
    data_dir = tempfile.mkdtemp(prefix="sluice-faults-")
    b = Broker(data_dir, [
        f"--object-store=s3://{s3.bucket}/faults",
        f"--s3-endpoint={proxy.endpoint}",
        # Short limits so faults outlast a request's retries and fail whole flushes.
        "--s3-request-timeout-ms=1000",
        "--s3-retry-timeout-ms=2500",
        "--s3-max-retries=3",
    ]).start()
    yield b, proxy
    b.stop()
    proxy.stop()
    s3.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_503_bursts_and_stalls_lose_nothing(faulty):
    broker, proxy = faulty
    topic = "faults"
    create(broker, topic, 3)
    acked, failed = {}, []

    def on_delivery(err, msg):
        if err:
            failed.append(err)
        else:
            key = (msg.partition(), msg.offset())
            assert key not in acked, f"offset {key} acknowledged twice"
            acked[key] = msg.value()

    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
    })

    def produce():
        for i in range(N):
            p.produce(topic, value=b"%d" % i, partition=i % 3, on_delivery=on_delivery)
            p.poll(0)
            time.sleep(0.003)
        p.flush(120)

    writer = threading.Thread(target=produce)
    writer.start()
    time.sleep(2)
    proxy.inject("503", 5)      # longer than a request's retry budget: flushes fail
    time.sleep(7)
    proxy.inject("stall", 3)    # requests time out, then land late
    writer.join(timeout=180)
    assert not writer.is_alive()
    assert proxy.injected["503"] > 0 and proxy.injected["stall"] > 0, proxy.injected

    assert not failed, f"deliveries failed for good: {failed[:3]}"
    assert len(acked) == N
    msgs = consume_all(broker, topic, 3, N)
    assert len(msgs) == N, "every acknowledged record, nothing more"
    by_part = {}
    for m in msgs:
        by_part.setdefault(m.partition(), []).append(m)
        assert acked[(m.partition(), m.offset())] == m.value(), "record at its acknowledged offset"
    for ms in by_part.values():
        assert [m.offset() for m in ms] == list(range(len(ms))), "offsets dense"
    assert sorted(int(m.value()) for m in msgs) == list(range(N)), "exactly once"

    log = open(broker.log.name, errors="replace").read()
    assert "flush failed" in log, "the 503 burst outlasted retries and failed flushes"

    # Service is back: a new record is acknowledged promptly.
    start = time.time()
    p.produce(topic, value=b"after", partition=0)
    assert p.flush(10) == 0
    assert time.time() - start < 5
