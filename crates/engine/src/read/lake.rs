//! Reading lake files back as Kafka record batches.
//!
//! A fetch of offsets held in a lake file reads the file's footer (once; it is
//! remembered), then the one row group holding the offset, both through the block
//! cache, and re-encodes the rows as uncompressed batches. The batches of recently
//! read row groups are remembered too, so a sequential consumer decodes each row
//! group once, not once per fetch.
//!
//! Re-encoded batches carry the records exactly: offsets, timestamps and their type,
//! keys, values, headers. What they do not carry is how the producer batched and
//! compressed them, nor producer ids (lake data is older than any retry window).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_lake::RowGroupSpan;
use sluice_protocol::records::{encode_batch, Record};

use super::{ReadPath, MAX_TIMESTAMP};
use crate::error::{EngineError, Result};
use crate::partition::IndexEntry;

/// Footers remembered; past this the memo starts over.
const FOOTERS: usize = 4096;
/// Bytes of re-encoded row groups remembered.
const ROW_GROUP_BYTES: usize = 256 << 20;
/// A re-encoded batch holds at most this many records or bytes.
const BATCH_RECORDS: usize = 2_000;
const BATCH_BYTES: usize = 512 << 10;

/// A lake file's metadata and row groups.
pub(crate) struct Footer {
    meta: sluice_lake::ParquetMetaData,
    spans: Vec<RowGroupSpan>,
}

/// What lake reads remember.
#[derive(Default)]
pub(crate) struct LakeMemo {
    footers: Mutex<HashMap<String, Arc<Footer>>>,
    groups: Mutex<VecDeque<((String, usize), Bytes)>>,
}

impl LakeMemo {
    fn group(&self, key: &(String, usize)) -> Option<Bytes> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
    }

    fn keep_group(&self, key: (String, usize), batches: Bytes) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.push_back((key, batches));
        let mut total: usize = groups.iter().map(|(_, b)| b.len()).sum();
        while total > ROW_GROUP_BYTES && groups.len() > 1 {
            if let Some((_, b)) = groups.pop_front() {
                total -= b.len();
            }
        }
    }
}

fn lake_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(format!("lake file unreadable: {e}"))
}

impl ReadPath {
    /// The footer of a lake file, read through the cache once.
    async fn lake_footer(&self, entry: &IndexEntry) -> Result<Arc<Footer>> {
        let name = entry.object.to_string();
        if let Some(f) = self
            .lake
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(f.clone());
        }
        let len = entry.object_len;
        let tail_start = len.saturating_sub(sluice_lake::FOOTER_TAIL);
        let tail = self.read_object(entry, tail_start..len).await?;
        let range = sluice_lake::metadata_range(&tail, len).map_err(lake_error)?;
        let bytes = self.read_object(entry, range).await?;
        let meta = sluice_lake::decode_metadata(&bytes).map_err(lake_error)?;
        let spans = sluice_lake::row_groups(&meta).map_err(lake_error)?;
        let footer = Arc::new(Footer { meta, spans });
        let mut footers = self.lake.footers.lock().unwrap_or_else(|p| p.into_inner());
        if footers.len() >= FOOTERS {
            footers.clear();
        }
        footers.insert(name, footer.clone());
        Ok(footer)
    }

    async fn read_object(&self, entry: &IndexEntry, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.cache
            .read(&entry.object, range, entry.object_len)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))
    }

    /// Batches of the row group holding `offset` (or the file's first one).
    pub(crate) async fn lake_batches(&self, entry: &IndexEntry, offset: i64) -> Result<Bytes> {
        let footer = self.lake_footer(entry).await?;
        // Past the last row group (log compaction can leave a file's last offsets
        // empty): nothing, and the fetch goes on to the next entry.
        let Some(span) = footer.spans.iter().find(|s| s.last_offset >= offset) else {
            return Ok(Bytes::new());
        };
        self.row_group_batches(entry, &footer, span.index).await
    }

    /// Every batch of a lake file (for rewriting it).
    pub(crate) async fn lake_all_batches(&self, entry: &IndexEntry) -> Result<Bytes> {
        let footer = self.lake_footer(entry).await?;
        let mut parts = Vec::with_capacity(footer.spans.len());
        for span in &footer.spans {
            parts.push(self.row_group_batches(entry, &footer, span.index).await?);
        }
        Ok(crate::util::concat(parts))
    }

    /// Batches of the row group of a lake file a timestamp lookup needs: the first
    /// holding a timestamp at or after `target`, or (for the max-timestamp query)
    /// the one with the largest.
    pub(crate) async fn lake_batches_by_time(
        &self,
        entry: &IndexEntry,
        target: i64,
    ) -> Result<Bytes> {
        let footer = self.lake_footer(entry).await?;
        let span = if target == MAX_TIMESTAMP {
            footer.spans.iter().max_by_key(|s| s.max_timestamp)
        } else {
            footer.spans.iter().find(|s| s.max_timestamp >= target)
        };
        match span {
            Some(s) => self.row_group_batches(entry, &footer, s.index).await,
            None => Ok(Bytes::new()),
        }
    }

    async fn row_group_batches(
        &self,
        entry: &IndexEntry,
        footer: &Arc<Footer>,
        index: usize,
    ) -> Result<Bytes> {
        let key = (entry.object.to_string(), index);
        if let Some(b) = self.lake.group(&key) {
            return Ok(b);
        }
        let span = footer
            .spans
            .get(index)
            .ok_or_else(|| lake_error(format!("no row group {index}")))?;
        let chunks = self.read_object(entry, span.range.clone()).await?;
        let (footer, start, len) = (footer.clone(), span.range.start, entry.object_len);
        let batches = crate::util::blocking(move || {
            sluice_lake::read_row_group(&footer.meta, index, start, chunks, len)
                .map(|rows| encode_batches(&rows))
                .map_err(lake_error)
        })
        .await?;
        self.lake.keep_group(key, batches.clone());
        Ok(batches)
    }
}

/// Rows as consecutive batches. A batch holds records of one timestamp type, and a
/// log-append-time batch records of one append time (its max timestamp is theirs).
pub fn encode_batches(rows: &[Record]) -> Bytes {
    let mut out = bytes::BytesMut::new();
    let mut start = 0;
    while start < rows.len() {
        let first = &rows[start];
        let mut end = start;
        let mut size = 0;
        while end < rows.len()
            && end - start < BATCH_RECORDS
            && (end == start || size < BATCH_BYTES)
            && rows[end].log_append_time == first.log_append_time
            && (!first.log_append_time || rows[end].timestamp == first.timestamp)
        {
            size += rows[end].value.as_ref().map_or(0, Bytes::len)
                + rows[end].key.as_ref().map_or(0, Bytes::len);
            end += 1;
        }
        out.extend_from_slice(&encode_batch(&rows[start..end]));
        start = end;
    }
    out.freeze()
}
