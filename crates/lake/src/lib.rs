//! The lake form of a partition's history: Parquet files that DuckDB, Spark, Trino,
//! polars and pyarrow read in place, and that Sluice serves Kafka fetches from.
//!
//! One file holds a contiguous run of one partition's offsets. A row is a record:
//! `partition`, `offset`, `timestamp` (epoch milliseconds, as consumers see it),
//! `timestamp_type` (`CreateTime` or `LogAppendTime`), `key`, `value` (null for a
//! null key or a tombstone) and `headers` (a list of `{key, value}`, order and repeats
//! kept). Every field carries an Iceberg field id, so an Iceberg table can adopt the
//! files as they are. Row groups hold about [`WriteOptions::row_group_bytes`] of
//! record data, with min/max statistics on every column (offsets and timestamps
//! included), so engines skip row groups by offset or time.
//!
//! Invariants:
//! - [`read_row_group`] returns exactly the records [`write`] was given for that row
//!   group: offsets, timestamps and their type, keys, values and headers.
//! - A malformed or foreign file is an error, never a panic.

pub mod iceberg;

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::reader::{get_typed_column_reader, ColumnReader};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
pub use parquet::file::metadata::ParquetMetaData;
use parquet::file::metadata::{ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length, RowGroupReader};
use parquet::file::serialized_reader::SerializedRowGroupReader;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
pub use sluice_protocol::records::Record;

/// The Parquet schema of a lake file. Field ids are the Iceberg ones.
pub const SCHEMA: &str = "message kafka_record {
  required int32 partition = 1;
  required int64 offset = 2;
  required int64 timestamp = 3;
  required binary timestamp_type (STRING) = 4;
  optional binary key = 5;
  optional binary value = 6;
  required group headers (LIST) = 7 {
    repeated group list {
      required group element = 8 {
        required binary key (STRING) = 9;
        optional binary value = 10;
      }
    }
  }
}";

const COLUMNS: usize = 8;
const OFFSET_COLUMN: usize = 1;
const TIMESTAMP_COLUMN: usize = 2;
const CREATE_TIME: &str = "CreateTime";
const LOG_APPEND_TIME: &str = "LogAppendTime";
/// The fixed tail of a Parquet file: metadata length and magic.
pub const FOOTER_TAIL: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("not a lake file: {0}")]
    Malformed(String),
}

pub type Result<T> = std::result::Result<T, LakeError>;

fn malformed(what: impl Into<String>) -> LakeError {
    LakeError::Malformed(what.into())
}

/// How files are cut into row groups.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Record bytes (keys, values, headers) per row group, before compression.
    pub row_group_bytes: usize,
}

impl Default for WriteOptions {
    /// 8 MiB of record data per row group: large enough for column statistics and
    /// scans to pay off, small enough that a Kafka fetch (which decodes the whole
    /// row group holding its offset) stays cheap.
    fn default() -> Self {
        Self {
            row_group_bytes: 8 << 20,
        }
    }
}

/// Writes `records` (one partition's, offsets ascending) as one Parquet file.
pub fn write(partition: i32, records: &[Record], options: WriteOptions) -> Result<Bytes> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(props))?;
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut size = 0usize;
        while end < records.len() && (end == start || size < options.row_group_bytes) {
            size += record_size(&records[end]);
            end += 1;
        }
        write_row_group(&mut writer, partition, &records[start..end])?;
        start = end;
    }
    Ok(Bytes::from(writer.into_inner()?))
}

fn record_size(r: &Record) -> usize {
    let field = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    24 + field(&r.key)
        + field(&r.value)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + field(v))
            .sum::<usize>()
}

