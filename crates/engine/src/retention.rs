//! Log start offsets and deleting old data: DeleteRecords, `retention.ms` and
//! `retention.bytes` advance a partition's log start offset; the janitor
//! ([`crate::janitor`]) then deletes the manifests (and, a round later, the objects)
//! that hold nothing at or above any log start offset.
//!
//! `log_start/<topic-id>/<partition>` holds the offset, written by the partition's
//! leader with its generation compared, so a deposed leader cannot move it. A leader
//! that gains the partition reads it during the rebuild.
//!
//! Invariants:
//! - The log start offset only grows and never passes the high watermark.

use std::sync::Arc;
use std::time::Duration;

use sluice_meta::{Compare, Op, Txn};

use crate::keyspace::Stored;
use crate::partition::Partition;
use crate::{Engine, EngineError, Result};

impl Engine {
    /// Moves the partition's log start offset up to `offset` (DeleteRecords;
    /// retention). Returns the log start offset now in force.
    pub async fn advance_log_start(&self, partition: &Partition, offset: i64) -> Result<i64> {
        partition.ensure_leader()?;
        let _serial = self.log_start_lock.lock().await;
        let (current, hwm) = {
            let read = partition.read();
            (read.log_start_offset, read.high_watermark)
        };
        if offset > hwm || offset < 0 {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: current,
                high_watermark: hwm,
            });
        }
        if offset <= current {
            return Ok(current);
        }
        // A compactor on another broker may have moved the checkpoint: adopt it and
        // try again (a few times; it moves at most once per compaction round).
        for _ in 0..3 {
            let key = self.keys.log_start(partition.topic_id, partition.index);
            let mut ops = vec![Op::put(key, offset.encode())];
            let mut compares = vec![self.fence().still_leader()];
            // Folded files wholly below the new log start leave the checkpoint (the
            // janitor deletes them once unreferenced for the grace period).
            let (mut checkpoint, rev) = {
                let read = partition.read();
                (read.checkpoint.clone(), read.checkpoint_rev)
            };
            let files = checkpoint.files.len();
            checkpoint.files.retain(|f| f.last_offset >= offset);
            let rewrites_checkpoint = checkpoint.files.len() != files;
            let checkpoint_key = self.keys.checkpoint(partition.topic_id, partition.index);
            if rewrites_checkpoint {
                compares.push(Compare::ModRevision(checkpoint_key.clone(), rev));
                ops.push(Op::put(checkpoint_key.clone(), checkpoint.encode()));
            }
            let result = self.meta.txn(Txn::when(compares).then(ops)).await?;
            if !result.succeeded {
                match self.meta.get(&checkpoint_key).await? {
                    Some(kv) if rewrites_checkpoint && kv.mod_revision != rev => {
                        self.adopt(partition, &kv)?;
                        continue;
                    }
                    _ => {
                        return Err(EngineError::NotLeader {
                            epoch: self.generation(),
                        })
                    }
                }
            }
            let mut read = partition.read_mut();
            read.truncate_before(offset, &self.tail);
            if rewrites_checkpoint {
                read.checkpoint = checkpoint;
                read.checkpoint_rev = result.revision;
            }
            drop(read);
            self.metrics
                .log_start_moves
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                topic = %partition.topic, partition = partition.index, log_start = offset,
                "log start offset advanced"
            );
            return Ok(offset);
        }
        Err(EngineError::NotLeader {
            epoch: self.generation(),
        })
    }

    /// Applies `retention.ms` and `retention.bytes` to every partition this broker
    /// leads, at index-entry granularity (as Kafka deletes whole segments).
    pub async fn enforce_retention(&self) {
        let now_ms = self.cfg.clock.now_ms();
        for topic in self.topics() {
            if !topic.record.has_cleanup_policy("delete") {
                continue;
            }
            let setting = |name: &str| topic.record.config_number::<i64>(name).filter(|v| *v >= 0);
            let (by_time, by_bytes) = (setting("retention.ms"), setting("retention.bytes"));
            if by_time.is_none() && by_bytes.is_none() {
                continue;
            }
            let segment = ActiveSegment::of(&topic.record, now_ms);
            for p in topic
                .partitions
                .iter()
                .filter(|p| p.leader_epoch().is_some())
            {
                let target = {
                    let read = p.read();
                    let limits = Limits {
                        by_time,
                        by_bytes,
                        segment,
                    };
                    retention_start(&read.index, read.high_watermark, now_ms, limits)
                };
                if target > p.read().log_start_offset {
                    if let Err(e) = self.advance_log_start(p, target).await {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                            "cannot apply retention");
                    }
                }
            }
        }
    }

    /// Runs retention on led partitions and expires idle producers every `interval`,
    /// until the engine is dropped. (The janitor, [`crate::janitor`], is a controller
    /// duty: `sluice-control` runs it.)
    pub fn start_retention(self: &Arc<Self>, interval: Duration) {
        self.every(interval, (), |engine, _| {
            Box::pin(async move {
                engine.enforce_retention().await;
                engine.expire_producers();
            })
        });
    }
}

/// A partition's active segment, which retention and log compaction leave alone as
/// Kafka leaves its own: the longest suffix of entries within `bytes`
/// (`segment.bytes`) whose records are all at or after `rolled_before` (the roll by
/// time: `segment.ms`, and `max.compaction.lag.ms` on a compacted topic), and at
/// least the last entry, which in Kafka rolls only when the next record comes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveSegment {
    pub bytes: i64,
    pub rolled_before: i64,
}

