// A stateful Kafka Streams application for the tests (tests/clients/test_streams.py),
// run as a single source file with Kafka's classpath:
//
//   tests/kafka/kafka.sh java tests/streams/StreamsApp.java BOOTSTRAP APP_ID STATE_DIR [GUARANTEE [SUFFIX]]
//
// (SUFFIX, appended to every topic name below, lets two runs share a broker.)
//
// Topology, each part reading `sentences` (key: user id, value: "<id> <word> <word>...",
// timestamps set by the producer) and `users` (key: user id, value: region):
//
//   word counts   words re-keyed by word (a repartition topic) and counted into the
//                 KTable store `word-counts` (a compacted changelog) -> `word-counts`
//   windowed      the same words counted per 60 s tumbling window -> `windowed-counts`,
//                 keyed "<word>@<window start ms>"
//   join          each sentence joined with its user's region (a KTable over `users`)
//                 -> `enriched`, keyed by sentence id, value the region
//
// It runs with processing.guarantee GUARANTEE (at_least_once unless given, e.g.
// exactly_once_v2) until SIGTERM, when it closes (committing) and exits 0; it prints
// RUNNING once the instance is running.

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;

public class StreamsApp {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[2]);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                args.length > 3 ? args[3] : StreamsConfig.AT_LEAST_ONCE);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        // Wait for data on both sides of the join before processing (KIP-695: a caught-up
        // partition does not hold the task back).
        props.put(StreamsConfig.MAX_TASK_IDLE_MS_CONFIG, 2000);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 2);

        String sfx = args.length > 4 ? args[4] : "";
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> sentences =
                builder.stream("sentences" + sfx, Consumed.with(Serdes.String(), Serdes.String()));
        KTable<String, String> users =
                builder.table("users" + sfx, Consumed.with(Serdes.String(), Serdes.String()));

        KStream<String, String> words = sentences.flatMap((user, sentence) -> {
            String[] parts = sentence.split(" ");
            return Arrays.stream(parts, 1, parts.length).map(w -> KeyValue.pair(w, w)).toList();
        });
        words.groupByKey(Grouped.as("by-word"))
                .count(Materialized.as("word-counts"))
                .toStream()
                .mapValues(Object::toString)
                .to("word-counts" + sfx, Produced.with(Serdes.String(), Serdes.String()));
        words.groupByKey(Grouped.as("by-word-windowed"))
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(60), Duration.ofDays(1)))
                .count(Materialized.as("windowed-word-counts"))
                .toStream()
                .map((w, n) -> KeyValue.pair(w.key() + "@" + w.window().start(), n.toString()))
                .to("windowed-counts" + sfx, Produced.with(Serdes.String(), Serdes.String()));
        sentences.join(users, (sentence, region) -> sentence.split(" ", 2)[0] + " " + region)
                .map((user, idAndRegion) -> {
                    String[] parts = idAndRegion.split(" ");
                    return KeyValue.pair(parts[0], parts[1]);
                })
                .to("enriched" + sfx, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                System.out.println("RUNNING");
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(60));
            done.countDown();
        }));
        streams.start();
        done.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }
}