fn write_row_group(
    writer: &mut SerializedFileWriter<Vec<u8>>,
    partition: i32,
    rows: &[Record],
) -> Result<()> {
    let mut rg = writer.next_row_group()?;
    let mut column = 0;
    while let Some(mut col) = rg.next_column()? {
        match column {
            0 => put::<Int32Type>(&mut col, &vec![partition; rows.len()], None, None)?,
            1 => {
                let v: Vec<i64> = rows.iter().map(|r| r.offset).collect();
                put::<Int64Type>(&mut col, &v, None, None)?;
            }
            2 => {
                let v: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
                put::<Int64Type>(&mut col, &v, None, None)?;
            }
            3 => {
                let v: Vec<ByteArray> = rows
                    .iter()
                    .map(|r| {
                        ByteArray::from(if r.log_append_time {
                            LOG_APPEND_TIME
                        } else {
                            CREATE_TIME
                        })
                    })
                    .collect();
                put::<ByteArrayType>(&mut col, &v, None, None)?;
            }
            4 | 5 => {
                let field = |r: &Record| if column == 4 { &r.key } else { &r.value }.clone();
                let def: Vec<i16> = rows.iter().map(|r| i16::from(field(r).is_some())).collect();
                let v: Vec<ByteArray> =
                    rows.iter().filter_map(field).map(ByteArray::from).collect();
                put::<ByteArrayType>(&mut col, &v, Some(&def), None)?;
            }
            6 | 7 => {
                // headers.list.element.key (max def 1) and .value (max def 2), one
                // level per header, or one level 0 for a record without headers.
                let (mut def, mut rep, mut v) = (Vec::new(), Vec::new(), Vec::new());
                for r in rows {
                    if r.headers.is_empty() {
                        def.push(0);
                        rep.push(0);
                    }
                    for (i, (k, val)) in r.headers.iter().enumerate() {
                        rep.push(i16::from(i > 0));
                        if column == 6 {
                            def.push(1);
                            v.push(ByteArray::from(k.clone()));
                        } else if let Some(val) = val {
                            def.push(2);
                            v.push(ByteArray::from(val.clone()));
                        } else {
                            def.push(1);
                        }
                    }
                }
                put::<ByteArrayType>(&mut col, &v, Some(&def), Some(&rep))?;
            }
            _ => return Err(malformed("schema has more columns than expected")),
        }
        col.close()?;
        column += 1;
    }
    rg.close()?;
    Ok(())
}

fn put<T: DataType>(
    col: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    values: &[T::T],
    def: Option<&[i16]>,
    rep: Option<&[i16]>,
) -> Result<()>
where
    T::T: Clone,
{
    col.typed::<T>().write_batch(values, def, rep)?;
    Ok(())
}

/// Where a file's metadata lies, from its last [`FOOTER_TAIL`] bytes.
pub fn metadata_range(tail: &[u8], file_len: u64) -> Result<Range<u64>> {
    let Some(tail) = tail
        .get(tail.len().saturating_sub(8)..)
        .filter(|t| t.len() == 8)
    else {
        return Err(malformed("file shorter than its footer"));
    };
    if &tail[4..] != b"PAR1" {
        return Err(malformed("no parquet magic at the end"));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let end = file_len
        .checked_sub(FOOTER_TAIL)
        .ok_or_else(|| malformed("file too short"))?;
    let start = end
        .checked_sub(len)
        .ok_or_else(|| malformed("metadata longer than the file"))?;
    Ok(start..end)
}

/// A file's metadata, from the bytes [`metadata_range`] names.
pub fn decode_metadata(bytes: &[u8]) -> Result<ParquetMetaData> {
    let meta = ParquetMetaDataReader::decode_metadata(bytes)?;
    if meta.file_metadata().schema_descr().num_columns() != COLUMNS {
        return Err(malformed("unexpected column count"));
    }
    Ok(meta)
}

/// What a row group holds and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupSpan {
    pub index: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub rows: i64,
    /// The byte range of its column chunks in the file.
    pub range: Range<u64>,
}

/// The row groups of a file, from their statistics.
pub fn row_groups(meta: &ParquetMetaData) -> Result<Vec<RowGroupSpan>> {
    meta.row_groups()
        .iter()
        .enumerate()
        .map(|(index, rg)| {
            let stats = |c: usize| match rg.columns().get(c).and_then(|c| c.statistics()) {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => Ok((*min, *max)),
                    _ => Err(malformed("row group without min/max statistics")),
                },
                _ => Err(malformed("row group without int64 statistics")),
            };
            let (base_offset, last_offset) = stats(OFFSET_COLUMN)?;
            let (_, max_timestamp) = stats(TIMESTAMP_COLUMN)?;
            Ok(RowGroupSpan {
                index,
                base_offset,
                last_offset,
                max_timestamp,
                rows: rg.num_rows(),
                range: chunk_range(rg)?,
            })
        })
        .collect()
}

fn chunk_range(rg: &RowGroupMetaData) -> Result<Range<u64>> {
    let mut range: Option<Range<u64>> = None;
    for c in rg.columns() {
        let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
        let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(c.compressed_size()))
        else {
            return Err(malformed("negative column chunk offset"));
        };
        let end = start
            .checked_add(len)
            .ok_or_else(|| malformed("column chunk overflows"))?;
        range = Some(match range {
            None => start..end,
            Some(r) => r.start.min(start)..r.end.max(end),
        });
    }
    range.ok_or_else(|| malformed("row group without columns"))
}

