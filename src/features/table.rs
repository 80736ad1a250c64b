//! The feature table on disk (docs/features.md): Parquet, one row per tick,
//! `ts_ms` (i64, exchange time), `symbol` (utf8), then the 112 features by
//! name as f32; zstd. Written under a temporary name in the same folder,
//! fsynced, renamed, folder fsynced: a reader never sees a torn file.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::batch::FeatureTable;
use super::names::{FEATURE_NAMES, NUM_FEATURES};
use super::FeatureError;
use crate::fsutil::{split_path, TempFile};

const BATCH_ROWS: usize = 65_536;

/// The table's Arrow schema.
pub fn table_schema() -> SchemaRef {
    let mut fields = vec![Field::new("ts_ms", DataType::Int64, false), Field::new("symbol", DataType::Utf8, false)];
    fields.extend(FEATURE_NAMES.iter().map(|n| Field::new(*n, DataType::Float32, false)));
    Arc::new(Schema::new(fields))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FeatureError + '_ {
    move |source| FeatureError::Io { path: path.to_path_buf(), source }
}

fn pq(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> FeatureError + '_ {
    move |source| FeatureError::Parquet { path: path.to_path_buf(), source }
}

/// Writes `table` for `symbol` to `path`, atomically (`fsutil::TempFile`).
pub fn write_feature_table(path: &Path, symbol: &str, table: &FeatureTable) -> Result<(), FeatureError> {
    let (dir, name) = split_path(path).map_err(io(path))?;
    let (tmp, file) = TempFile::create(dir, &name).map_err(io(dir))?;
    let file = write_to(file, tmp.path(), symbol, table)?;
    tmp.persist(file, path).map_err(io(path))
}

/// Writes the table through `file` (at `tmp`, named in errors) and hands the file back.
fn write_to(file: File, tmp: &Path, symbol: &str, table: &FeatureTable) -> Result<File, FeatureError> {
    let schema = table_schema();
    let props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(pq(tmp))?)).build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq(tmp))?;
    let n = table.len();
    let mut start = 0;
    while start < n {
        let end = (start + BATCH_ROWS).min(n);
        let rows = &table.rows[start..end];
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(2 + NUM_FEATURES);
        cols.push(Arc::new(Int64Array::from(table.ts_ms[start..end].to_vec())));
        cols.push(Arc::new(StringArray::from(vec![symbol; end - start])));
        for j in 0..NUM_FEATURES {
            cols.push(Arc::new(Float32Array::from(rows.iter().map(|r| r[j] as f32).collect::<Vec<f32>>())));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| FeatureError::Table { path: tmp.to_path_buf(), problem: e.to_string() })?;
        w.write(&batch).map_err(pq(tmp))?;
        start = end;
    }
    w.into_inner().map_err(pq(tmp))
}

/// A feature table read back: row-major f32 values, `NUM_FEATURES` a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureFile {
    pub symbol: String,
    pub ts_ms: Vec<i64>,
    pub values: Vec<f32>,
}

impl FeatureFile {
    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    /// Row `i`'s 112 values.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * NUM_FEATURES..(i + 1) * NUM_FEATURES]
    }
}

/// Reads a table written by [`write_feature_table`], checking every column
/// by name and type and that every row has the same symbol.
pub fn read_feature_table(path: &Path) -> Result<FeatureFile, FeatureError> {
    let file = File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq(path))?.build().map_err(pq(path))?;
    let bad = |problem: String| FeatureError::Table { path: path.to_path_buf(), problem };
    let mut out = FeatureFile::default();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let col = |name: &str, ty: DataType| -> Result<&ArrayRef, FeatureError> {
            let c = batch.column_by_name(name).ok_or_else(|| bad(format!("missing column {name}")))?;
            if c.data_type() != &ty {
                return Err(bad(format!("column {name} has type {}, expected {ty}", c.data_type())));
            }
            if c.null_count() > 0 {
                return Err(bad(format!("column {name} has nulls")));
            }
            Ok(c)
        };
        let ts = col("ts_ms", DataType::Int64)?;
        let ts = ts.as_any().downcast_ref::<Int64Array>().ok_or_else(|| bad("column ts_ms is not Int64".into()))?;
        let sym = col("symbol", DataType::Utf8)?;
        let sym = sym.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad("column symbol is not Utf8".into()))?;
        let mut feats = Vec::with_capacity(NUM_FEATURES);
        for name in FEATURE_NAMES {
            let c = col(name, DataType::Float32)?;
            let c = c
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad(format!("column {name} is not Float32")))?;
            feats.push(c.values().as_ref());
        }
        for r in 0..batch.num_rows() {
            let s = sym.value(r);
            if out.symbol.is_empty() && out.ts_ms.is_empty() {
                out.symbol = s.to_owned();
            } else if s != out.symbol {
                return Err(bad(format!("column symbol: row {} is {s:?}, expected {:?}", out.len(), out.symbol)));
            }
            out.ts_ms.push(ts.value(r));
            out.values.extend(feats.iter().map(|c| c[r]));
        }
    }
    Ok(out)
}
