//! The read cache: a hybrid (memory + local disk) cache of fixed-size, aligned blocks
//! of immutable objects, in front of the object store. Built on foyer.
//!
//! A read of bytes `a..b` of an object becomes reads of the blocks covering it
//! (`block_bytes` each, aligned to multiples of it, the last one cut at the object's
//! end). Each block is looked up in memory, then on disk, then fetched with one
//! ranged GET; concurrent misses of one block share that GET (foyer coalesces them).
//! [`BlockCache::prefetch`] starts fetches a reader will soon need (read-ahead).
//!
//! Invariants:
//! - Only immutable objects are cached (write-ahead objects and segments are never
//!   rewritten), so a cached block is never stale; an object's key names one content.
//! - The cache holds copies: losing the disk tier (or the whole directory) loses
//!   nothing but speed. The disk tier is not recovered across restarts.
//! - A failed fetch is not cached; the next read tries the store again.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    RecoverMode, Source,
};
use futures::future::try_join_all;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Where and how much to cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of blocks kept in memory.
    pub memory_bytes: usize,
    /// Directory of the disk tier; none for a memory-only cache.
    pub disk_dir: Option<PathBuf>,
    /// Bytes of blocks kept on disk.
    pub disk_bytes: usize,
    /// Size of one cached block; reads are aligned to it.
    pub block_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            disk_dir: None,
            disk_bytes: 0,
            block_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cache: {0}")]
    Cache(String),
}

pub type Result<T> = std::result::Result<T, CacheError>;

/// One block of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    object: String,
    index: u64,
}

impl Code for BlockKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        self.object.encode(writer)?;
        self.index.encode(writer)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        Ok(Self {
            object: String::decode(reader)?,
            index: u64::decode(reader)?,
        })
    }

    fn estimated_size(&self) -> usize {
        self.object.len() + 16
    }
}

/// A block's bytes.
#[derive(Debug, Clone)]
struct Block(Bytes);

impl Code for Block {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        (self.0.len() as u64).encode(writer)?;
        writer.write_all(&self.0).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let len = u64::decode(reader)? as usize;
        let mut buf = vec![0u8; len];
        reader
            .read_exact(&mut buf)
            .map_err(foyer::Error::io_error)?;
        Ok(Self(Bytes::from(buf)))
    }

    fn estimated_size(&self) -> usize {
        self.0.len() + 8
    }
}

/// What the cache did, for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    /// Blocks fetched from the object store (one GET each).
    pub misses: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Blocks requested by read-ahead.
    pub prefetches: AtomicU64,
}

impl CacheMetrics {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_cache_lookups_total Block lookups by the tier that answered (object = fetched from the object store).\n\
             # TYPE sluice_cache_lookups_total counter\n\
             sluice_cache_lookups_total{{tier=\"memory\"}} {}\n\
             sluice_cache_lookups_total{{tier=\"disk\"}} {}\n\
             sluice_cache_lookups_total{{tier=\"object\"}} {}\n\
             # HELP sluice_cache_fetched_bytes_total Bytes fetched from the object store into the cache.\n\
             # TYPE sluice_cache_fetched_bytes_total counter\n\
             sluice_cache_fetched_bytes_total {}\n\
             # HELP sluice_cache_prefetches_total Blocks requested ahead of readers.\n\
             # TYPE sluice_cache_prefetches_total counter\n\
             sluice_cache_prefetches_total {}",
            get(&self.memory_hits),
            get(&self.disk_hits),
            get(&self.misses),
            get(&self.fetched_bytes),
            get(&self.prefetches),
        );
    }
}

/// The block cache. Cheap to clone.
#[derive(Clone)]
pub struct BlockCache {
    cache: HybridCache<BlockKey, Block>,
    store: Arc<dyn ObjectStore>,
    block_bytes: u64,
    metrics: Arc<CacheMetrics>,
}

