//! Small helpers of every stage.

use bytes::{Bytes, BytesMut};

use crate::error::{EngineError, Result};

/// Joins byte runs; a single run is returned as it is, without copying.
pub(crate) fn concat(mut batches: Vec<Bytes>) -> Bytes {
    if batches.len() == 1 {
        return batches.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
    for b in batches {
        out.extend_from_slice(&b);
    }
    out.freeze()
}

/// Runs CPU-heavy work (Parquet encoding and decoding) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Storage(format!("blocking task panicked: {e}")))?
}
