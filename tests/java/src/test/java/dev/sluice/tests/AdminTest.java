package dev.sluice.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.PartitionReassignment;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.NoReassignmentInProgressException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.junit.jupiter.api.Test;

/**
 * AdminClient: topics, partitions, configs, cluster, groups and offsets, records, log dirs,
 * reassignments and leader elections.
 */
class AdminTest {

    @Test
    void topicsPartitionsAndConfigs() throws Exception {
        String topic = Kafka.unique("java-admin");
        try (Admin a = Kafka.admin()) {
            a.createTopics(List.of(new NewTopic(topic, 3, (short) 1)
                    .configs(Map.of("retention.ms", "3600000")))).all().get();
            ExecutionException dup = assertThrows(ExecutionException.class, () -> a.createTopics(
                    List.of(new NewTopic(topic, 1, (short) 1))).all().get());
            assertInstanceOf(TopicExistsException.class, dup.getCause());
            assertTrue(a.listTopics().names().get().contains(topic));
            TopicDescription d = a.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            assertEquals(3, d.partitions().size());
            assertTrue(d.partitions().stream().allMatch(p -> p.leader() != null));

            a.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all().get();
            waitFor(() -> describe(a, topic).partitions().size() == 5);

            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            a.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"),
                            AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""),
                            AlterConfigOp.OpType.DELETE)))).all().get();
            a.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"),
                            AlterConfigOp.OpType.APPEND)))).all().get();
            // Two operations on one key in one request: Kafka's INVALID_REQUEST.
            ExecutionException twice = assertThrows(ExecutionException.class, () ->
                    a.incrementalAlterConfigs(Map.of(res, List.of(
                            new AlterConfigOp(new ConfigEntry("retention.ms", "1000"),
                                    AlterConfigOp.OpType.SET),
                            new AlterConfigOp(new ConfigEntry("retention.ms", "2000"),
                                    AlterConfigOp.OpType.SET)))).all().get());
            assertInstanceOf(org.apache.kafka.common.errors.InvalidRequestException.class,
                    twice.getCause());
            // On a cluster another broker may answer before it learned of the change (as
            // in Kafka, brokers learn of it within moments): read until one answer has it.
            Config[] seen = new Config[1];
            waitFor(() -> {
                seen[0] = config(a, res);
                return seen[0].get("cleanup.policy").value().equals("compact,delete");
            });
            Config c = seen[0];
            assertEquals("compact,delete", c.get("cleanup.policy").value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    c.get("cleanup.policy").source());
            assertEquals("604800000", c.get("retention.ms").value());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("retention.ms").source());

            a.deleteTopics(List.of(topic)).all().get();
            waitFor(() -> !names(a).contains(topic));
        }
    }

    @Test
    void describeClusterAndBrokerConfigs() throws Exception {
        try (Admin a = Kafka.admin()) {
            DescribeClusterResult cluster = a.describeCluster();
            Collection<Node> nodes = cluster.nodes().get();
            assertFalse(nodes.isEmpty());
            assertTrue(cluster.clusterId().get() != null);
            Node controller = cluster.controller().get();
            assertTrue(controller != null && controller.id() >= 0);

            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER,
                    Integer.toString(nodes.iterator().next().id()));
            Config c = a.describeConfigs(List.of(broker)).all().get().get(broker);
            assertEquals("1048588", c.get("message.max.bytes").value());

            ConfigResource all = new ConfigResource(ConfigResource.Type.BROKER, "");
            a.incrementalAlterConfigs(Map.of(all, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", "86400000"),
                    AlterConfigOp.OpType.SET)))).all().get();
            try {
                String topic = Kafka.unique("java-broker-default");
                Kafka.createTopic(topic, 1, Map.of());
                ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
                waitFor(() -> {
                    ConfigEntry e = config(a, res).get("retention.ms");
                    return e.value().equals("86400000")
                            && e.source() == ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG;
                });
            } finally {
                a.incrementalAlterConfigs(Map.of(all, List.of(new AlterConfigOp(
                        new ConfigEntry("log.retention.ms", ""),
                        AlterConfigOp.OpType.DELETE)))).all().get();
            }
        }
    }

    @Test
    void groupsAndTheirOffsets() throws Exception {
        String topic = Kafka.unique("java-admin-groups");
        String group = Kafka.unique("java-admin-g");
        Kafka.createTopic(topic, 2, Map.of());
        ConsumerTest.produce(topic, 2, 10, System.currentTimeMillis());
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (Admin a = Kafka.admin()) {
            try (KafkaConsumer<String, String> c = Kafka.consumer(group, Map.of(
                    org.apache.kafka.clients.consumer.ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG,
                    false))) {
                c.subscribe(List.of(topic));
                assertTrue(Kafka.pollUntil(List.of(c), () -> c.assignment().size() == 2));
                c.commitSync(Map.of(p0, new OffsetAndMetadata(5), p1, new OffsetAndMetadata(7)));

                ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group))
                        .describedGroups().get(group).get();
                assertEquals(1, d.members().size());
                assertEquals(Set.of(p0, p1), d.members().iterator().next().assignment()
                        .topicPartitions());
                // Kafka refuses offset changes and deletion while the group has members.
                ExecutionException busy = assertThrows(ExecutionException.class, () ->
                        a.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(1)))
                                .all().get());
                assertInstanceOf(UnknownMemberIdException.class, busy.getCause());
                ExecutionException notEmpty = assertThrows(ExecutionException.class, () ->
                        a.deleteConsumerGroups(List.of(group)).all().get());
                assertInstanceOf(GroupNotEmptyException.class, notEmpty.getCause());
            }
            waitFor(() -> listed(a).contains(group));
            Map<TopicPartition, OffsetAndMetadata> offsets =
                    a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            assertEquals(5, offsets.get(p0).offset());
            assertEquals(7, offsets.get(p1).offset());

            a.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(2))).all().get();
            a.deleteConsumerGroupOffsets(group, Set.of(p1)).all().get();
            offsets = a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            assertEquals(2, offsets.get(p0).offset());
            assertTrue(offsets.get(p1) == null, "p1's offset was deleted: " + offsets);

            a.deleteConsumerGroups(List.of(group)).all().get();
            waitFor(() -> !listed(a).contains(group));
            ExecutionException gone = assertThrows(ExecutionException.class, () ->
                    a.deleteConsumerGroups(List.of(group)).all().get());
            assertInstanceOf(GroupIdNotFoundException.class, gone.getCause());
        }
    }

    @Test
    void listOffsetsAndDeleteRecords() throws Exception {
        String topic = Kafka.unique("java-admin-offsets");
        Kafka.createTopic(topic, 1, Map.of());
        TopicPartition p = new TopicPartition(topic, 0);
        long baseTs = 1_700_000_000_000L;
        try (KafkaProducer<String, String> prod = Kafka.producer(Map.of())) {
            for (int i = 0; i < 10; i++) {
                // The largest timestamp is at offset 6.
                long ts = i == 6 ? baseTs + 1_000 : baseTs + i;
                prod.send(new ProducerRecord<>(topic, 0, ts, "k", "v" + i));
            }
            prod.flush();
        }
        try (Admin a = Kafka.admin()) {
            assertEquals(0, offset(a, p, OffsetSpec.earliest()).offset());
            assertEquals(10, offset(a, p, OffsetSpec.latest()).offset());
            ListOffsetsResultInfo max = offset(a, p, OffsetSpec.maxTimestamp());
            assertEquals(6, max.offset());
            assertEquals(baseTs + 1_000, max.timestamp());
            assertEquals(3, offset(a, p, OffsetSpec.forTimestamp(baseTs + 3)).offset());

            long low = a.deleteRecords(Map.of(p, RecordsToDelete.beforeOffset(4)))
                    .lowWatermarks().get(p).get().lowWatermark();
            assertEquals(4, low);
            assertEquals(4, offset(a, p, OffsetSpec.earliest()).offset());
        }
    }

    @Test
    void logDirsReassignmentsAndElections() throws Exception {
        String topic = Kafka.unique("java-admin-placement");
        Kafka.createTopic(topic, 2, Map.of());
        try (KafkaProducer<String, String> prod = Kafka.producer(Map.of())) {
            for (int i = 0; i < 50; i++) {
                prod.send(new ProducerRecord<>(topic, i % 2, "k", "value-" + i));
            }
            prod.flush();
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        try (Admin a = Kafka.admin()) {
            List<Integer> ids = a.describeCluster().nodes().get().stream().map(Node::id).sorted()
                    .toList();
            // Each partition is in the log dir of the broker that leads it, with its bytes.
            waitFor(() -> {
                Map<Integer, Map<String, LogDirDescription>> dirs = logDirs(a, ids);
                long total = 0;
                int found = 0;
                for (Map<String, LogDirDescription> byDir : dirs.values()) {
                    for (LogDirDescription d : byDir.values()) {
                        for (Map.Entry<TopicPartition, ReplicaInfo> e : d.replicaInfos().entrySet()) {
                            if (e.getKey().topic().equals(topic)) {
                                found++;
                                total += e.getValue().size();
                            }
                        }
                    }
                }
                return found == 2 && total > 50 * 7;
            });

            int leader = describe(a, topic).partitions().get(0).leader().id();
            int target = ids.stream().filter(i -> i != leader).findFirst().orElse(leader);
            a.alterPartitionReassignments(Map.of(p0, Optional.of(
                    new NewPartitionReassignment(List.of(target))))).all().get();
            waitFor(() -> describe(a, topic).partitions().get(0).leader().id() == target);
            waitFor(() -> listReassignments(a).isEmpty());
            ExecutionException unknown = assertThrows(ExecutionException.class, () ->
                    a.alterPartitionReassignments(Map.of(p0, Optional.of(
                            new NewPartitionReassignment(List.of(target, target + 100))))).all().get());
            assertInstanceOf(InvalidReplicaAssignmentException.class, unknown.getCause());
            if (ids.size() > 1) {
                // A Sluice partition has one replica: two brokers are refused.
                ExecutionException two = assertThrows(ExecutionException.class, () ->
                        a.alterPartitionReassignments(Map.of(p0, Optional.of(
                                new NewPartitionReassignment(ids.subList(0, 2))))).all().get());
                assertInstanceOf(InvalidReplicationFactorException.class, two.getCause());
            }
            ExecutionException cancel = assertThrows(ExecutionException.class, () ->
                    a.alterPartitionReassignments(Map.of(p0, Optional.empty())).all().get());
            assertInstanceOf(NoReassignmentInProgressException.class, cancel.getCause());

            // The one replica is the preferred one: nothing to elect.
            Optional<Throwable> elected = a.electLeaders(ElectionType.PREFERRED, Set.of(p0))
                    .partitions().get().get(p0);
            assertInstanceOf(ElectionNotNeededException.class, elected.orElseThrow());
            assertTrue(a.electLeaders(ElectionType.PREFERRED, null).partitions().get().isEmpty());
        }
    }

    private static Map<Integer, Map<String, LogDirDescription>> logDirs(Admin a, List<Integer> ids) {
        try {
            return a.describeLogDirs(ids).allDescriptions().get();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static Map<TopicPartition, PartitionReassignment> listReassignments(Admin a) {
        try {
            return a.listPartitionReassignments().reassignments().get();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static ListOffsetsResultInfo offset(Admin a, TopicPartition p, OffsetSpec spec)
            throws Exception {
        return a.listOffsets(Map.of(p, spec)).partitionResult(p).get();
    }

    private static TopicDescription describe(Admin a, String topic) {
        try {
            return a.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static Set<String> names(Admin a) {
        try {
            return a.listTopics().names().get();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static Set<String> listed(Admin a) {
        try {
            return a.listGroups().all().get().stream().map(GroupListing::groupId)
                    .collect(java.util.stream.Collectors.toSet());
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static Config config(Admin a, ConfigResource res) {
        try {
            return a.describeConfigs(List.of(res)).all().get().get(res);
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    /** Waits up to 15 s: on a cluster another broker may answer before it learned. */
    private static void waitFor(java.util.function.BooleanSupplier done) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("condition not met within 15 s");
            }
            Thread.sleep(100);
        }
    }
}
