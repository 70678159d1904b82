// kafkajs against the brokers in $BOOTSTRAP: admin (create, describe, partitions,
// configs, offsets, delete), an idempotent producer, and two consumers sharing a
// group. Exits non-zero on the first failed check (tests/clients/test_kafkajs.py).
'use strict';

const assert = require('node:assert/strict');
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs');

const brokers = (process.env.BOOTSTRAP || '127.0.0.1:9092').split(',');
const kafka = new Kafka({ clientId: 'sluice-kafkajs', brokers, logLevel: logLevel.NOTHING });
const suffix = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;

async function eventually(check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = `kafkajs-${suffix}`;
  assert.equal(await admin.createTopics({
    topics: [{ topic, numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
    waitForLeaders: true,
  }), true);
  assert.ok((await admin.listTopics()).includes(topic));
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  assert.equal(meta.topics[0].partitions.length, 3);

  const described = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
    includeSynonyms: false,
  });
  assert.equal(described.resources[0].configEntries[0].configValue, '3600000');

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const n = 300;
  for (let batch = 0; batch < 3; batch++) {
    const messages = [];
    for (let i = batch * 100; i < (batch + 1) * 100; i++) {
      messages.push({ key: `k${i}`, value: `v${i}`, partition: i % 3, headers: { i: `${i}` } });
    }
    const acks = await producer.send({ topic, acks: -1, messages });
    assert.equal(acks.length, 3);
    for (const a of acks) assert.equal(a.errorCode, 0);
  }
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets(topic);
  assert.deepEqual(offsets.map((o) => [o.partition, o.high]).sort(), [[0, '100'], [1, '100'], [2, '100']]);

  const groupId = `kafkajs-group-${suffix}`;
  const seen = new Map();
  const consumers = [kafka.consumer({ groupId }), kafka.consumer({ groupId })];
  for (const c of consumers) {
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({
      eachMessage: async ({ partition, message }) => {
        assert.equal(message.headers.i.toString(), message.value.toString().slice(1));
        seen.set(message.value.toString(), partition);
      },
    });
  }
  await eventually(async () => assert.equal(seen.size, n), 60000);
  for (let i = 0; i < n; i++) assert.equal(seen.get(`v${i}`), i % 3);
  await eventually(async () => {
    const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
    assert.deepEqual(committed[0].partitions.map((p) => p.offset).sort(), ['100', '100', '100']);
  }, 30000);
  for (const c of consumers) await c.disconnect();

  const groups = await admin.describeGroups([groupId]);
  assert.equal(groups.groups[0].errorCode, 0);
  await eventually(async () => assert.ok((await admin.listGroups()).groups.some((g) => g.groupId === groupId)));
  await admin.resetOffsets({ groupId, topic, earliest: true });
  const reset = await admin.fetchOffsets({ groupId, topics: [topic] });
  // kafkajs commits its "earliest" sentinel (-2) itself; Kafka stores it as given.
  assert.deepEqual(reset[0].partitions.map((p) => p.offset).sort(), ['-2', '-2', '-2']);
  await admin.deleteGroups([groupId]);

  await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
  await eventually(async () => {
    const m = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.equal(m.topics[0].partitions.length, 4);
  });
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '40' }] });
  const after = await admin.fetchTopicOffsets(topic);
  assert.equal(after.find((o) => o.partition === 0).low, '40');
  await admin.deleteTopics({ topics: [topic] });
  await eventually(async () => assert.ok(!(await admin.listTopics()).includes(topic)));
  await admin.disconnect();
  console.log('kafkajs: all checks passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