/// The records of row group `index`, decoded from `chunks`: the file's bytes at
/// `chunks_start..` covering the row group's [`RowGroupSpan::range`].
pub fn read_row_group(
    meta: &ParquetMetaData,
    index: usize,
    chunks_start: u64,
    chunks: Bytes,
    file_len: u64,
) -> Result<Vec<Record>> {
    let rg_meta = meta
        .row_groups()
        .get(index)
        .ok_or_else(|| malformed(format!("no row group {index}")))?;
    let rows = usize::try_from(rg_meta.num_rows()).map_err(|_| malformed("negative rows"))?;
    let reader = Arc::new(Window {
        start: chunks_start,
        bytes: chunks,
        file_len,
    });
    let rg = SerializedRowGroupReader::new(
        reader,
        rg_meta,
        meta.page_index_for_row_group(index),
        Arc::new(parquet::file::properties::ReaderProperties::builder().build()),
    )?;
    let partition = read_column::<Int32Type>(&rg, 0, rows)?;
    let offsets = read_column::<Int64Type>(&rg, 1, rows)?;
    let timestamps = read_column::<Int64Type>(&rg, 2, rows)?;
    let types = read_column::<ByteArrayType>(&rg, 3, rows)?;
    let keys = read_column::<ByteArrayType>(&rg, 4, rows)?;
    let values = read_column::<ByteArrayType>(&rg, 5, rows)?;
    let header_keys = read_column::<ByteArrayType>(&rg, 6, rows)?;
    let header_values = read_column::<ByteArrayType>(&rg, 7, rows)?;
    for c in [
        &partition.values.len(),
        &offsets.values.len(),
        &timestamps.values.len(),
        &types.values.len(),
    ] {
        if *c != rows {
            return Err(malformed("required column with missing values"));
        }
    }
    let mut key_values = keys.optional();
    let mut value_values = values.optional();
    let mut headers = HeaderCursor {
        keys: &header_keys,
        values: &header_values,
        level: 0,
        key: 0,
        value: 0,
    };
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        out.push(Record {
            offset: offsets.values[i],
            timestamp: timestamps.values[i],
            log_append_time: types.values[i].data() == LOG_APPEND_TIME.as_bytes(),
            key: key_values
                .next()
                .ok_or_else(|| malformed("key levels short"))?,
            value: value_values
                .next()
                .ok_or_else(|| malformed("value levels short"))?,
            headers: headers.next_row()?,
        });
    }
    Ok(out)
}

/// One column chunk's values and levels.
struct Column<T> {
    values: Vec<T>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

impl Column<ByteArray> {
    /// An optional, non-repeated column's values, with `None` where null.
    fn optional(&self) -> impl Iterator<Item = Option<Bytes>> + '_ {
        let mut v = self.values.iter();
        self.def.iter().map(move |d| {
            if *d > 0 {
                v.next().map(|b| Bytes::copy_from_slice(b.data()))
            } else {
                None
            }
        })
    }
}

fn read_column<T: DataType>(
    rg: &SerializedRowGroupReader<'_, Window>,
    index: usize,
    rows: usize,
) -> Result<Column<T::T>>
where
    T::T: Default + Clone,
{
    let reader: ColumnReader = rg.get_column_reader(index)?;
    let mut typed = get_typed_column_reader::<T>(reader);
    let mut col = Column {
        values: Vec::new(),
        def: Vec::new(),
        rep: Vec::new(),
    };
    let mut read = 0;
    while read < rows {
        let (records, _, _) = typed.read_records(
            rows - read,
            Some(&mut col.def),
            Some(&mut col.rep),
            &mut col.values,
        )?;
        if records == 0 {
            return Err(malformed(format!("column {index} ends early")));
        }
        read += records;
    }
    Ok(col)
}

/// Walks the two header leaf columns row by row.
struct HeaderCursor<'a> {
    keys: &'a Column<ByteArray>,
    values: &'a Column<ByteArray>,
    level: usize,
    key: usize,
    value: usize,
}

