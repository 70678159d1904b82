//! Fetch by offset and offset lookups, on [`ReadPath`].

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use sluice_protocol::{batch, records};

use super::{
    FetchedRecords, OffsetAndTimestamp, ReadPath, EARLIEST, EARLIEST_LOCAL, LATEST, MAX_TIMESTAMP,
};
use crate::error::{EngineError, Result};
use crate::partition::{Format, IndexEntry, Partition};
use crate::util::concat;

/// How many fetches' worth of a partition's next entries a fetch that reads past the
/// tail asks the cache for ahead of time. Enough to keep GETs in flight while the
/// consumer processes what it got; past that, the prefetches only queue.
const READ_AHEAD_FETCHES: u64 = 4;

/// Object reads one fetch of one partition keeps in flight.
const READ_CONCURRENCY: usize = 8;

impl ReadPath {
    /// Reads whole batches from `offset` within `max_bytes`; with `at_least_one`, the
    /// first batch comes back even if it alone is larger (Kafka allows that for the
    /// first partition with data in a response, and only for it). With `committed`
    /// (`read_committed`), nothing at or past the last stable offset, and the
    /// aborted transactions of what is returned.
    pub async fn read_up_to(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        committed: bool,
    ) -> Result<FetchedRecords> {
        let (hwm, lso, log_start, plan, ahead) = {
            let read = partition.read_led()?;
            let (hwm, log_start) = (read.high_watermark, read.log_start_offset);
            let lso = read.last_stable_offset();
            // `read_committed` reads stop at the last stable offset.
            let end = if committed { lso } else { hwm };
            if offset < log_start || offset > hwm {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start,
                    high_watermark: hwm,
                });
            }
            let mut plan = Vec::new();
            let mut ahead = Vec::new();
            if let Some(first) = read.find(offset).filter(|_| offset < end) {
                let mut planned = 0u64;
                let mut rest = read.index[first..]
                    .iter()
                    .take_while(|e| e.base_offset < end);
                for e in rest.by_ref() {
                    if planned >= max_bytes as u64 && !plan.is_empty() {
                        ahead.push(e.clone());
                        break;
                    }
                    planned += e.len;
                    plan.push(e.clone());
                }
                // Read-ahead: the next few fetches' worth of what is not in memory.
                if plan.iter().any(|e| e.cached.is_none()) {
                    let mut more = 0u64;
                    for e in rest {
                        if more >= READ_AHEAD_FETCHES * max_bytes as u64 {
                            break;
                        }
                        more += e.len;
                        ahead.push(e.clone());
                    }
                } else {
                    ahead.clear();
                }
            }
            (hwm, lso, log_start, plan, ahead)
        };
        let end = if committed { lso } else { hwm };
        for e in ahead
            .iter()
            .filter(|e| e.cached.is_none() && e.object_len > 0 && e.format == Format::Batches)
        {
            self.cache
                .prefetch(&e.object, e.start..e.start + e.len, e.object_len);
        }
        let mut parts = Vec::with_capacity(plan.len());
        let mut total = 0usize;
        // Entries not in memory are read concurrently, in order, a few at a time:
        // with many small entries a sequential read would pay one round trip each.
        let mut reads = futures::stream::iter(plan)
            .map(|entry| async move {
                let data = self
                    .entry_bytes(&entry, offset.max(entry.base_offset))
                    .await;
                (entry, data)
            })
            .buffered(READ_CONCURRENCY);
        while let Some((entry, data)) = reads.next().await {
            let data = data?;
            // The batches kept from one entry are contiguous: take them as one slice.
            let (mut kept, mut pos, mut full) = (None, 0usize, false);
            let mut reached = entry.base_offset - 1;
            for b in batch::iter_batches(&data) {
                let (h, _) = b.map_err(|e| {
                    EngineError::Storage(format!(
                        "stored batch unreadable: object={}: {e}",
                        entry.object
                    ))
                })?;
                if h.base_offset >= end {
                    full = true;
                    break;
                }
                let start = pos;
                pos += h.size;
                reached = h.last_offset();
                if h.last_offset() < offset {
                    continue;
                }
                if (total > 0 || !at_least_one) && total + h.size > max_bytes {
                    full = true;
                    break;
                }
                total += h.size;
                kept = Some((kept.map_or(start, |(from, _)| from), pos));
            }
            let kept_any = kept.is_some();
            if let Some((from, to)) = kept {
                parts.push(data.slice(from..to));
            }
            // A lake entry yields one row group at a time: the next fetch goes on
            // from where it ended. An entry that yielded nothing at or past the
            // offset (log compaction removed its last records) is passed over.
            if full || (kept_any && reached < entry.last_offset) {
                break;
            }
        }
        // One entry (the common case) is returned without copying.
        let records = concat(parts);
        let aborted = if committed && !records.is_empty() {
            partition
                .read()
                .txns
                .aborted_between(offset, reached_end(&records).unwrap_or(offset) + 1)
        } else {
            Vec::new()
        };
        Ok(FetchedRecords {
            high_watermark: hwm,
            last_stable_offset: lso,
            log_start_offset: log_start,
            records,
            aborted,
        })
    }

    /// An index entry's batches from `offset` on: from the in-memory tail, else the
    /// block cache (or, for objects of unknown length, one ranged GET). A lake entry
    /// yields the batches of the row group holding `offset`.
    pub(crate) async fn entry_bytes(&self, entry: &IndexEntry, offset: i64) -> Result<Bytes> {
        if let Some(b) = &entry.cached {
            return Ok(b.clone());
        }
        if entry.format == Format::Parquet {
            return self.lake_batches(entry, offset).await;
        }
        let range = entry.start..entry.start + entry.len;
        if entry.object_len == 0 {
            return Ok(self.store.get_range(&entry.object, range).await?);
        }
        self.cache
            .read(&entry.object, range, entry.object_len)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))
    }

    /// Kafka's ListOffsets for one partition; at `read_committed` (`committed`) the
    /// latest offset is the last stable one.
    pub async fn list_offset(
        &self,
        partition: &Partition,
        timestamp: i64,
        committed: bool,
    ) -> Result<Option<OffsetAndTimestamp>> {
        let (hwm, log_start, candidates) = {
            let read = partition.read_led()?;
            let c: Vec<IndexEntry> = match timestamp {
                LATEST | EARLIEST | EARLIEST_LOCAL => Vec::new(),
                // The first entry with the largest timestamp, as Kafka breaks ties.
                MAX_TIMESTAMP => read
                    .index
                    .iter()
                    .filter(|e| e.last_offset >= read.log_start_offset)
                    .min_by_key(|e| std::cmp::Reverse(e.max_timestamp))
                    .cloned()
                    .into_iter()
                    .collect(),
                t => read
                    .index
                    .iter()
                    .filter(|e| e.last_offset >= read.log_start_offset && e.max_timestamp >= t)
                    .take(1)
                    .cloned()
                    .collect(),
            };
            let end = if committed {
                read.last_stable_offset()
            } else {
                read.high_watermark
            };
            (end, read.log_start_offset, c)
        };
        match timestamp {
            LATEST => Ok(Some(OffsetAndTimestamp {
                offset: hwm,
                timestamp: -1,
            })),
            // The local log start (KIP-405): all of a partition's log is equally
            // local here.
            EARLIEST | EARLIEST_LOCAL => Ok(Some(OffsetAndTimestamp {
                offset: log_start,
                timestamp: -1,
            })),
            t if t < MAX_TIMESTAMP => Ok(None),
            _ => {
                let Some(entry) = candidates.first() else {
                    return Ok(None);
                };
                let data = match entry.format {
                    Format::Batches => self.entry_bytes(entry, entry.base_offset).await?,
                    Format::Parquet => self.lake_batches_by_time(entry, timestamp).await?,
                };
                find_in_batches(&data, timestamp, log_start)
            }
        }
    }
}

