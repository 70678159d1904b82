//! Iceberg tables over the lake: the controller publishes, for every topic with lake
//! files, a table at `lake/_iceberg/kafka/<topic>/` (its keys are
//! `sluice_storage::paths::IcebergTable`'s) whose current snapshot lists
//! exactly the lake files (under `lake/<topic>/`) the partitions' checkpoints
//! reference (see `sluice_lake::iceberg`). `lake/_iceberg` is a Hadoop-catalog
//! warehouse: Spark or Trino find the table as `kafka.<topic>`.
//!
//! `lake_table/<topic-id>` records the published version, its metadata file and a
//! digest of its file list. A round that finds the checkpoints' list different
//! writes a manifest, a manifest list and `metadata/<version>-<uuid>.metadata.json`,
//! then moves the key (revision compared, so two controllers cannot both publish a
//! version), and only then writes `metadata/v<version>.metadata.json` and
//! `metadata/version-hint.text` for readers that find tables by directory. The
//! objects of versions older than the last [`VERSIONS_KEPT`] are deleted.
//!
//! A deleted topic's table goes with it: the next round deletes the metadata
//! objects its kept versions wrote and its `lake_table` key (its data files, no
//! longer referenced, are the janitor's). A topic created again under the same name
//! shares the table's directory, so the files named by version number alone
//! (`v<n>.metadata.json`, `version-hint.text`) are then left to the new table,
//! which rewrites them as it publishes.
//!
//! Invariant: a published snapshot only lists files some checkpoint referenced when
//! it was read. A file retention drops stays readable for the janitor's grace
//! period, so readers of a snapshot a round old still find it.

use std::collections::{BTreeMap, HashMap, HashSet};

use object_store::path::Path;
use object_store::ObjectStoreExt;
use sluice_lake::iceberg::{self, DataFile, ManifestSummary, Snapshot};
use sluice_meta::{Compare, Op, Txn};
use sluice_storage::paths::IcebergTable;
use uuid::Uuid;

use crate::keyspace::{Checkpoint, FoldedFile, Stored, TableState};
use crate::partition::Format;
use crate::{Engine, Result, TopicRecord};

/// Table versions whose metadata objects are kept.
const VERSIONS_KEPT: usize = 20;

impl Engine {
    /// Publishes a new snapshot of every topic whose lake files changed.
    pub async fn publish_tables(&self) -> Result<()> {
        let Some(root) = self.cfg.object_root.clone() else {
            return Ok(());
        };
        let mut files: HashMap<Uuid, Vec<(i32, FoldedFile)>> = HashMap::new();
        for kv in self.meta.range(&self.keys.checkpoints()).await? {
            let (Some((topic, partition)), Ok(c)) = (
                self.keys.checkpoint_partition(&kv.key),
                Checkpoint::from_kv(&kv),
            ) else {
                continue;
            };
            files.entry(topic).or_default().extend(
                c.files
                    .into_iter()
                    .filter(|f| f.format == Format::Parquet)
                    .map(|f| (partition, f)),
            );
        }
        for topic in self.topics() {
            let Some(mut list) = files.remove(&topic.record.id) else {
                continue;
            };
            list.sort_by_key(|(p, f)| (*p, f.base_offset));
            if let Err(e) = self.publish_table(&root, &topic.record, &list).await {
                tracing::warn!(topic = %topic.record.name, error = %e,
                    "cannot publish the lake table");
            }
        }
        self.drop_deleted_tables().await
    }

