//! The embedded metadata store for single-node Sluice: an ordered in-memory map whose
//! every committed write transaction is appended to a log file and replayed on open.
//!
//! Log format: a sequence of records `[len u32][crc32c u32][payload]`, payload =
//! `revision i64, op count u32, ops…` with op = `1 key value lease` (put) or
//! `2 key` (delete), strings and values length-prefixed with u32. A torn final record
//! (crash mid-append) fails its length or CRC check and is dropped on replay: it was
//! never acknowledged. A record whose write fails (disk full) is cut off the log at
//! once and its transaction fails, so the log always ends on a whole record: the
//! failed transaction never comes back, and later records never follow a torn one.
//! When the log grows well past the live data it is rewritten as one snapshot record
//! and atomically renamed into place.
//!
//! Leases live only as long as the process: on open, keys that were bound to a lease
//! are deleted, exactly as if the lease had expired.
//!
//! The log is written to the page cache, not fsynced: a killed process loses nothing;
//! a power loss may lose the last writes (run etcd for machine-crash durability).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    Compare, KeyValue, LeaseId, MetaError, MetaStore, Op, Result, Txn, TxnResult, WatchEvent,
};

const LOG_FILE: &str = "meta.log";
const LOCK_FILE: &str = "LOCK";
const MIN_REWRITE_BYTES: u64 = 64 << 20;
const LEASE_TICK: Duration = Duration::from_millis(100);

/// The embedded store. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct EmbeddedStore {
    state: Arc<Mutex<State>>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct Log {
    dir: PathBuf,
    /// Written one whole record per transaction, unbuffered: a failed write must not
    /// leave bytes behind to be written with the next record.
    file: File,
    /// Length of the log's valid prefix: every record in it is whole.
    bytes: u64,
    /// A failed write could not be cut back off the log: later records would follow
    /// a torn one and be lost on replay, so nothing more is written.
    broken: Option<String>,
    _lock: File,
}

struct State {
    kv: BTreeMap<String, KeyValue>,
    live_bytes: u64,
    revision: i64,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<(String, mpsc::UnboundedSender<WatchEvent>)>,
    log: Option<Log>,
}

/// A write as it is logged and applied.
enum Write_ {
    Put(String, Bytes, Option<LeaseId>),
    Delete(String),
    /// A key with its stamps as a log snapshot records it.
    Restore(KeyValue),
}

impl EmbeddedStore {
    /// A store that lives in memory only (tests, `memory://`).
    pub fn in_memory() -> Self {
        Self::from_state(State::new(None))
    }

    /// Replays a log's bytes into a fresh in-memory state, as [`Self::open`] does
    /// with the file; the length of the valid prefix. For the fuzzer.
    #[doc(hidden)]
    pub fn replay_log(buf: &[u8]) -> Result<u64> {
        State::new(None).replay(buf)
    }

    /// Opens (or creates) a persistent store in `dir`, replaying its log.
    ///
    /// Takes an exclusive lock on the directory: a second process gets `Locked`.
    pub fn open(dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| MetaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.try_lock()
            .map_err(|_| MetaError::Locked(dir.display().to_string()))?;

        let log_path = dir.join(LOG_FILE);
        let mut state = State::new(None);
        let valid_len = match File::open(&log_path) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(io(&log_path))?;
                state.replay(&buf)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&log_path)(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        // Drop a torn tail so new records follow the last good one.
        file.set_len(valid_len).map_err(io(&log_path))?;
        state.log = Some(Log {
            dir: dir.to_path_buf(),
            file,
            bytes: valid_len,
            broken: None,
            _lock: lock,
        });
        // Leases died with the previous process.
        let leased: Vec<String> = state
            .kv
            .values()
            .filter(|kv| kv.lease.is_some())
            .map(|kv| kv.key.clone())
            .collect();
        if !leased.is_empty() {
            state.commit(leased.into_iter().map(Write_::Delete).collect())?;
        }
        Ok(Self::from_state(state))
    }

