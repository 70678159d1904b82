package dev.sluice.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

/** The Java producer with its defaults (acks=all, idempotence on). */
class ProducerTest {

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCodecKeepsOrderHeadersAndTimestamps(String codec) throws Exception {
        String topic = Kafka.unique("java-produce-" + codec);
        Kafka.createTopic(topic, 1, Map.of());
        int n = 2000;
        long baseTs = 1_700_000_000_000L;
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.LINGER_MS_CONFIG, 5))) {
            for (int i = 0; i < n; i++) {
                RecordHeaders h = new RecordHeaders();
                h.add("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                h.add("codec", codec.getBytes(StandardCharsets.UTF_8));
                sent.add(p.send(new ProducerRecord<>(topic, 0, baseTs + i, "k" + i, "v" + i, h)));
            }
            p.flush();
        }
        for (int i = 0; i < n; i++) {
            assertEquals(i, sent.get(i).get().offset(), "dense offsets in send order");
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(null, Map.of())) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            c.seekToBeginning(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<String, String>> got = Kafka.pollAtLeast(c, n);
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                ConsumerRecord<String, String> r = got.get(i);
                assertEquals(i, r.offset());
                assertEquals("k" + i, r.key());
                assertEquals("v" + i, r.value());
                assertEquals(baseTs + i, r.timestamp());
                assertArrayEquals(Integer.toString(i).getBytes(StandardCharsets.UTF_8),
                        r.headers().lastHeader("i").value());
                assertArrayEquals(codec.getBytes(StandardCharsets.UTF_8),
                        r.headers().lastHeader("codec").value());
            }
        }
    }

    @Test
    void recordsNearTheLimitPassAndLargerOnesAreRefused() throws Exception {
        String topic = Kafka.unique("java-large");
        Kafka.createTopic(topic, 1, Map.of("max.message.bytes", "1048588"));
        String near = "x".repeat(1_000_000);
        String over = "y".repeat(1_100_000);
        try (KafkaProducer<String, String> p = Kafka.producer(Map.of(
                ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 4_000_000,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "none"))) {
            RecordMetadata ok = p.send(new ProducerRecord<>(topic, 0, "near", near)).get();
            assertEquals(0, ok.offset());
            ExecutionException refused = assertThrows(ExecutionException.class,
                    () -> p.send(new ProducerRecord<>(topic, 0, "over", over)).get());
            assertInstanceOf(RecordTooLargeException.class, refused.getCause());
            assertEquals(1, p.send(new ProducerRecord<>(topic, 0, "after", "small")).get().offset());
        }
        try (KafkaConsumer<String, String> c = Kafka.consumer(null, Map.of())) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            c.seekToBeginning(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<String, String>> got = Kafka.pollAtLeast(c, 2);
            assertEquals(List.of("near", "after"), got.stream().map(ConsumerRecord::key).toList());
            assertEquals(near, got.get(0).value());
        }
    }
}