    /// Deletes the tables of deleted topics: the metadata objects of their kept
    /// versions, then their `lake_table` key.
    async fn drop_deleted_tables(&self) -> Result<()> {
        let tables = self.meta.range(&self.keys.lake_tables()).await?;
        if tables.is_empty() {
            return Ok(());
        }
        // Topics as the store has them (this broker's catalog may lag behind).
        let (mut ids, mut names) = (HashSet::new(), HashSet::new());
        for kv in self.meta.range(&self.keys.topics()).await? {
            // An unreadable topic record must not make its table look deleted.
            let t = TopicRecord::from_kv(&kv)?;
            ids.insert(t.id);
            names.insert(t.name);
        }
        for kv in tables {
            let Some(id) = self.keys.lake_table_topic(&kv.key) else {
                continue;
            };
            if ids.contains(&id) {
                continue;
            }
            let Ok(state) = TableState::decode(&kv.value) else {
                continue;
            };
            let name = IcebergTable::topic_of(&state.metadata).map(str::to_string);
            let reused = name.as_ref().is_none_or(|n| names.contains(n));
            let mut objects: Vec<String> = state.history.into_iter().flatten().collect();
            if reused {
                objects.retain(|o| !IcebergTable::is_numbered(o));
            } else if let Some(name) = &name {
                objects.push(IcebergTable::new(name).version_hint());
            }
            for object in objects {
                match self.store.delete(&Path::from(object.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let txn = Txn::when(vec![Compare::ModRevision(kv.key.clone(), kv.mod_revision)])
                .then(vec![Op::Delete(kv.key)]);
            self.meta.txn(txn).await?;
            tracing::info!(topic = name.as_deref().unwrap_or("?"), %id,
                "deleted the lake table of a deleted topic");
        }
        Ok(())
    }

    async fn publish_table(
        &self,
        root: &str,
        topic: &TopicRecord,
        files: &[(i32, FoldedFile)],
    ) -> Result<()> {
        let key = self.keys.lake_table(topic.id);
        let (state, rev) = match self.meta.get(&key).await? {
            Some(kv) => (
                TableState::decode(&kv.value).unwrap_or_default(),
                kv.mod_revision,
            ),
            None => (TableState::default(), 0),
        };
        let digest = digest(files);
        if state.digest == digest {
            return Ok(());
        }
        let version = state.version + 1;
        let now = self.cfg.clock.now_ms();
        let snapshot_id = (now << 10) | (version & 1023);
        let table = IcebergTable::new(&topic.name);
        let id = Uuid::new_v4();

        let data_files: Vec<DataFile> = files
            .iter()
            .map(|(p, f)| DataFile {
                path: format!("{root}/{}", f.object),
                partition: *p,
                record_count: f.records as i64,
                file_size: f.object_len as i64,
                first_offset: f.base_offset,
                last_offset: f.last_offset,
            })
            .collect();
        let rows: i64 = data_files.iter().map(|f| f.record_count).sum();
        let manifest_key = table.manifest(id);
        let manifest = iceberg::manifest(snapshot_id, version, &data_files);
        let manifest_len = manifest.len() as i64;
        self.put_object(&manifest_key, manifest).await?;
        let list_key = table.manifest_list(snapshot_id, id);
        let parent = (state.version > 0).then_some(state.snapshot_id);
        let list = iceberg::manifest_list(
            snapshot_id,
            parent,
            version,
            &ManifestSummary {
                path: format!("{root}/{manifest_key}"),
                length: manifest_len,
                files: data_files.len() as i32,
                rows,
            },
        );
        self.put_object(&list_key, list).await?;

        let previous = if state.version > 0 {
            let bytes = self.store.get(&Path::from(state.metadata.as_str())).await?;
            serde_json::from_slice::<serde_json::Value>(&bytes.bytes().await?).ok()
        } else {
            None
        };
        let mut offsets: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for (p, f) in files {
            let o = offsets.entry(*p).or_insert((f.base_offset, f.last_offset));
            *o = (o.0.min(f.base_offset), o.1.max(f.last_offset));
        }
        let snapshot = Snapshot {
            id: snapshot_id,
            sequence_number: version,
            timestamp_ms: now,
            manifest_list: format!("{root}/{list_key}"),
            summary: offsets
                .iter()
                .map(|(p, (a, b))| (format!("sluice.partition.{p}.offsets"), format!("{a}-{b}")))
                .collect(),
            files: data_files.len() as i64,
            rows,
        };
        let metadata = iceberg::table_metadata(
            previous.as_ref(),
            (state.version > 0)
                .then(|| format!("{root}/{}", state.metadata))
                .as_deref(),
            &topic.id.to_string(),
            &format!("{root}/{}", table.location()),
            &snapshot,
        );
        let metadata = serde_json::to_vec_pretty(&metadata).unwrap_or_default();
        let metadata_key = table.metadata(version, id);
        self.put_object(&metadata_key, metadata.clone()).await?;

        let numbered = table.numbered_metadata(version);
        let mut history = state.history;
        history.push(vec![
            manifest_key,
            list_key,
            metadata_key.clone(),
            numbered.clone(),
        ]);
        let dropped: Vec<Vec<String>> = history
            .drain(..history.len().saturating_sub(VERSIONS_KEPT))
            .collect();
        let next = TableState {
            version,
            metadata: metadata_key,
            snapshot_id,
            digest,
            history,
        };
        let txn = Txn::when(vec![Compare::ModRevision(key.clone(), rev)])
            .then(vec![Op::put(key, next.encode())]);
        if !self.meta.txn(txn).await?.succeeded {
            return Ok(()); // another controller published; the next round looks again
        }
        self.put_object(&numbered, metadata).await?;
        self.put_object(&table.version_hint(), version.to_string().into_bytes())
            .await?;
        for object in dropped.into_iter().flatten() {
            if let Err(e) = self.store.delete(&Path::from(object.as_str())).await {
                tracing::debug!(%object, error = %e, "cannot delete old table metadata");
            }
        }
        tracing::info!(topic = %topic.name, version, files = files.len(), rows,
            "published the lake table");
        Ok(())
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.store.put(&Path::from(key), bytes.into()).await?;
        Ok(())
    }
}

/// Identifies a file list: its length and a CRC of its objects.
fn digest(files: &[(i32, FoldedFile)]) -> String {
    let mut crc = 0u32;
    for (_, f) in files {
        crc = crc32c::crc32c_append(crc, f.object.as_bytes());
        crc = crc32c::crc32c_append(crc, b"\n");
    }
    format!("{}-{crc:08x}", files.len())
}
