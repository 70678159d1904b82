package dev.sluice.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.StickyAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The Java consumer: both group protocols, every classic assignor, static members. */
class ConsumerTest {

    static void produce(String topic, int partitions, int perPartition, long baseTs)
            throws Exception {
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of())) {
            for (int part = 0; part < partitions; part++) {
                for (int i = 0; i < perPartition; i++) {
                    p.send(new ProducerRecord<>(topic, part, baseTs + i, "k" + i, part + ":" + i));
                }
            }
            p.flush();
        }
    }

    /** Two members share every partition, each partition exactly once, then consume all. */
    private static void twoMembersSplitTheTopic(Map<String, Object> conf) throws Exception {
        String topic = Kafka.unique("java-group");
        String group = Kafka.unique("java-g");
        int partitions = 6;
        Kafka.createTopic(topic, partitions, Map.of());
        produce(topic, partitions, 50, System.currentTimeMillis());
        try (KafkaConsumer<String, String> a = Kafka.consumer(group, conf);
             KafkaConsumer<String, String> b = Kafka.consumer(group, conf)) {
            a.subscribe(List.of(topic));
            b.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            boolean split = Kafka.pollUntil(List.of(a, b), () -> {
                Set<TopicPartition> union = new HashSet<>(a.assignment());
                union.addAll(b.assignment());
                return !a.assignment().isEmpty() && !b.assignment().isEmpty()
                        && union.size() == partitions
                        && a.assignment().size() + b.assignment().size() == partitions;
            }, got);
            assertTrue(split, "assignment " + a.assignment() + " / " + b.assignment());
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            Set<String> seen = new HashSet<>();
            got.forEach(r -> seen.add(r.value()));
            while (seen.size() < partitions * 50 && System.nanoTime() < deadline) {
                for (KafkaConsumer<String, String> c : List.of(a, b)) {
                    c.poll(Duration.ofMillis(100)).forEach(r -> {
                        got.add(r);
                        seen.add(r.value());
                    });
                }
            }
            assertEquals(partitions * 50, seen.size());
            a.commitSync();
            b.commitSync();
        }
    }

    @ParameterizedTest
    @ValueSource(classes = {RangeAssignor.class, RoundRobinAssignor.class, StickyAssignor.class,
            CooperativeStickyAssignor.class})
    void classicProtocolWithEachAssignor(Class<?> assignor) throws Exception {
        twoMembersSplitTheTopic(Map.of(
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.getName()));
    }

    @Test
    void consumerProtocol() throws Exception {
        twoMembersSplitTheTopic(Map.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"classic", "consumer"})
    void staticMemberComesBackToItsPartitions(String protocol) throws Exception {
        String topic = Kafka.unique("java-static");
        String group = Kafka.unique("java-sg");
        Kafka.createTopic(topic, 4, Map.of());
        Map<String, Object> conf = new java.util.HashMap<>(Map.of(
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol,
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-1"));
        if (protocol.equals("classic")) {
            // The classic protocol's session timeout is the client's to choose.
            conf.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
        }
        Set<TopicPartition> first;
        try (KafkaConsumer<String, String> c = Kafka.consumer(group, conf)) {
            c.subscribe(List.of(topic));
            assertTrue(Kafka.pollUntil(List.of(c), () -> c.assignment().size() == 4));
            first = new HashSet<>(c.assignment());
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(group, conf)) {
            c.subscribe(List.of(topic));
            assertTrue(Kafka.pollUntil(List.of(c), () -> c.assignment().size() == 4));
            assertEquals(first, c.assignment());
        }
    }

    @Test
    void seekOffsetsForTimesPauseResumeListenerAndCommits() throws Exception {
        String topic = Kafka.unique("java-seek");
        String group = Kafka.unique("java-seek-g");
        Kafka.createTopic(topic, 2, Map.of());
        long baseTs = 1_700_000_000_000L;
        produce(topic, 2, 100, baseTs);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        CountDownLatch assigned = new CountDownLatch(1);
        AtomicReference<Collection<TopicPartition>> revoked = new AtomicReference<>();
        try (KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of(
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false))) {
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    revoked.set(partitions);
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    if (partitions.size() == 2) {
                        assigned.countDown();
                    }
                }
            });
            assertTrue(Kafka.pollUntil(List.of(c), () -> assigned.getCount() == 0));

            Map<TopicPartition, OffsetAndTimestamp> byTime =
                    c.offsetsForTimes(Map.of(p0, baseTs + 40, p1, baseTs + 1_000));
            assertEquals(40, byTime.get(p0).offset());
            assertEquals(baseTs + 40, byTime.get(p0).timestamp());
            assertEquals(null, byTime.get(p1), "no record at or after that time");
            assertEquals(Map.of(p0, 0L, p1, 0L), c.beginningOffsets(List.of(p0, p1)));
            assertEquals(Map.of(p0, 100L, p1, 100L), c.endOffsets(List.of(p0, p1)));

            c.seek(p0, 90);
            c.seek(p1, 100);
            c.pause(List.of(p1));
            List<ConsumerRecord<String, String>> got = Kafka.pollAtLeast(c, 10);
            assertEquals(10, got.size());
            assertTrue(got.stream().allMatch(r -> r.partition() == 0 && r.offset() >= 90));
            c.commitSync(Map.of(p0, new OffsetAndMetadata(100, "done-0")));
            c.resume(List.of(p1));
            c.seek(p1, 95);
            got = Kafka.pollAtLeast(c, 5);
            assertEquals(5, got.size());
            assertTrue(got.stream().allMatch(r -> r.partition() == 1 && r.offset() >= 95));

            CountDownLatch committed = new CountDownLatch(1);
            AtomicReference<Exception> failure = new AtomicReference<>();
            c.commitAsync(Map.of(p1, new OffsetAndMetadata(100)), (offsets, e) -> {
                failure.set(e);
                committed.countDown();
            });
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (committed.getCount() > 0 && System.nanoTime() < deadline) {
                c.poll(Duration.ofMillis(100));
            }
            assertTrue(committed.await(1, TimeUnit.SECONDS));
            assertEquals(null, failure.get());

            Map<TopicPartition, OffsetAndMetadata> stored = c.committed(Set.of(p0, p1));
            assertEquals(100, stored.get(p0).offset());
            assertEquals("done-0", stored.get(p0).metadata());
            assertEquals(100, stored.get(p1).offset());
        }
        assertNotNull(revoked.get(), "the listener saw the revocation at close");
    }
}
