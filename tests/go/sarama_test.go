// IBM/sarama against the brokers named by SLUICE_BOOTSTRAP: an admin creates a topic,
// an idempotent producer writes keyed records with acks=all, a consumer group of two
// members reads every record once in partition order and commits, and the committed
// offsets (auto-commit, and the final commit as the members leave) read back
// through the admin are the partitions' ends.
package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func bootstrap(t *testing.T) []string {
	b := os.Getenv("SLUICE_BOOTSTRAP")
	if b == "" {
		t.Fatal("SLUICE_BOOTSTRAP names the brokers under test")
	}
	return strings.Split(b, ",")
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V4_0_0_0
	c.ClientID = "sluice-sarama-test"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Net.MaxOpenRequests = 1
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	return c
}

// member is the handler both group members share.
type member struct {
	mu       sync.Mutex
	seen     map[int32][]int64 // offsets per partition, in the order delivered
	sessions map[string]session
	n        int64
	all      int64
	done     chan struct{}
}

type session struct {
	generation int32
	claims     int
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	claims := 0
	for _, ps := range s.Claims() {
		claims += len(ps)
	}
	m.sessions[s.MemberID()] = session{s.GenerationID(), claims}
	return nil
}

// stable: two members in one generation own every partition between them.
func (m *member) stable(partitions int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	byGeneration := map[int32][2]int{}
	for _, s := range m.sessions {
		g := byGeneration[s.generation]
		byGeneration[s.generation] = [2]int{g[0] + 1, g[1] + s.claims}
	}
	for _, g := range byGeneration {
		if g[0] == 2 && g[1] == partitions {
			return true
		}
	}
	return false
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		m.mu.Lock()
		m.seen[msg.Partition] = append(m.seen[msg.Partition], msg.Offset)
		m.n++
		if m.n == m.all {
			close(m.done)
		}
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func TestSaramaProduceConsumeGroup(t *testing.T) {
	start := time.Now()
	brokers := bootstrap(t)
	cfg := saramaConfig()
	topic := fmt.Sprintf("sarama-%d", time.Now().UnixNano())
	group := topic + "-group"

	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("creating it again: %v, want TOPIC_ALREADY_EXISTS", err)
	}

	// The group forms first (two members, every partition owned), so that no
	// rebalance falls between a record's delivery and its commit.
	const records = 300
	m := &member{seen: map[int32][]int64{}, sessions: map[string]session{}, all: records,
		done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		g, err := sarama.NewConsumerGroup(brokers, group, cfg)
		if err != nil {
			t.Fatalf("group member %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer g.Close()
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{topic}, m); err != nil && ctx.Err() == nil {
					t.Logf("consume: %v", err)
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	for deadline := time.Now().Add(60 * time.Second); !m.stable(3); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the group of two did not form in 60 s: %v", m.sessions)
		}
	}
	t.Logf("group formed after %v", time.Since(start))

	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	ends := map[int32]int64{}
	for i := 0; i < records; i++ {
		p, off, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic:   topic,
			Key:     sarama.StringEncoder(fmt.Sprintf("key-%d", i%17)),
			Value:   sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
			Headers: []sarama.RecordHeader{{Key: []byte("i"), Value: []byte(fmt.Sprint(i))}},
		})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if off+1 > ends[p] {
			ends[p] = off + 1
		}
	}
	producer.Close()
	t.Logf("produced after %v", time.Since(start))

	select {
	case <-m.done:
	case <-time.After(90 * time.Second):
		m.mu.Lock()
		defer m.mu.Unlock()
		t.Fatalf("consumed %d of %d records in 90 s", m.n, records)
	}
	t.Logf("consumed after %v", time.Since(start))
	cancel()
	wg.Wait()
	t.Logf("members closed after %v", time.Since(start))

	// Every offset of every partition once, in order.
	total := 0
	for p, offs := range m.seen {
		for i, o := range offs {
			if o != int64(i) {
				t.Fatalf("partition %d: delivered offsets %v, want 0..%d in order", p, offs, ends[p]-1)
			}
		}
		if int64(len(offs)) != ends[p] {
			t.Fatalf("partition %d: %d records, want %d", p, len(offs), ends[p])
		}
		total += len(offs)
	}
	if total != records {
		t.Fatalf("consumed %d records, want %d", total, records)
	}

	committed, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	if err != nil {
		t.Fatalf("list group offsets: %v", err)
	}
	for p := int32(0); p < 3; p++ {
		b := committed.GetBlock(topic, p)
		if b == nil || b.Offset != ends[p] {
			t.Fatalf("partition %d committed %+v, want %d", p, b, ends[p])
		}
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		t.Fatalf("list groups: %v", err)
	}
	if _, ok := groups[group]; !ok {
		t.Fatalf("group %s not listed in %v", group, groups)
	}
	if err := admin.DeleteConsumerGroup(group); err != nil {
		t.Fatalf("delete group: %v", err)
	}
	if err := admin.DeleteTopic(topic); err != nil {
		t.Fatalf("delete topic: %v", err)
	}
}
