//! Fetch sessions (KIP-227): a consumer sends its partition list once, then only
//! changes; the broker answers only partitions with news.
//!
//! A session remembers, per partition, the fetch position the client asked for and the
//! high watermark and log start offset last sent. An incremental response includes a
//! partition only if it has records, an error, or a changed high watermark or log
//! start offset. Sessions are evicted least-recently-used beyond a fixed count; an
//! evicted or unknown session gets FETCH_SESSION_ID_NOT_FOUND and the client starts
//! a new one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use indexmap::IndexMap;
use uuid::Uuid;

/// Sessions kept per broker before the least recently used is evicted.
const MAX_SESSIONS: usize = 1000;

/// A partition in a session. Identity is the topic name before Fetch v13 and the
/// topic id from v13 on, as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

#[derive(Debug, Clone)]
pub struct SessionPartition {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// What the last response said, or None if it never included the partition.
    pub sent: Option<(i64, i64)>,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: IndexMap<SessionKey, SessionPartition>,
    used: Instant,
}

/// What one response said about a partition of a session.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: SessionKey,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub had_records: bool,
}

/// Why a session request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

/// The broker's fetch sessions.
#[derive(Default)]
pub struct FetchSessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

/// A session's partitions for one request, and where to report back.
pub struct SessionView {
    pub id: i32,
    pub incremental: bool,
    pub partitions: Vec<(SessionKey, SessionPartition)>,
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl FetchSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a new session over a full fetch's partitions; returns its id.
    pub fn create(&self, partitions: Vec<(SessionKey, SessionPartition)>) -> i32 {
        let mut inner = self.lock();
        if inner.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| *id)
            {
                inner.sessions.remove(&oldest);
            }
        }
        let id = loop {
            inner.next_id = if inner.next_id == i32::MAX {
                1
            } else {
                inner.next_id + 1
            };
            if !inner.sessions.contains_key(&inner.next_id) {
                break inner.next_id;
            }
        };
        inner.sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions: partitions.into_iter().collect(),
                used: Instant::now(),
            },
        );
        id
    }

    pub fn close(&self, id: i32) {
        self.lock().sessions.remove(&id);
    }

    /// Applies an incremental request (changed partitions, forgotten ones) and returns
    /// every partition of the session.
    pub fn update(
        &self,
        id: i32,
        epoch: i32,
        changed: Vec<(SessionKey, i64, i32)>,
        forgotten: Vec<SessionKey>,
    ) -> Result<SessionView, SessionError> {
        let mut inner = self.lock();
        let session = inner.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if session.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = next_epoch(epoch);
        session.used = Instant::now();
        for key in forgotten {
            session.partitions.shift_remove(&key);
        }
        for (key, fetch_offset, max_bytes) in changed {
            let p = session.partitions.entry(key).or_insert(SessionPartition {
                fetch_offset,
                max_bytes,
                sent: None,
            });
            p.fetch_offset = fetch_offset;
            p.max_bytes = max_bytes;
        }
        Ok(SessionView {
            id,
            incremental: true,
            partitions: session
                .partitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Records what a response told the client about each partition. Partitions
    /// that returned records move to the end of the session, as in Kafka, so that
    /// when a response fills up, the ones left out come first next time.
    pub fn record_sent(&self, id: i32, sent: &[Sent]) {
        let mut inner = self.lock();
        if let Some(session) = inner.sessions.get_mut(&id) {
            for s in sent {
                let Some((i, _, p)) = session.partitions.get_full_mut(&s.key) else {
                    continue;
                };
                p.sent = Some((s.high_watermark, s.log_start_offset));
                if s.had_records {
                    let last = session.partitions.len() - 1;
                    session.partitions.move_index(i, last);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> SessionKey {
        SessionKey {
            topic: "t".into(),
            topic_id: Uuid::nil(),
            partition: p,
        }
    }

    fn part(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            max_bytes: 100,
            sent: None,
        }
    }

    #[test]
    fn epochs_and_incremental_updates() {
        let s = FetchSessions::default();
        let id = s.create(vec![(key(0), part(0)), (key(1), part(0))]);
        assert_eq!(
            s.update(id, 2, vec![], vec![]).err(),
            Some(SessionError::InvalidEpoch)
        );
        assert_eq!(
            s.update(id + 1, 1, vec![], vec![]).err(),
            Some(SessionError::NotFound)
        );
        let v = s
            .update(id, 1, vec![(key(1), 7, 50), (key(2), 3, 50)], vec![key(0)])
            .unwrap();
        let offsets: Vec<(i32, i64)> = v
            .partitions
            .iter()
            .map(|(k, p)| (k.partition, p.fetch_offset))
            .collect();
        assert_eq!(offsets, vec![(1, 7), (2, 3)]);
        s.record_sent(
            id,
            &[Sent {
                key: key(1),
                high_watermark: 10,
                log_start_offset: 0,
                had_records: false,
            }],
        );
        let v = s.update(id, 2, vec![], vec![]).unwrap();
        assert_eq!(v.partitions[0].1.sent, Some((10, 0)));
        assert_eq!(v.partitions[1].1.sent, None);
        s.close(id);
        assert_eq!(
            s.update(id, 3, vec![], vec![]).err(),
            Some(SessionError::NotFound)
        );
    }

    #[test]
    fn partitions_that_returned_records_go_to_the_back() {
        let s = FetchSessions::default();
        let id = s.create((0..4).map(|p| (key(p), part(0))).collect());
        let sent = |p: i32, had_records: bool| Sent {
            key: key(p),
            high_watermark: 5,
            log_start_offset: 0,
            had_records,
        };
        s.record_sent(id, &[sent(0, true), sent(1, true), sent(2, false)]);
        let order: Vec<i32> = s
            .update(id, 1, vec![], vec![])
            .unwrap()
            .partitions
            .iter()
            .map(|(k, _)| k.partition)
            .collect();
        assert_eq!(order, vec![2, 3, 0, 1]);
    }

    #[test]
    fn evicts_least_recently_used() {
        let s = FetchSessions::default();
        let first = s.create(vec![]);
        for _ in 0..MAX_SESSIONS {
            s.create(vec![]);
        }
        assert_eq!(
            s.update(first, 1, vec![], vec![]).err(),
            Some(SessionError::NotFound)
        );
    }
}
