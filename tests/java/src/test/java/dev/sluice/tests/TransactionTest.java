package dev.sluice.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.junit.jupiter.api.Test;

/** The Java transactional producer (RFC 0010): consume-transform-produce with offsets
 * committed in the transaction, read_committed consumers, and fencing by a newer
 * producer with the same transactional id. */
class TransactionTest {

    private static KafkaProducer<String, String> transactional(String id) {
        KafkaProducer<String, String> p = Kafka.producer(Map.of(
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, id,
                ProducerConfig.LINGER_MS_CONFIG, 5));
        p.initTransactions();
        return p;
    }

    private static List<String> readCommitted(String topic, int partitions, int expected) {
        try (KafkaConsumer<String, String> c = Kafka.consumer(null, Map.of(
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            List<String> out = new ArrayList<>();
            long idleSince = System.nanoTime();
            while (System.nanoTime() - idleSince < Duration.ofSeconds(3).toNanos()) {
                ConsumerRecords<String, String> got = c.poll(Duration.ofMillis(200));
                got.forEach(r -> out.add(r.value()));
                if (!got.isEmpty()) {
                    idleSince = System.nanoTime();
                }
                if (out.size() > expected) {
                    break;
                }
            }
            return out;
        }
    }

    @Test
    void consumeTransformProduceIsExactlyOnce() throws Exception {
        String source = Kafka.unique("java-txn-in");
        String sink = Kafka.unique("java-txn-out");
        String group = Kafka.unique("java-txn-group");
        Kafka.createTopic(source, 2, Map.of());
        Kafka.createTopic(sink, 2, Map.of());
        int n = 400;
        try (KafkaProducer<String, String> plain = Kafka.producer(Map.of())) {
            for (int i = 0; i < n; i++) {
                plain.send(new ProducerRecord<>(source, i % 2, "k" + i, Integer.toString(i)));
            }
            plain.flush();
        }
        int processed = 0;
        int round = 0;
        try (KafkaProducer<String, String> p = transactional(Kafka.unique("java-txn"));
             KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of(
                     ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                     ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
                     ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50))) {
            c.subscribe(List.of(source));
            long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
            while (processed < n && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(500));
                if (records.isEmpty()) {
                    continue;
                }
                p.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> next = new java.util.HashMap<>();
                for (ConsumerRecord<String, String> r : records) {
                    p.send(new ProducerRecord<>(sink, r.partition(), r.key(), r.value() + "!"));
                    next.put(new TopicPartition(r.topic(), r.partition()),
                            new OffsetAndMetadata(r.offset() + 1));
                }
                p.sendOffsetsToTransaction(next, c.groupMetadata());
                if (round++ == 2) {
                    // Aborted: its output vanishes and its input is read again.
                    p.abortTransaction();
                    for (TopicPartition tp : records.partitions()) {
                        c.seek(tp, records.records(tp).get(0).offset());
                    }
                } else {
                    p.commitTransaction();
                    processed += records.count();
                }
            }
        }
        assertEquals(n, processed);
        List<String> out = readCommitted(sink, 2, n);
        assertEquals(n, out.size(), "every input once in the committed output");
        assertEquals(n, out.stream().distinct().count(), "no duplicates");
        try (KafkaConsumer<String, String> check = Kafka.consumer(group, Map.of())) {
            Map<TopicPartition, OffsetAndMetadata> committed = check.committed(
                    java.util.Set.of(new TopicPartition(source, 0), new TopicPartition(source, 1)));
            long total = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            assertEquals(n, total, "input offsets committed with the output");
        }
    }

    @Test
    void aNewProducerFencesTheOldOne() throws Exception {
        String topic = Kafka.unique("java-fence");
        String id = Kafka.unique("java-fence-txn");
        Kafka.createTopic(topic, 1, Map.of());
        KafkaProducer<String, String> old = transactional(id);
        old.beginTransaction();
        old.send(new ProducerRecord<>(topic, 0, "k", "zombie")).get();
        try (KafkaProducer<String, String> fresh = transactional(id)) {
            fresh.beginTransaction();
            fresh.send(new ProducerRecord<>(topic, 0, "k", "fresh"));
            fresh.commitTransaction();
        }
        KafkaException e = assertThrows(KafkaException.class, () -> {
            old.send(new ProducerRecord<>(topic, 0, "k", "late"));
            old.commitTransaction();
        });
        // The zombie's send reaches the partition, whose leader knows the newer epoch
        // from the abort marker: INVALID_PRODUCER_EPOCH, as Kafka's leader answers;
        // its coordinator would answer PRODUCER_FENCED. Either way it is fenced.
        Throwable cause = e;
        while (cause != null && !(cause instanceof ProducerFencedException
                || cause instanceof InvalidProducerEpochException)) {
            cause = cause.getCause();
        }
        assertTrue(cause != null, e.toString());
        old.close(Duration.ZERO);
        assertEquals(List.of("fresh"), readCommitted(topic, 1, 1));
    }
}