impl BlockCache {
    /// Opens the cache. A disk tier starts empty: whatever a previous process left in
    /// the directory is discarded.
    pub async fn open(config: &CacheConfig, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let block_bytes = config.block_bytes.max(4096);
        let builder = HybridCacheBuilder::new()
            .with_name("sluice-blocks")
            .memory(config.memory_bytes.max(block_bytes as usize))
            .with_weighter(|k: &BlockKey, v: &Block| k.object.len() + v.0.len())
            .storage();
        let builder = match &config.disk_dir {
            Some(dir) if config.disk_bytes > 0 => {
                // Nothing on disk is trusted from before: the tier starts empty.
                let _ = std::fs::remove_dir_all(dir);
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(config.disk_bytes)
                    .build()
                    .map_err(|e| CacheError::Cache(format!("dir={}: {e}", dir.display())))?;
                // The disk tier's own unit of eviction: a few blocks each.
                let engine_block = (4 * block_bytes as usize).clamp(1 << 20, 16 << 20);
                // Blocks evicted from memory are queued for disk; a catch-up read
                // evicts as fast as it reads, so the queue and writers are sized
                // for bursts (foyer drops what does not fit; a dropped block only
                // costs a GET later).
                let engine = BlockEngineConfig::new(device)
                    .with_block_size(engine_block)
                    .with_flushers(2)
                    .with_buffer_pool_size(16 * engine_block)
                    .with_submit_queue_size_threshold(
                        (config.memory_bytes / 2).clamp(16 << 20, 256 << 20),
                    );
                builder
                    .with_engine_config(engine)
                    .with_recover_mode(RecoverMode::None)
            }
            _ => builder,
        };
        let cache = builder
            .build()
            .await
            .map_err(|e| CacheError::Cache(e.to_string()))?;
        Ok(Self {
            cache,
            store,
            block_bytes,
            metrics: Arc::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<CacheMetrics> {
        &self.metrics
    }

    /// The blocks covering `range` of an object of `object_len` bytes.
    fn blocks(&self, range: &Range<u64>) -> Range<u64> {
        let first = range.start / self.block_bytes;
        let last = range.end.saturating_sub(1) / self.block_bytes;
        first..last + 1
    }

    /// Bytes `range` of `object`, whose length is `object_len`.
    pub async fn read(&self, object: &Path, range: Range<u64>, object_len: u64) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let blocks = self.blocks(&range);
        let fetched = try_join_all(
            blocks
                .clone()
                .map(|i| self.block(object, i, object_len, false)),
        )
        .await?;
        let offset_in = |i: u64, at: u64| (at - i * self.block_bytes) as usize;
        if fetched.len() == 1 {
            // The common case: a slice of one block, without copying.
            let b = &fetched[0];
            let (from, to) = (
                offset_in(blocks.start, range.start),
                offset_in(blocks.start, range.end),
            );
            return b
                .get(from..to)
                .map(|_| b.slice(from..to))
                .ok_or_else(|| short(object, &range, object_len));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for (i, b) in blocks.zip(&fetched) {
            let from = if i * self.block_bytes < range.start {
                offset_in(i, range.start)
            } else {
                0
            };
            let to = ((range.end - i * self.block_bytes) as usize).min(b.len());
            out.extend_from_slice(
                b.get(from..to)
                    .ok_or_else(|| short(object, &range, object_len))?,
            );
        }
        if out.len() as u64 != range.end - range.start {
            return Err(short(object, &range, object_len));
        }
        Ok(out.freeze())
    }

    /// Starts fetching the blocks of `range` in the background, so that a reader
    /// about to ask for them finds them cached (or shares the fetch in flight).
    pub fn prefetch(&self, object: &Path, range: Range<u64>, object_len: u64) {
        if range.start >= range.end {
            return;
        }
        for i in self.blocks(&range) {
            if self.cache.memory().contains(&BlockKey {
                object: object.to_string(),
                index: i,
            }) {
                continue;
            }
            self.metrics.prefetches.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let object = object.clone();
            tokio::spawn(async move {
                if let Err(e) = this.block(&object, i, object_len, true).await {
                    tracing::debug!(%object, block = i, error = %e, "read-ahead failed");
                }
            });
        }
    }

    /// One block: from memory, disk, or one ranged GET.
    async fn block(
        &self,
        object: &Path,
        index: u64,
        object_len: u64,
        ahead: bool,
    ) -> Result<Bytes> {
        let key = BlockKey {
            object: object.to_string(),
            index,
        };
        let start = index * self.block_bytes;
        let end = (start + self.block_bytes).min(object_len);
        let store = self.store.clone();
        let path = object.clone();
        let metrics = self.metrics.clone();
        let entry = self
            .cache
            .get_or_fetch(&key, move || async move {
                metrics.misses.fetch_add(1, Ordering::Relaxed);
                let bytes = store.get_range(&path, start..end).await?;
                metrics
                    .fetched_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok::<_, object_store::Error>(Block(bytes))
            })
            .await
            .map_err(|e| CacheError::Cache(format!("object={object} block={index}: {e}")))?;
        if !ahead {
            match entry.source() {
                Source::Memory => self.metrics.memory_hits.fetch_add(1, Ordering::Relaxed),
                Source::Disk => self.metrics.disk_hits.fetch_add(1, Ordering::Relaxed),
                Source::Outer => 0,
            };
        }
        Ok(entry.value().0.clone())
    }
}

fn short(object: &Path, range: &Range<u64>, object_len: u64) -> CacheError {
    CacheError::Cache(format!(
        "object={object} range={range:?} object_len={object_len}: the object is shorter than the read"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use sluice_storage::metered::{Kind, MeteredStore, StoreMetrics};

    const BLOCK: u64 = 4096;

    async fn setup(config: CacheConfig) -> (BlockCache, Arc<StoreMetrics>, Path, Vec<u8>) {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let data: Vec<u8> = (0..10 * BLOCK + 123).map(|i| (i % 251) as u8).collect();
        let path = Path::from("wal/obj");
        inner
            .put(&path, PutPayload::from(data.clone()))
            .await
            .unwrap();
        let metrics = Arc::new(StoreMetrics::default());
        let store: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(inner, metrics.clone()));
        let cache = BlockCache::open(&config, store).await.unwrap();
        (cache, metrics, path, data)
    }

    fn memory_only() -> CacheConfig {
        CacheConfig {
            memory_bytes: 64 << 20,
            block_bytes: BLOCK,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn reads_are_exact_across_blocks_and_a_reread_costs_no_get() {
        let (cache, gets, path, data) = setup(memory_only()).await;
        let len = data.len() as u64;
        for range in [
            0..10,
            100..BLOCK + 7,
            3 * BLOCK - 1..6 * BLOCK + 5,
            10 * BLOCK..len,
        ] {
            let got = cache.read(&path, range.clone(), len).await.unwrap();
            assert_eq!(&got[..], &data[range.start as usize..range.end as usize]);
        }
        let after_first = gets.requests(Kind::Get);
        assert_eq!(after_first, 8, "blocks 0-6 and 10: one GET each");
        let got = cache.read(&path, 0..len, len).await.unwrap();
        assert_eq!(&got[..], &data[..]);
        assert_eq!(
            gets.requests(Kind::Get),
            after_first + 3,
            "only blocks 7-9 were new"
        );
        let again = cache.read(&path, 0..len, len).await.unwrap();
        assert_eq!(again, got);
        assert_eq!(gets.requests(Kind::Get), after_first + 3);
        assert_eq!(cache.metrics().misses.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn concurrent_readers_of_a_block_share_one_get() {
        let (cache, gets, path, data) = setup(memory_only()).await;
        let len = data.len() as u64;
        let reads = (0..16).map(|i| {
            let cache = cache.clone();
            let path = path.clone();
            async move { cache.read(&path, i * 10..i * 10 + 100, len).await }
        });
        for r in futures::future::join_all(reads).await {
            r.unwrap();
        }
        assert_eq!(gets.requests(Kind::Get), 1);
    }

    #[tokio::test]
    async fn the_disk_tier_serves_what_memory_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, gets, path, data) = setup(CacheConfig {
            memory_bytes: BLOCK as usize,
            disk_dir: Some(dir.path().join("cache")),
            disk_bytes: 64 << 20,
            block_bytes: BLOCK,
        })
        .await;
        let len = data.len() as u64;
        cache.read(&path, 0..len, len).await.unwrap();
        assert_eq!(gets.requests(Kind::Get), 11);
        // Give the disk tier time to write what memory evicted.
        let mut disk_hits = 0;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let got = cache.read(&path, 0..BLOCK, len).await.unwrap();
            assert_eq!(&got[..], &data[..BLOCK as usize]);
            disk_hits = cache.metrics().disk_hits.load(Ordering::Relaxed);
            if disk_hits > 0 {
                break;
            }
        }
        assert!(disk_hits > 0, "block 0 came back from disk");
        assert_eq!(gets.requests(Kind::Get), 11, "no GET for a block on disk");
    }

    #[tokio::test]
    async fn read_ahead_fetches_before_the_reader_asks() {
        let (cache, gets, path, data) = setup(memory_only()).await;
        let len = data.len() as u64;
        cache.prefetch(&path, 2 * BLOCK..4 * BLOCK, len);
        for _ in 0..100 {
            if gets.requests(Kind::Get) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let got = cache.read(&path, 2 * BLOCK..4 * BLOCK, len).await.unwrap();
        assert_eq!(&got[..], &data[2 * BLOCK as usize..4 * BLOCK as usize]);
        assert_eq!(gets.requests(Kind::Get), 2);
        assert_eq!(cache.metrics().memory_hits.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_read_past_the_end_is_an_error_and_not_cached() {
        let (cache, _, path, data) = setup(memory_only()).await;
        let len = data.len() as u64;
        assert!(cache
            .read(&path, len - 5..len + 50, len + 50)
            .await
            .is_err());
        let missing = Path::from("wal/missing");
        assert!(matches!(
            cache.read(&missing, 0..10, 10).await,
            Err(CacheError::Cache(_))
        ));
        // The real object still reads.
        let got = cache.read(&path, len - 5..len, len).await.unwrap();
        assert_eq!(&got[..], &data[data.len() - 5..]);
    }
}
