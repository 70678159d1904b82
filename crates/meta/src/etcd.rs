//! The etcd implementation of [`MetaStore`], for clusters.
//!
//! A thin mapping onto etcd's v3 API: compares become etcd compares (a missing key has
//! version 0 and mod revision 0, exactly as the trait defines), writes and reads in a
//! transaction become one etcd `Txn`, leases are etcd leases, watches are etcd watches
//! from the current revision on. Ranges are read in pages so no response grows past
//! gRPC's message limit. A request etcd refuses outright (too large, too many
//! operations, out of space) is `MetaError::Refused`: it did not apply, and the same
//! request will never succeed. Every other failure is `MetaError::Unavailable`: the
//! caller cannot know whether a failed write applied, and must treat it as unknown.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    Compare, KeyValue, LeaseId, MetaError, MetaStore, Op, Result, Txn, TxnResult, WatchEvent,
};

/// Keys read per page of a range, at most. etcd-client decodes responses of at most
/// 4 MiB (tonic's default, which it does not let us raise), so a page whose keys and
/// values add up to more is refused by the client; the page is then halved and read
/// again. One value is at most etcd's request limit (1.5 MiB by default), so a page
/// of one key always fits.
const RANGE_PAGE: i64 = 1000;

/// Whether `e` is the client refusing a response larger than it decodes.
fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if i32::from(s.code()) == 11 && s.message().contains("message length too large"))
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub user: Option<(String, String)>,
    /// TLS for `https://` endpoints; `None` means plain HTTP.
    pub tls: Option<EtcdTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            user: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// TLS settings, PEM-encoded. Without a CA the system's roots verify etcd's
/// certificate; with a client identity etcd can authenticate the broker
/// (`--client-cert-auth`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A [`MetaStore`] on etcd. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

/// gRPC's INVALID_ARGUMENT and RESOURCE_EXHAUSTED: etcd's answers to a request it
/// will not apply (`request is too large`, `too many operations in txn request`,
/// `database space exceeded`).
const REFUSED_CODES: [i32; 2] = [3, 8];

fn unavailable(e: etcd_client::Error) -> MetaError {
    match &e {
        etcd_client::Error::GRpcStatus(status)
            if REFUSED_CODES.contains(&(status.code() as i32)) =>
        {
            MetaError::Refused(e.to_string())
        }
        _ => MetaError::Unavailable(e.to_string()),
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key_str()
        .map_err(|_| MetaError::Corrupt("etcd key is not UTF-8".into()))?
        .to_string();
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key: etcd's "\0" range end
}

impl EtcdStore {
    /// Connects to etcd; the connection is verified with a read.
    pub async fn connect(opts: &EtcdOptions) -> Result<Self> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &opts.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &opts.tls {
            let mut config = TlsOptions::new();
            config = match &tls.ca_pem {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(config);
        }
        let mut client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(unavailable)?;
        client
            .get("/sluice/connect-probe", None)
            .await
            .map_err(unavailable)?;
        Ok(Self { client })
    }

    fn compare(c: &Compare) -> EtcdCompare {
        match c {
            Compare::Missing(k) => EtcdCompare::version(k.as_str(), CompareOp::Equal, 0),
            Compare::ValueEquals(k, v) => {
                EtcdCompare::value(k.as_str(), CompareOp::Equal, v.to_vec())
            }
            Compare::ModRevision(k, r) => {
                EtcdCompare::mod_revision(k.as_str(), CompareOp::Equal, *r)
            }
        }
    }

    fn op(op: &Op) -> TxnOp {
        match op {
            Op::Put { key, value, lease } => TxnOp::put(
                key.as_str(),
                value.to_vec(),
                lease.map(|l| PutOptions::new().with_lease(l)),
            ),
            Op::Delete(k) => TxnOp::delete(k.as_str(), None),
            Op::DeletePrefix(p) => TxnOp::delete(
                p.as_str(),
                Some(DeleteOptions::new().with_range(prefix_end(p))),
            ),
            Op::Get(k) => TxnOp::get(k.as_str(), None),
        }
    }
}

#[async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let end = prefix_end(prefix);
        let mut client = self.client.clone();
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut page = RANGE_PAGE;
        loop {
            // Later pages read at the first page's revision: one consistent snapshot.
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(page);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = match client.get(start.clone(), Some(opts)).await {
                Ok(resp) => resp,
                Err(e) if too_large(&e) && page > 1 => {
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                out.push(convert(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let etcd_txn = EtcdTxn::new()
            .when(txn.compares.iter().map(Self::compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(Self::op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(Self::op).collect::<Vec<_>>());
        let resp = self
            .client
            .clone()
            .txn(etcd_txn)
            .await
            .map_err(unavailable)?;
        let mut gets = Vec::new();
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                gets.push(g.kvs().first().map(convert).transpose()?);
            }
        }
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            gets,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self
            .client
            .clone()
            .lease_grant(secs, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(lease)
            .await
            .map_err(unavailable)?;
        keeper.keep_alive().await.map_err(unavailable)?;
        match stream.message().await.map_err(unavailable)? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("requested lease not found") => {
                Err(MetaError::LeaseNotFound(lease))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::UnboundedReceiver<WatchEvent>> {
        let opts = WatchOptions::new().with_range(prefix_end(prefix));
        let mut stream = self
            .client
            .clone()
            .watch(prefix, Some(opts))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let event = match ev.event_type() {
                        EventType::Put => match convert(kv) {
                            Ok(kv) => WatchEvent::Put(kv),
                            Err(_) => continue,
                        },
                        EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision: kv.mod_revision(),
                        },
                    };
                    if tx.send(event).is_err() {
                        return; // the receiver is gone: dropping the stream cancels the watch
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