impl ActiveSegment {
    /// The topic's active segment at `now_ms`.
    pub fn of(topic: &crate::TopicRecord, now_ms: i64) -> Self {
        // The roll by time applies only where the topic sets `segment.ms` (or,
        // compacted, `max.compaction.lag.ms`): it goes by record timestamps, and with
        // the 7-day default a producer writing older timestamps would see retention
        // take all but its newest entry at once.
        let set = |name: &str| {
            topic
                .configs
                .get(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        let mut roll_ms = set("segment.ms").unwrap_or(i64::MAX);
        if topic.has_cleanup_policy("compact") {
            if let Some(max_lag) = set("max.compaction.lag.ms") {
                roll_ms = roll_ms.min(max_lag);
            }
        }
        Self {
            bytes: topic.config_number("segment.bytes").unwrap_or(1 << 30),
            rolled_before: now_ms.saturating_sub(roll_ms),
        }
    }

    /// Where it begins in `index`.
    pub fn start(&self, index: &[crate::partition::IndexEntry]) -> usize {
        let mut active = index.len().saturating_sub(1);
        let mut size = index.last().map_or(0, |e| e.len as i64);
        while active > 0
            && size + index[active - 1].len as i64 <= self.bytes
            && index[active - 1].max_timestamp >= self.rolled_before
        {
            active -= 1;
            size += index[active].len as i64;
        }
        active
    }
}

/// A topic's retention settings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// `retention.ms`, if not unlimited.
    by_time: Option<i64>,
    /// `retention.bytes`, if not unlimited.
    by_bytes: Option<i64>,
    /// What is never deleted.
    segment: ActiveSegment,
}

/// Where retention puts the log start: the first entry young enough and within the
/// size limit. As in Kafka, which never deletes a partition's active segment, that
/// (at least the last entry) is always kept.
fn retention_start(
    index: &[crate::partition::IndexEntry],
    high_watermark: i64,
    now_ms: i64,
    limits: Limits,
) -> i64 {
    let Limits {
        by_time,
        by_bytes,
        segment,
    } = limits;
    // By time: from the first entry holding a record newer than the cutoff.
    let mut keep_from = match by_time {
        Some(ms) => {
            let cutoff = now_ms.saturating_sub(ms);
            index
                .iter()
                .position(|e| e.max_timestamp >= cutoff)
                .unwrap_or(index.len())
        }
        None => 0,
    };
    // By size: drop the oldest entries while the rest still exceeds the limit.
    if let Some(limit) = by_bytes {
        let mut total: i64 = index[keep_from..].iter().map(|e| e.len as i64).sum();
        while keep_from < index.len() && total > limit {
            total -= index[keep_from].len as i64;
            keep_from += 1;
        }
    }
    let active = segment.start(index);
    index
        .get(keep_from.min(active))
        .map_or(high_watermark, |e| e.base_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::IndexEntry;

    fn entry(base: i64, last: i64, ts: i64, len: u64) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            last_offset: last,
            max_timestamp: ts,
            object: Arc::new(object_store::path::Path::from("o")),
            object_len: 100,
            start: 0,
            len,
            cached: None,
            format: crate::partition::Format::Batches,
        }
    }

    fn limits(by_time: Option<i64>, by_bytes: Option<i64>, segment: i64) -> Limits {
        Limits {
            by_time,
            by_bytes,
            segment: ActiveSegment {
                bytes: segment,
                rolled_before: i64::MIN,
            },
        }
    }

    /// `segment.ms` (and, when compacted, `max.compaction.lag.ms`) roll the active
    /// segment by time: entries older than that leave it, but the last stays.
    #[test]
    fn the_active_segment_rolls_by_time() {
        let index = [
            entry(0, 9, 1_000, 100),
            entry(10, 19, 2_000, 100),
            entry(20, 29, 3_000, 100),
        ];
        let start = |rolled_before| {
            ActiveSegment {
                bytes: 1 << 30,
                rolled_before,
            }
            .start(&index)
        };
        assert_eq!(start(i64::MIN), 0);
        assert_eq!(start(1_500), 1);
        assert_eq!(start(10_000), 2, "the last entry stays active");
    }

    #[test]
    fn retention_keeps_young_entries_within_the_size_limit() {
        let index = vec![
            entry(0, 9, 1_000, 100),
            entry(10, 19, 2_000, 100),
            entry(20, 29, 3_000, 100),
        ];
        let start = |t, b| retention_start(&index, 30, 10_000, limits(t, b, 100));
        // Nothing set: keep everything.
        assert_eq!(start(None, None), 0);
        // Older than 7.5 s at t=10 s: the first two go.
        assert_eq!(start(Some(7_500), None), 20);
        // Everything expired: the active segment (the last entry) stays.
        assert_eq!(start(Some(1_000), None), 20);
        // At most 150 bytes: only the last entry fits.
        assert_eq!(start(None, Some(150)), 20);
        assert_eq!(start(None, Some(300)), 0);
        // Both: the later start wins.
        assert_eq!(start(Some(8_500), Some(1_000)), 10);
        // A large active segment protects everything, as Kafka's would.
        assert_eq!(
            retention_start(&index, 30, 10_000, limits(Some(1), None, 1 << 30)),
            0
        );
        // No entries: the log start is the high watermark.
        assert_eq!(
            retention_start(&[], 30, 10_000, limits(Some(1), None, 100)),
            30
        );
    }
}