    fn from_state(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        // Leases expire on a timer when a runtime is present (it always is in the
        // broker); without one they expire on the next keep-alive check.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(expire_leases(Arc::downgrade(&state)));
        }
        Self { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update; the state may be half-applied,
        // so refuse to continue rather than serve it.
        match self.state.lock() {
            Ok(g) => g,
            Err(_) => std::process::abort(),
        }
    }
}

async fn expire_leases(state: Weak<Mutex<State>>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let Ok(mut s) = state.lock() else { return };
        let now = Instant::now();
        let expired: Vec<LeaseId> = s
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Err(e) = s.end_lease(id) {
                tracing::error!(lease = id, error = %e, "expiring lease failed");
            }
        }
    }
}

impl State {
    fn new(log: Option<Log>) -> Self {
        Self {
            kv: BTreeMap::new(),
            live_bytes: 0,
            revision: 0,
            leases: HashMap::new(),
            next_lease: 1,
            watchers: Vec::new(),
            log,
        }
    }

    /// Applies every complete record of a log; returns the length of the valid prefix.
    fn replay(&mut self, buf: &[u8]) -> Result<u64> {
        let mut pos = 0usize;
        while buf.len() - pos >= 8 {
            let len = u32::from_be_bytes(slice4(buf, pos)) as usize;
            let crc = u32::from_be_bytes(slice4(buf, pos + 4));
            let Some(payload) = buf.get(pos + 8..pos + 8 + len) else {
                break;
            };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let (revision, writes) = decode_record(payload)?;
            for w in writes {
                self.apply(w, revision);
            }
            self.revision = revision;
            pos += 8 + len;
        }
        Ok(pos as u64)
    }

    fn apply(&mut self, w: Write_, revision: i64) -> WatchEvent {
        match w {
            Write_::Put(key, value, lease) => {
                let (create_revision, version) = match self.kv.get(&key) {
                    Some(old) => {
                        self.live_bytes -= (old.key.len() + old.value.len()) as u64;
                        if let Some(l) = old.lease.filter(|l| Some(*l) != lease) {
                            if let Some(lease) = self.leases.get_mut(&l) {
                                lease.keys.remove(&key);
                            }
                        }
                        (old.create_revision, old.version + 1)
                    }
                    None => (revision, 1),
                };
                if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
                    l.keys.insert(key.clone());
                }
                self.live_bytes += (key.len() + value.len()) as u64;
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision,
                    mod_revision: revision,
                    version,
                    lease,
                };
                self.kv.insert(key, kv.clone());
                WatchEvent::Put(kv)
            }
            Write_::Restore(kv) => {
                self.live_bytes += (kv.key.len() + kv.value.len()) as u64;
                self.kv.insert(kv.key.clone(), kv.clone());
                WatchEvent::Put(kv)
            }
            Write_::Delete(key) => {
                if let Some(old) = self.kv.remove(&key) {
                    self.live_bytes -= (old.key.len() + old.value.len()) as u64;
                    if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                        l.keys.remove(&key);
                    }
                }
                WatchEvent::Delete { key, revision }
            }
        }
    }

    /// Logs and applies a batch of writes at the next revision.
    fn commit(&mut self, writes: Vec<Write_>) -> Result<i64> {
        if writes.is_empty() {
            return Ok(self.revision);
        }
        let revision = self.revision + 1;
        if let Some(log) = &mut self.log {
            let record = encode_record(revision, &writes);
            let path = log.dir.join(LOG_FILE);
            let io = |source| MetaError::Io {
                path: path.display().to_string(),
                source,
            };
            if let Some(why) = &log.broken {
                return Err(io(std::io::Error::other(why.clone())));
            }
            if let Err(e) = log.file.write_all(&record) {
                // Cut what was written of the record, so the log ends on a whole one:
                // the transaction failed and must not come back on replay, and later
                // records must not follow a torn one.
                if let Err(cut) = log.file.set_len(log.bytes) {
                    log.broken = Some(format!(
                        "a failed write could not be cut off the log ({cut}); reopen the store"
                    ));
                }
                return Err(io(e));
            }
            log.bytes += record.len() as u64;
        }
        self.revision = revision;
        let events: Vec<WatchEvent> = writes
            .into_iter()
            .map(|w| self.apply(w, revision))
            .collect();
        self.notify(&events);
        // The transaction is durable in the log; a failed compaction of the log only
        // leaves it longer.
        if let Err(e) = self.maybe_rewrite_log() {
            tracing::warn!(error = %e, "cannot rewrite the metadata log; keeping it as it is");
        }
        Ok(revision)
    }

    fn notify(&mut self, events: &[WatchEvent]) {
        self.watchers.retain(|(prefix, tx)| {
            events
                .iter()
                .filter(|e| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(prefix.as_str()),
                    WatchEvent::Delete { key, .. } => key.starts_with(prefix.as_str()),
                })
                .all(|e| tx.send(e.clone()).is_ok())
        });
    }

    /// Replaces the log by a snapshot once it is mostly history.
    fn maybe_rewrite_log(&mut self) -> Result<()> {
        let Some(log) = &self.log else { return Ok(()) };
        if log.bytes < MIN_REWRITE_BYTES.max(self.live_bytes * 4) {
            return Ok(());
        }
        let writes: Vec<Write_> = self
            .kv
            .values()
            .map(|kv| Write_::Restore(kv.clone()))
            .collect();
        let record = encode_record(self.revision, &writes);
        let dir = log.dir.clone();
        let tmp = dir.join(format!("{LOG_FILE}.tmp"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| MetaError::Io { path, source }
        };
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&record)?;
            f.sync_data()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        let path = dir.join(LOG_FILE);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if let Some(log) = &mut self.log {
            log.file = file;
            log.bytes = record.len() as u64;
        }
        Ok(())
    }

    fn end_lease(&mut self, id: LeaseId) -> Result<()> {
        let Some(lease) = self.leases.remove(&id) else {
            return Err(MetaError::LeaseNotFound(id));
        };
        self.commit(lease.keys.into_iter().map(Write_::Delete).collect())?;
        Ok(())
    }

    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::Missing(k) => !self.kv.contains_key(k),
            Compare::ValueEquals(k, v) => self.kv.get(k).is_some_and(|kv| kv.value == v),
            Compare::ModRevision(k, r) => self.kv.get(k).map_or(0, |kv| kv.mod_revision) == *r,
        }
    }
}

