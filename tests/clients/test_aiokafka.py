"""aiokafka, an asyncio client implementation."""

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidTopicError, MessageSizeTooLargeError, TopicAlreadyExistsError

from conftest import unique

N = 20_000


def run(coro):
    return asyncio.run(coro)


def test_admin_duplicate(broker):
    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await a.start()
        name = unique("aio-admin")
        await a.create_topics([NewTopic(name, 2, 1)])
        resp = await a.create_topics([NewTopic(name, 2, 1)])
        codes = [t[1] for t in resp.topic_errors]
        assert codes == [TopicAlreadyExistsError.errno]
        resp = await a.create_topics([NewTopic("no spaces", 1, 1)])
        assert [t[1] for t in resp.topic_errors] == [InvalidTopicError.errno]
        await a.close()
    run(go())


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume(broker, codec):
    topic = unique(f"aio-{codec}")

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec,
                             linger_ms=5, acks="all")
        await p.start()
        futs = [await p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0,
                             headers=[("n", b"%d" % i)], timestamp_ms=1_650_000_000_000 + i)
                for i in range(N)]
        metas = await asyncio.gather(*futs)
        await p.stop()
        assert [m.offset for m in metas] == list(range(N))

        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        c.assign([TopicPartition(topic, 0)])
        got = []
        while len(got) < N:
            batch = await c.getmany(timeout_ms=5000)
            if not batch:
                break
            for msgs in batch.values():
                got.extend(msgs)
        await c.stop()
        assert [m.offset for m in got] == list(range(N))
        assert [m.value for m in got[:3]] == [b"v0", b"v1", b"v2"]
        assert got[-1].headers == (("n", b"%d" % (N - 1)),)
        assert got[-1].timestamp == 1_650_000_000_000 + N - 1
    run(go())


def test_idempotent_and_offsets_for_times(broker):
    topic = unique("aio-idem")

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await p.start()
        for i in range(500):
            await p.send(topic, value=b"%d" % i, partition=0, timestamp_ms=10_000 + i)
        await p.flush()
        await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await c.start()
        tp = TopicPartition(topic, 0)
        found = await c.offsets_for_times({tp: 10_250})
        assert found[tp].offset == 250
        assert (await c.end_offsets([tp]))[tp] == 500
        await c.stop()
    run(go())


def test_max_message_bytes_and_long_poll(broker):
    topic = unique("aio-limits")

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await a.start()
        await a.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})])
        await a.close()
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await p.start()
        with pytest.raises(MessageSizeTooLargeError):
            await (await p.send(topic, value=b"x" * 5000, partition=0))
        assert (await p.send_and_wait(topic, value=b"small", partition=0)).offset == 0

        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=5000,
                             enable_auto_commit=False)
        await c.start()
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 1)
        await c.getmany(timeout_ms=200)  # a long-polling fetch is now waiting
        await p.send_and_wait(topic, value=b"wake", partition=0)
        sent = time.time()
        got = []
        while not got and time.time() - sent < 10:
            for msgs in (await c.getmany(timeout_ms=50)).values():
                got.extend(m.value for m in msgs)
        latency = time.time() - sent
        await c.stop()
        await p.stop()
        assert got == [b"wake"]
        assert latency < 1.0, f"long poll took {latency:.3f}s"
    run(go())


def test_transactions_commit_abort_and_offsets(broker):
    """aiokafka's transactional producer (RFC 0010): a committed transaction with
    the input offsets in it is visible at read_committed, an aborted one is not."""
    source, sink, group = unique("aio-txn-in"), unique("aio-txn-out"), unique("aio-txn")

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await a.start()
        await a.create_topics([NewTopic(source, 1, 1), NewTopic(sink, 1, 1)])
        await a.close()
        plain = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await plain.start()
        for i in range(10):
            await plain.send_and_wait(source, str(i).encode(), partition=0)
        await plain.stop()

        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                             transactional_id=unique("aio-tx"))
        await p.start()
        async with p.transaction():
            for i in range(5):
                await p.send(sink, f"kept-{i}".encode(), partition=0)
            await p.send_offsets_to_transaction({TopicPartition(source, 0): 5}, group)
        await p.begin_transaction()
        for i in range(5):
            await (await p.send(sink, f"dropped-{i}".encode(), partition=0))
        await p.abort_transaction()
        await p.stop()

        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                             isolation_level="read_committed",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        c.assign([TopicPartition(sink, 0)])
        got = []
        deadline = time.time() + 30
        while time.time() < deadline:
            batch = await c.getmany(timeout_ms=500)
            got += [m.value.decode() for ms in batch.values() for m in ms]
            if len(got) >= 5 and not batch:
                break
        await c.stop()
        assert got == [f"kept-{i}" for i in range(5)]

        check = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                 enable_auto_commit=False)
        await check.start()
        committed = None
        deadline = time.time() + 15
        while time.time() < deadline:
            committed = await check.committed(TopicPartition(source, 0))
            if committed == 5:
                break
            await asyncio.sleep(0.2)
        await check.stop()
        assert committed == 5
    run(go())