/// The last offset of the last batch in `records`.
fn reached_end(records: &Bytes) -> Option<i64> {
    batch::iter_batches(records)
        .filter_map(|b| b.ok())
        .last()
        .map(|(h, _)| h.last_offset())
}

/// Finds the first record at or after `target` (or the max-timestamp record).
fn find_in_batches(
    data: &Bytes,
    target: i64,
    log_start: i64,
) -> Result<Option<OffsetAndTimestamp>> {
    let corrupt = |e: String| EngineError::Storage(format!("stored batch unreadable: {e}"));
    let mut best: Option<OffsetAndTimestamp> = None;
    for b in batch::iter_batches(data) {
        let (h, bytes) = b.map_err(|e| corrupt(e.to_string()))?;
        if h.last_offset() < log_start {
            continue;
        }
        if target != MAX_TIMESTAMP && h.max_timestamp < target {
            continue;
        }
        let log_append = h.is_log_append_time();
        let mut first_match: Option<OffsetAndTimestamp> = None;
        records::for_each_record(&bytes, records::MAX_PLAIN_BYTES, |_, r| {
            let offset = h.base_offset + i64::from(r.offset_delta);
            if offset < log_start || first_match.is_some() {
                return Ok(());
            }
            let timestamp = if log_append {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(r.timestamp_delta)
            };
            let found = OffsetAndTimestamp { offset, timestamp };
            if target == MAX_TIMESTAMP {
                if best.is_none_or(|b| timestamp > b.timestamp) {
                    best = Some(found);
                }
            } else if timestamp >= target {
                first_match = Some(found);
            }
            Ok(())
        })
        .map_err(|e| corrupt(e.to_string()))?;
        if first_match.is_some() {
            return Ok(first_match);
        }
    }
    Ok(best)
}