fn slice4(buf: &[u8], at: usize) -> [u8; 4] {
    [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
}

fn encode_record(revision: i64, writes: &[Write_]) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&revision.to_be_bytes());
    p.extend_from_slice(&(writes.len() as u32).to_be_bytes());
    for w in writes {
        match w {
            Write_::Put(k, v, lease) => {
                p.push(1);
                put_bytes(&mut p, k.as_bytes());
                put_bytes(&mut p, v);
                p.extend_from_slice(&lease.unwrap_or(0).to_be_bytes());
            }
            Write_::Delete(k) => {
                p.push(2);
                put_bytes(&mut p, k.as_bytes());
            }
            Write_::Restore(kv) => {
                p.push(3);
                put_bytes(&mut p, kv.key.as_bytes());
                put_bytes(&mut p, &kv.value);
                for n in [
                    kv.lease.unwrap_or(0),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                ] {
                    p.extend_from_slice(&n.to_be_bytes());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(p.len() + 8);
    out.extend_from_slice(&(p.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_be_bytes());
    out.extend_from_slice(&p);
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn decode_record(p: &[u8]) -> Result<(i64, Vec<Write_>)> {
    let corrupt = || MetaError::Corrupt("log record does not parse".into());
    let mut r = Reader { buf: p, pos: 0 };
    let revision = r.i64().ok_or_else(corrupt)?;
    let n = r.u32().ok_or_else(corrupt)?;
    let mut writes = Vec::new();
    for _ in 0..n {
        let tag = r.take(1).ok_or_else(corrupt)?[0];
        let key =
            String::from_utf8(r.bytes().ok_or_else(corrupt)?.to_vec()).map_err(|_| corrupt())?;
        writes.push(match tag {
            1 => {
                let value = Bytes::copy_from_slice(r.bytes().ok_or_else(corrupt)?);
                let lease = r.i64().ok_or_else(corrupt)?;
                Write_::Put(key, value, (lease != 0).then_some(lease))
            }
            2 => Write_::Delete(key),
            3 => {
                let value = Bytes::copy_from_slice(r.bytes().ok_or_else(corrupt)?);
                let mut n = [0i64; 4];
                for slot in &mut n {
                    *slot = r.i64().ok_or_else(corrupt)?;
                }
                Write_::Restore(KeyValue {
                    key,
                    value,
                    lease: (n[0] != 0).then_some(n[0]),
                    create_revision: n[1],
                    mod_revision: n[2],
                    version: n[3],
                })
            }
            _ => return Err(corrupt()),
        });
    }
    Ok((revision, writes))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let s = self.lock();
        Ok(s.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let mut s = self.lock();
        let succeeded = txn.compares.iter().all(|c| s.holds(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        let mut gets = Vec::new();
        let mut writes = Vec::new();
        for op in ops {
            match op {
                Op::Get(k) => gets.push(s.kv.get(&k).cloned()),
                Op::Put { key, value, lease } => {
                    if let Some(l) = lease {
                        if !s.leases.contains_key(&l) {
                            return Err(MetaError::LeaseNotFound(l));
                        }
                    }
                    writes.push(Write_::Put(key, value, lease));
                }
                Op::Delete(k) => {
                    if s.kv.contains_key(&k) {
                        writes.push(Write_::Delete(k));
                    }
                }
                Op::DeletePrefix(p) => writes.extend(
                    s.kv.range(p.clone()..)
                        .take_while(|(k, _)| k.starts_with(&p))
                        .map(|(k, _)| Write_::Delete(k.clone())),
                ),
            }
        }
        let revision = s.commit(writes)?;
        Ok(TxnResult {
            succeeded,
            revision,
            gets,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut s = self.lock();
        let id = s.next_lease;
        s.next_lease += 1;
        s.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut s = self.lock();
        let now = Instant::now();
        match s.leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            Some(_) => {
                s.end_lease(lease)?;
                Err(MetaError::LeaseNotFound(lease))
            }
            None => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.lock().end_lease(lease)
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::UnboundedReceiver<WatchEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_passes_conformance() {
        crate::conformance::run_all(&EmbeddedStore::in_memory()).await;
    }

    #[tokio::test]
    async fn persistent_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance::run_all(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_drops_torn_tail_and_leased_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            crate::put(&s, "a", "1").await.unwrap();
            crate::put(&s, "b", "2").await.unwrap();
            crate::put(&s, "a", "3").await.unwrap();
            let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
            s.txn(Txn::when(vec![]).then(vec![Op::Put {
                key: "leased".into(),
                value: Bytes::from_static(b"x"),
                lease: Some(lease),
            }]))
            .await
            .unwrap();
            assert!(matches!(
                EmbeddedStore::open(dir.path()),
                Err(MetaError::Locked(_))
            ));
        }
        // A torn record at the end, as a crash mid-write leaves it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3]).unwrap();
        drop(f);

        let s = EmbeddedStore::open(dir.path()).unwrap();
        let a = s.get("a").await.unwrap().unwrap();
        assert_eq!((&a.value[..], a.version, a.mod_revision), (&b"3"[..], 2, 3));
        assert!(s.get("leased").await.unwrap().is_none());
        let rev = crate::put(&s, "c", "4").await.unwrap();
        assert_eq!(
            rev, 6,
            "revisions continue after replay and the lease cleanup"
        );
        drop(s);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(&s.get("c").await.unwrap().unwrap().value[..], b"4");
    }

    #[tokio::test]
    async fn rewrites_a_log_that_is_mostly_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let big = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..80 {
            crate::put(&s, "k", big.clone()).await.unwrap();
        }
        let len = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(len < 40 << 20, "log was not rewritten: {len} bytes");
        drop(s);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let k = s.get("k").await.unwrap().unwrap();
        assert_eq!((k.value.len(), k.version), (1 << 20, 80));
    }
}
