//! Builds the object store a broker writes to from `--object-store`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::StorageError;

/// A parsed `--object-store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreUrl {
    /// `file:///abs/path` or `file://rel/path`: objects under a local directory.
    File(PathBuf),
    /// `memory://`: objects in process memory (tests; lost on exit).
    Memory,
}

impl ObjectStoreUrl {
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a directory"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Self::Memory);
        }
        if url.starts_with("s3://") {
            return Err(invalid("s3:// is not supported by this build yet"));
        }
        Err(invalid("expected file://<dir> or memory://"))
    }
}

/// Opens the object store, creating a local directory if needed.
pub fn open_object_store(url: &ObjectStoreUrl) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match url {
        ObjectStoreUrl::Memory => Ok(Arc::new(InMemory::new())),
        ObjectStoreUrl::File(dir) => {
            create_dir(dir)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            ObjectStoreUrl::parse("file:///tmp/x").unwrap(),
            ObjectStoreUrl::File("/tmp/x".into())
        );
        assert_eq!(
            ObjectStoreUrl::parse("file://rel/dir").unwrap(),
            ObjectStoreUrl::File("rel/dir".into())
        );
        assert_eq!(
            ObjectStoreUrl::parse("memory://").unwrap(),
            ObjectStoreUrl::Memory
        );
        assert!(ObjectStoreUrl::parse("ftp://x").is_err());
        assert!(ObjectStoreUrl::parse("file://").is_err());
    }
}