impl HeaderCursor<'_> {
    fn next_row(&mut self) -> Result<Vec<(Bytes, Option<Bytes>)>> {
        let short = || malformed("header levels short");
        let mut out = Vec::new();
        let def = *self.keys.def.get(self.level).ok_or_else(short)?;
        if def == 0 {
            self.level += 1;
            return Ok(out);
        }
        loop {
            let key = self.keys.values.get(self.key).ok_or_else(short)?;
            self.key += 1;
            let value = match self.values.def.get(self.level) {
                Some(2) => {
                    let v = self.values.values.get(self.value).ok_or_else(short)?;
                    self.value += 1;
                    Some(Bytes::copy_from_slice(v.data()))
                }
                Some(_) => None,
                None => return Err(short()),
            };
            out.push((Bytes::copy_from_slice(key.data()), value));
            self.level += 1;
            if self.keys.rep.get(self.level).is_none_or(|r| *r == 0) {
                return Ok(out);
            }
        }
    }
}

/// The part of a file a row group needs, as the reader's view of the whole file.
struct Window {
    start: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Window {
    fn slice(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .and_then(|f| usize::try_from(f).ok())
            .filter(|f| {
                f.checked_add(len)
                    .is_some_and(|end| end <= self.bytes.len())
            })
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "read of {len} bytes at {start} outside the fetched range"
                ))
            })?;
        Ok(self.bytes.slice(from..from + len))
    }
}

impl Length for Window {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for Window {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let len = (self.start + self.bytes.len() as u64).saturating_sub(start) as usize;
        Ok(self.slice(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: i64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                offset: 1_000 + i * 2,
                timestamp: 1_700_000_000_000 + i,
                log_append_time: i % 5 == 0,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 7 != 0).then(|| Bytes::from(vec![(i % 251) as u8; (i % 300) as usize])),
                headers: (0..(i % 4))
                    .map(|h| {
                        (
                            Bytes::from(if h == 2 {
                                "dup".to_owned()
                            } else {
                                format!("h{}", h % 2)
                            }),
                            (h != 1).then(|| Bytes::from(format!("v{i}-{h}"))),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    fn read_all(file: &Bytes) -> Vec<Record> {
        let len = file.len() as u64;
        let range = metadata_range(&file[file.len() - 8..], len).expect("footer");
        let meta = decode_metadata(&file[range.start as usize..range.end as usize]).expect("meta");
        let mut out = Vec::new();
        for span in row_groups(&meta).expect("row groups") {
            let chunk = file.slice(span.range.start as usize..span.range.end as usize);
            let rows =
                read_row_group(&meta, span.index, span.range.start, chunk, len).expect("rows");
            assert_eq!(rows.first().map(|r| r.offset), Some(span.base_offset));
            assert_eq!(rows.last().map(|r| r.offset), Some(span.last_offset));
            assert_eq!(
                rows.iter().map(|r| r.timestamp).max(),
                Some(span.max_timestamp)
            );
            out.extend(rows);
        }
        out
    }

    #[test]
    fn round_trip_across_row_groups() {
        let input = records(5_000);
        let file = write(
            3,
            &input,
            WriteOptions {
                row_group_bytes: 100_000,
            },
        )
        .expect("writes");
        let len = file.len() as u64;
        let range = metadata_range(&file[file.len() - 8..], len).expect("footer");
        let meta = decode_metadata(&file[range.start as usize..range.end as usize]).expect("meta");
        assert!(
            meta.num_row_groups() > 3,
            "{} row groups",
            meta.num_row_groups()
        );
        assert_eq!(read_all(&file), input);
    }

    #[test]
    fn a_row_group_needs_only_its_own_bytes() {
        let input = records(2_000);
        let file = write(
            0,
            &input,
            WriteOptions {
                row_group_bytes: 50_000,
            },
        )
        .expect("writes");
        let len = file.len() as u64;
        let range = metadata_range(&file[file.len() - 8..], len).expect("footer");
        let meta = decode_metadata(&file[range.start as usize..range.end as usize]).expect("meta");
        let spans = row_groups(&meta).expect("spans");
        let s = &spans[1];
        let chunk = file.slice(s.range.start as usize..s.range.end as usize);
        let rows = read_row_group(&meta, 1, s.range.start, chunk.clone(), len).expect("rows");
        assert_eq!(rows.len() as i64, s.rows);
        // Bytes not covering the row group are an error, not a panic.
        let short = chunk.slice(..chunk.len() / 2);
        assert!(read_row_group(&meta, 1, s.range.start, short, len).is_err());
        assert!(read_row_group(&meta, 99, s.range.start, chunk, len).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(metadata_range(b"xxxxxxxx", 8).is_err());
        assert!(metadata_range(&[255, 255, 255, 0, b'P', b'A', b'R', b'1'], 100).is_err());
        assert!(decode_metadata(b"not thrift at all").is_err());
    }
}
