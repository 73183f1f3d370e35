//! Column tables written as Parquet (arrow-rs) and CSV.
//!
//! Stages exchange small, typed tables: text columns, integer codes, probabilities. [`Table`]
//! keeps them column-major in plain vectors; [`Table::write_parquet`] and
//! [`Table::read_parquet`] convert through Arrow record batches, so the files open in pandas,
//! polars or duckdb. A column isco-dag only passes through — a user's own `id` or date column
//! beside the job titles — is kept as the Arrow array it was read as ([`Column::Arrow`]), so a
//! Parquet file coded to Parquet gets its columns back with their types and nulls.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

pub use crate::encoding::TextEncoding;
use crate::error::{Error, IoContext, Result};

/// One typed column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// UTF-8 text.
    Str(Vec<String>),
    /// 64-bit integers.
    Int(Vec<i64>),
    /// 64-bit floats.
    Float(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Any Arrow array, kept with its type and its nulls: a column read from someone else's
    /// Parquet file and handed back unchanged.
    Arrow(ArrayRef),
    /// Another column whose rows marked `false` in the mask hold no value: null in Parquet,
    /// an empty cell in CSV (a confidence for a row that could not be coded).
    Nullable(Box<Column>, Vec<bool>),
}

impl Column {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Arrow(a) => a.len(),
            Column::Nullable(c, _) => c.len(),
        }
    }

    /// Whether the column is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `i` as text (for CSV).
    pub fn cell(&self, i: usize) -> String {
        match self {
            Column::Str(v) => v[i].clone(),
            Column::Int(v) => v[i].to_string(),
            Column::Float(v) => format!("{:.6}", v[i]),
            Column::Bool(v) => v[i].to_string(),
            Column::Arrow(a) => arrow_text(&a.slice(i, 1))
                .ok()
                .and_then(|mut v| v.pop())
                .unwrap_or_default(),
            Column::Nullable(c, valid) => {
                if valid[i] {
                    c.cell(i)
                } else {
                    String::new()
                }
            }
        }
    }

    /// Every value as text, as a CSV output writes it: Arrow's text for an
    /// [`Column::Arrow`] (`1.5`, `2024-01-31`), an empty string for a null.
    pub fn texts(&self) -> std::result::Result<Vec<String>, arrow::error::ArrowError> {
        match self {
            Column::Str(v) => Ok(v.clone()),
            Column::Arrow(a) => arrow_text(a),
            other => Ok((0..other.len()).map(|i| other.cell(i)).collect()),
        }
    }

    /// The rows at `rows`, in that order.
    pub fn take(&self, rows: &[usize]) -> Column {
        match self {
            Column::Str(v) => Column::Str(rows.iter().map(|&i| v[i].clone()).collect()),
            Column::Int(v) => Column::Int(rows.iter().map(|&i| v[i]).collect()),
            Column::Float(v) => Column::Float(rows.iter().map(|&i| v[i]).collect()),
            Column::Bool(v) => Column::Bool(rows.iter().map(|&i| v[i]).collect()),
            Column::Arrow(a) => {
                let idx =
                    arrow::array::UInt64Array::from_iter_values(rows.iter().map(|&i| i as u64));
                Column::Arrow(arrow::compute::take(a, &idx, None).expect("row indices in range"))
            }
            Column::Nullable(c, valid) => Column::Nullable(
                Box::new(c.take(rows)),
                rows.iter().map(|&i| valid[i]).collect(),
            ),
        }
    }

    /// Rows `start..start + len` of the column as an Arrow array, made from those rows alone.
    fn range_to_arrow(&self, start: usize, len: usize) -> ArrayRef {
        let range = start..start + len;
        let part = match self {
            Column::Str(v) => {
                return Arc::new(StringArray::from_iter_values(v[range].iter()));
            }
            Column::Int(v) => Column::Int(v[range].to_vec()),
            Column::Float(v) => Column::Float(v[range].to_vec()),
            Column::Bool(v) => Column::Bool(v[range].to_vec()),
            Column::Arrow(a) => return a.slice(start, len),
            Column::Nullable(c, valid) => {
                let data = c
                    .range_to_arrow(start, len)
                    .into_data()
                    .into_builder()
                    .nulls(Some(arrow::buffer::NullBuffer::from(valid[range].to_vec())))
                    .build()
                    .expect("a mask as long as its column");
                return arrow::array::make_array(data);
            }
        };
        part.to_arrow().1
    }

    /// The Arrow type of the column's values.
    fn arrow_type(&self) -> DataType {
        match self {
            Column::Str(_) => DataType::Utf8,
            Column::Int(_) => DataType::Int64,
            Column::Float(_) => DataType::Float64,
            Column::Bool(_) => DataType::Boolean,
            Column::Arrow(a) => a.data_type().clone(),
            Column::Nullable(c, _) => c.arrow_type(),
        }
    }

    /// How many rows hold no value.
    fn null_count(&self) -> usize {
        match self {
            Column::Arrow(a) => a.null_count(),
            Column::Nullable(_, valid) => valid.iter().filter(|v| !**v).count(),
            _ => 0,
        }
    }

    /// This column as an Arrow array with its type (an [`Column::Arrow`] as it is).
    pub fn to_arrow_array(&self) -> ArrayRef {
        self.to_arrow().1
    }

    fn to_arrow(&self) -> (DataType, ArrayRef) {
        match self {
            Column::Str(v) => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(v.iter())),
            ),
            Column::Int(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Column::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            Column::Arrow(a) => (a.data_type().clone(), a.clone()),
            Column::Nullable(c, valid) => {
                let (t, a) = c.to_arrow();
                let data = a
                    .into_data()
                    .into_builder()
                    .nulls(Some(arrow::buffer::NullBuffer::from(valid.clone())))
                    .build()
                    .expect("a mask as long as its column");
                (t, arrow::array::make_array(data))
            }
        }
    }
}

/// Each value of `arr` as text, the way Arrow casts it to a string (`1.5`, `2024-01-31`), a
/// null as an empty string.
fn arrow_text(arr: &ArrayRef) -> std::result::Result<Vec<String>, arrow::error::ArrowError> {
    let arr = &castable_bytes(arr);
    if !arrow::compute::can_cast_types(arr.data_type(), &DataType::Utf8) {
        // A struct or map has no cast to text; Arrow's display of it (`{x: 1}`) is what a
        // CSV output can hold of a column passed through unchanged.
        let options = arrow::util::display::FormatOptions::default();
        let f = arrow::util::display::ArrayFormatter::try_new(arr.as_ref(), &options)?;
        return Ok((0..arr.len())
            .map(|j| {
                if arr.is_valid(j) {
                    f.value(j).to_string()
                } else {
                    String::new()
                }
            })
            .collect());
    }
    let c = arrow::compute::cast(arr, &DataType::Utf8)?;
    let a = c.as_any().downcast_ref::<StringArray>().expect("utf8");
    Ok((0..a.len())
        .map(|j| {
            if a.is_valid(j) {
                a.value(j).to_string()
            } else {
                String::new()
            }
        })
        .collect())
}

/// Rows per Parquet row group (arrow-rs's default).
const ROW_GROUP_ROWS: usize = 1 << 20;

/// A named-column table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Columns in order.
    pub columns: Vec<(String, Column)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column (builder style).
    pub fn with(mut self, name: &str, col: Column) -> Self {
        self.columns.push((name.to_string(), col));
        self
    }

    /// Number of rows (of the first column).
    pub fn num_rows(&self) -> usize {
        self.columns.first().map(|(_, c)| c.len()).unwrap_or(0)
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// A text column by name, or an error naming the table file.
    pub fn str_col(&self, name: &str, path: &Path) -> Result<&[String]> {
        match self.column(name) {
            Some(Column::Str(v)) => Ok(v),
            _ => Err(self.missing(name, "text", path)),
        }
    }

    /// An integer column by name, or an error naming the table file.
    pub fn int_col(&self, name: &str, path: &Path) -> Result<&[i64]> {
        match self.column(name) {
            Some(Column::Int(v)) => Ok(v),
            _ => Err(self.missing(name, "integer", path)),
        }
    }

    /// A float column by name, or an error naming the table file.
    pub fn float_col(&self, name: &str, path: &Path) -> Result<&[f64]> {
        match self.column(name) {
            Some(Column::Float(v)) => Ok(v),
            _ => Err(self.missing(name, "float", path)),
        }
    }

    fn missing(&self, name: &str, ty: &str, path: &Path) -> Error {
        let have: Vec<_> = self.columns.iter().map(|(n, _)| n.as_str()).collect();
        Error::Table {
            action: "read",
            path: path.to_path_buf(),
            message: format!(
                "it has no {ty} column `{name}` (columns: {}); was it written by the expected stage?",
                have.join(", ")
            ),
        }
    }

    /// Writes the table as Parquet (snappy), encoding the columns in parallel (rayon).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        self.write_parquet_groups(path, ROW_GROUP_ROWS)
    }

    /// The table as the bytes of a Parquet file (snappy), for an answer that never touches
    /// the disk.
    pub fn to_parquet_bytes(&self) -> Result<Vec<u8>> {
        self.write_parquet_to(Vec::new(), Path::new("(in memory)"), ROW_GROUP_ROWS)
    }

    fn write_parquet_groups(&self, path: &Path, rg_rows: usize) -> Result<()> {
        let file = File::create(path).io("create", path)?;
        self.write_parquet_to(file, path, rg_rows).map(drop)
    }

    /// Writes the table as Parquet into `out` (`path` names it in errors) and hands `out`
    /// back with the file's footer written.
    fn write_parquet_to<W: std::io::Write + Send>(
        &self,
        out: W,
        path: &Path,
        rg_rows: usize,
    ) -> Result<W> {
        let err = |message: String| Error::Table {
            action: "write",
            path: path.to_path_buf(),
            message,
        };
        // Nullable exactly when a value is missing, so the schema follows the data: the
        // shards of a file and the file coded whole get the same one.
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, col)| Field::new(name, col.arrow_type(), col.null_count() > 0))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let rows = self.num_rows();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(rg_rows))
            .build();
        let rg_rows = rg_rows.max(1);
        let pq = |e: parquet::errors::ParquetError| err(e.to_string());
        let (mut writer, factory) = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(pq)?;
        // Which column of the table each of the file's leaf columns belongs to (a list or
        // struct column has several leaves, written by one writer each).
        let descr = writer.schema_descr();
        let roots: Vec<usize> = (0..descr.num_columns())
            .map(|leaf| descr.get_column_root_idx(leaf))
            .collect();
        // Columns are made Arrow arrays, encoded and compressed in parallel (one task per
        // column), then appended to the row group in schema order. Each task makes its own
        // column's array of the row group's rows and drops it once encoded, so a large
        // table is never held twice, not even one row group of it.
        let (mut start, mut rg) = (0, 0);
        while start < rows {
            let len = rg_rows.min(rows - start);
            let mut writers: Vec<Vec<_>> = self.columns.iter().map(|_| Vec::new()).collect();
            for (w, &root) in factory
                .create_column_writers(rg)
                .map_err(pq)?
                .into_iter()
                .zip(&roots)
            {
                writers[root].push(w);
            }
            let chunks = writers
                .into_par_iter()
                .zip(self.columns.par_iter())
                .zip(schema.fields().par_iter())
                .map(|((writers, (_, c)), field)| {
                    let array = c.range_to_arrow(start, len);
                    debug_assert_eq!(array.data_type(), field.data_type());
                    writers
                        .into_iter()
                        .zip(compute_leaves(field, &array)?)
                        .map(|(mut w, leaf)| {
                            w.write(&leaf)?;
                            w.close()
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(pq)?
                .into_iter()
                .flatten();
            let mut group = writer.next_row_group().map_err(pq)?;
            for c in chunks {
                c.append_to_row_group(&mut group).map_err(pq)?;
            }
            group.close().map_err(pq)?;
            start += len;
            rg += 1;
        }
        writer.into_inner().map_err(pq)
    }

    /// Reads a Parquet file. Integer columns of any width become [`Column::Int`], floats
    /// [`Column::Float`], strings [`Column::Str`] (nulls become empty strings).
    pub fn read_parquet(path: &Path) -> Result<Table> {
        Self::read_parquet_typed(path, false, None)
    }

    /// Reads a Parquet file someone else wrote, every column as text, so that each value
    /// comes back as written: a null is an empty string (not a number standing in for it), a
    /// float keeps its shortest form (`1.5`, not `1.500000`), and dates, decimals and
    /// dictionary-encoded columns read as their text.
    pub fn read_parquet_as_text(path: &Path) -> Result<Table> {
        Self::read_parquet_typed(path, true, None)
    }

    /// [`Table::read_parquet_as_text`] of the rows `keep` takes (by their 0-based position
    /// in the file) alone: the file is read a batch at a time and only those rows are held,
    /// so a shard's memory follows its share of the file.
    pub fn read_parquet_rows_as_text(path: &Path, keep: &dyn Fn(usize) -> bool) -> Result<Table> {
        Self::read_parquet_typed(path, true, Some(keep))
    }

    /// Reads a Parquet file with every column as the Arrow array it holds
    /// ([`Column::Arrow`]): types, nulls and the text of every value as they are.
    pub fn read_parquet_as_arrow(path: &Path) -> Result<Table> {
        let (schema, batches) = parquet_batches(path, None)?;
        Self::arrow_table_of(schema, batches.collect::<Result<_>>()?, path)
    }

    /// [`Table::read_parquet_as_arrow`] of the rows `keep` takes alone, as
    /// [`Table::read_parquet_rows_as_text`] reads them.
    pub fn read_parquet_rows_as_arrow(path: &Path, keep: &dyn Fn(usize) -> bool) -> Result<Table> {
        let (schema, batches) = parquet_batches(path, Some(keep))?;
        Self::arrow_table_of(schema, batches.collect::<Result<_>>()?, path)
    }

    /// Reads Parquet held in memory that someone else sent (an upload) like
    /// [`Table::read_parquet_as_arrow`], within bounds: at most `max_rows` rows, and at most
    /// `max_bytes` of data both as stored uncompressed and as decoded. `source` names it in
    /// errors; a file past a bound is [`Error::TooLarge`], found before its rows are decoded
    /// where the footer tells.
    ///
    /// A few compressed bytes can decode to gigabytes (a long value repeated, or one
    /// dictionary entry that every row points to), so the footer's sizes alone do not bound
    /// the decoded table. Rows are therefore decoded a few at a time — so few that one
    /// batch cannot pass `max_bytes` even if each of its rows held a whole column chunk — and
    /// the total is checked after each batch.
    pub fn read_parquet_upload(
        bytes: impl parquet::file::reader::ChunkReader + 'static,
        source: &Path,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Table> {
        let too_large = |message: String| Error::TooLarge {
            path: source.to_path_buf(),
            message,
        };
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::Table {
                action: "read",
                path: source.to_path_buf(),
                message: format!("{e}; is it a Parquet file?"),
            })?;
        let meta = builder.metadata().clone();
        let rows = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(usize::MAX);
        if rows > max_rows {
            return Err(too_large(format!(
                "it has {rows} rows, more than the {max_rows} allowed; split it"
            )));
        }
        let stored: usize = meta
            .row_groups()
            .iter()
            .flat_map(|g| g.columns())
            .map(|c| usize::try_from(c.uncompressed_size()).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add);
        if stored > max_bytes {
            return Err(too_large(format!(
                "it holds {:.1} MiB of data uncompressed, more than the {:.1} MiB allowed; split it",
                mib(stored),
                mib(max_bytes)
            )));
        }
        let batch_rows = (max_bytes / stored.max(1)).clamp(1, 65536);
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| Error::Table {
                action: "read",
                path: source.to_path_buf(),
                message: e.to_string(),
            })?;
        let schema = reader.schema();
        let (mut batches, mut decoded) = (Vec::new(), 0usize);
        for batch in reader {
            let batch = batch.map_err(|e| Error::Table {
                action: "read",
                path: source.to_path_buf(),
                message: unreadable(&e),
            })?;
            decoded += batch.get_array_memory_size();
            if decoded > max_bytes.saturating_mul(4) {
                return Err(too_large(format!(
                    "its values take more than {:.1} MiB once decompressed, more than the {:.1} MiB allowed; split it",
                    mib(decoded),
                    mib(max_bytes.saturating_mul(4))
                )));
            }
            batches.push(batch);
        }
        Self::arrow_table_of(schema, batches, source)
    }

    fn arrow_table_of(
        schema: arrow::datatypes::SchemaRef,
        batches: Vec<RecordBatch>,
        path: &Path,
    ) -> Result<Table> {
        let err = |message: String| Error::Table {
            action: "read",
            path: path.to_path_buf(),
            message,
        };
        let batch =
            arrow::compute::concat_batches(&schema, &batches).map_err(|e| err(e.to_string()))?;
        Ok(Table {
            columns: schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, a)| (f.name().clone(), Column::Arrow(a.clone())))
                .collect(),
        })
    }

    fn read_parquet_typed(
        path: &Path,
        as_text: bool,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<Table> {
        let err = |message: String| Error::Table {
            action: "read",
            path: path.to_path_buf(),
            message,
        };
        let (schema, batches) = parquet_batches(path, keep)?;
        let mut cols: Vec<(String, Column)> = schema
            .fields()
            .iter()
            .map(|f| {
                let col = match f.data_type() {
                    _ if as_text => Column::Str(Vec::new()),
                    DataType::Boolean => Column::Bool(Vec::new()),
                    DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                        Column::Float(Vec::new())
                    }
                    t if t.is_integer() => Column::Int(Vec::new()),
                    _ => Column::Str(Vec::new()),
                };
                (f.name().clone(), col)
            })
            .collect();
        for batch in batches {
            let batch = batch?;
            for (i, (name, col)) in cols.iter_mut().enumerate() {
                let arr = batch.column(i);
                let bad = |e: arrow::error::ArrowError| {
                    err(format!("column `{name}` cannot be converted: {e}"))
                };
                match col {
                    Column::Bool(v) => {
                        let a = arr.as_any().downcast_ref::<BooleanArray>().expect("bool");
                        v.extend((0..a.len()).map(|j| a.is_valid(j) && a.value(j)));
                    }
                    Column::Float(v) => {
                        let c = arrow::compute::cast(arr, &DataType::Float64).map_err(bad)?;
                        let a = c.as_any().downcast_ref::<Float64Array>().expect("f64");
                        v.extend(
                            (0..a.len()).map(|j| if a.is_valid(j) { a.value(j) } else { f64::NAN }),
                        );
                    }
                    Column::Int(v) => {
                        let c = arrow::compute::cast(arr, &DataType::Int64).map_err(bad)?;
                        let a = c.as_any().downcast_ref::<Int64Array>().expect("i64");
                        v.extend(
                            (0..a.len()).map(|j| if a.is_valid(j) { a.value(j) } else { i64::MIN }),
                        );
                    }
                    Column::Str(v) => v.extend(arrow_text(arr).map_err(bad)?),
                    Column::Arrow(_) | Column::Nullable(..) => {
                        unreachable!("only the columns made above")
                    }
                }
            }
        }
        Ok(Table { columns: cols })
    }

    /// Writes the table as CSV with a header row.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let file = File::create(path).io("create", path)?;
        self.write_csv_to(std::io::BufWriter::new(file), path)
    }

    /// Writes the table as CSV with a header row to `w` (standard output, say), row by row;
    /// errors name the destination `path`.
    pub fn write_csv_to(&self, mut w: impl std::io::Write, path: &Path) -> Result<()> {
        let mut line = String::new();
        let header: Vec<&str> = self.columns.iter().map(|(n, _)| n.as_str()).collect();
        write_csv_row(&mut line, header.iter().copied());
        // Arrow columns are turned into text once, not cell by cell.
        let texts = self
            .columns
            .iter()
            .map(|(name, c)| match c {
                Column::Arrow(a) => arrow_text(a).map(Some).map_err(|e| Error::Table {
                    action: "write",
                    path: path.to_path_buf(),
                    message: format!("column `{name}` cannot be written as text: {e}"),
                }),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        for i in 0..self.num_rows() {
            let cells: Vec<String> = self
                .columns
                .iter()
                .zip(&texts)
                .map(|((_, c), text)| match (c, text) {
                    (Column::Str(v), _) => neutralise_formula(&v[i]).into_owned(),
                    (_, Some(t)) => neutralise_formula(&t[i]).into_owned(),
                    (other, None) => other.cell(i),
                })
                .collect();
            write_csv_row(&mut line, cells.iter().map(String::as_str));
            // A row at a time: the text of a large table is never held whole.
            w.write_all(line.as_bytes()).io("write", path)?;
            line.clear();
        }
        w.write_all(line.as_bytes()).io("write", path)?;
        w.flush().io("write", path)?;
        Ok(())
    }
}

impl Table {
    /// Writes the table at `path` in `format`, through a temporary file beside it that is
    /// renamed into place: an interrupted write never leaves a file that looks complete.
    pub fn write_as(&self, path: &Path, format: TableFormat) -> Result<()> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".partial-{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let written = match format {
            TableFormat::Csv => self.write_csv(&tmp),
            TableFormat::Parquet => self.write_parquet(&tmp),
        };
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path).io("rename", path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Writes the table as CSV at `csv` and as Parquet beside it (same name, `.parquet`):
    /// spreadsheet users open the CSV, while pandas, polars and duckdb read the Parquet with
    /// its types, so codes such as `0110` stay text instead of turning into the number 110.
    pub fn write_csv_and_parquet(&self, csv: &Path) -> Result<()> {
        self.write_csv(csv)?;
        self.write_parquet(&csv.with_extension("parquet"))
    }
}

/// Why a Parquet file's rows cannot be read. A file compressed with a codec this build does
/// not read (brotli) says so and what to write instead, rather than naming a compile-time
/// feature.
fn unreadable(e: &dyn std::fmt::Display) -> String {
    let message = e.to_string();
    match message.split("Disabled feature at compile time: ").nth(1) {
        Some(codec) => format!(
            "it is compressed with {}, which isco-dag does not read; write it with snappy, zstd, gzip or lz4 compression, or none (pandas: `to_parquet(path, compression=\"zstd\")`)",
            codec.split_whitespace().next().unwrap_or(codec)
        ),
        None => message,
    }
}

/// The name a column added to someone else's table takes: `name`, or `predicted_<name>`
/// when `taken` (the table's own columns) has that name, prefixed again while it is still
/// taken. No column of the input is overwritten or doubled, so a file already coded (with
/// `isco_code` and `predicted_isco_code`) can be coded again.
pub fn added_column_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut n = name.to_string();
    while taken(&n) {
        n = format!("predicted_{n}");
    }
    n
}

/// Where the column added as `name` by [`added_column_name`] is in `header`: the most
/// prefixed of `name`, `predicted_<name>`, `predicted_predicted_<name>`… that is there.
pub fn added_column_position<S: AsRef<str>>(header: &[S], name: &str) -> Option<usize> {
    let at = |n: &str| header.iter().position(|h| h.as_ref() == n);
    let mut found = None;
    let mut n = name.to_string();
    while let Some(i) = at(&n) {
        found = Some(i);
        n = format!("predicted_{n}");
    }
    found
}

/// Whether a column of type `t` holds bytes (a binary column), which may or may not be text.
pub fn holds_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

/// `arr` with fixed-width bytes made variable-width ones, which Arrow casts to text (it has
/// no cast from fixed-width bytes to text, and would show them as hex); any other column
/// as it is.
fn castable_bytes(arr: &ArrayRef) -> ArrayRef {
    match arr.data_type() {
        DataType::FixedSizeBinary(_) => {
            arrow::compute::cast(arr, &DataType::Binary).unwrap_or_else(|_| arr.clone())
        }
        _ => arr.clone(),
    }
}

/// The rows of `arr` whose bytes are not UTF-8 text: values of a binary column (as some
/// older Parquet writers store text) that reading it as text would turn into nulls. Empty
/// for a column of any other type.
pub fn rows_not_utf8(arr: &ArrayRef) -> Vec<usize> {
    if !holds_bytes(arr.data_type()) {
        return Vec::new();
    }
    // A safe cast makes each value that is not UTF-8 a null.
    let Ok(text) = arrow::compute::cast(&castable_bytes(arr), &DataType::Utf8) else {
        return Vec::new();
    };
    (0..arr.len())
        .filter(|&r| arr.is_valid(r) && text.is_null(r))
        .collect()
}

/// The column names of a Parquet file, from its footer alone (no row is read).
pub fn parquet_column_names(path: &Path) -> Result<Vec<String>> {
    Ok(parquet_columns(path)?.into_iter().map(|(n, _)| n).collect())
}

/// The columns of a Parquet file with their Arrow types, from its footer alone.
pub fn parquet_columns(path: &Path) -> Result<Vec<(String, DataType)>> {
    Ok(parquet_reader_builder(path)?
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect())
}

/// Why a column of type `t` cannot be read as one text a row, or `None` when it can: a
/// list, struct, map or union holds several values a row, and their text (`["a", "b"]`)
/// is not a job title or a code.
pub fn not_text(t: &DataType) -> Option<String> {
    let holds = match t {
        DataType::Dictionary(_, values) => return not_text(values),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "lists",
        DataType::Struct(_) => "structs",
        DataType::Map(..) => "maps",
        DataType::Union(..) => "unions",
        DataType::RunEndEncoded(_, values) => return not_text(values.data_type()),
        _ => return None,
    };
    Some(format!(
        "holds {holds}, several values a row, where one text is read; store it as a text (string) column"
    ))
}

/// A Parquet file opened with its footer read.
fn parquet_reader_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).io("open", path)?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Table {
        action: "read",
        path: path.to_path_buf(),
        message: format!("{e}; is it a Parquet file?"),
    })
}

/// The schema of a Parquet file and its rows in batches of up to 65,536; with `keep`, each
/// batch holds only the rows `keep` takes (by their 0-based position in the file).
fn parquet_batches<'a>(
    path: &'a Path,
    keep: Option<&'a dyn Fn(usize) -> bool>,
) -> Result<(
    arrow::datatypes::SchemaRef,
    impl Iterator<Item = Result<RecordBatch>> + 'a,
)> {
    let reader = parquet_reader(path)?;
    let schema = reader.schema();
    let err = move |message: String| Error::Table {
        action: "read",
        path: path.to_path_buf(),
        message,
    };
    let mut next_row = 0;
    let batches = reader.map(move |batch| {
        let batch = batch.map_err(|e| err(unreadable(&e)))?;
        let start = next_row;
        next_row += batch.num_rows();
        match keep {
            None => Ok(batch),
            Some(keep) => {
                let mask = BooleanArray::from_iter((start..next_row).map(|r| Some(keep(r))));
                arrow::compute::filter_record_batch(&batch, &mask).map_err(|e| err(e.to_string()))
            }
        }
    });
    Ok((schema, batches))
}

/// The number of rows a Parquet file holds, from its footer.
pub fn parquet_num_rows(path: &Path) -> Result<usize> {
    let rows = parquet_reader_builder(path)?
        .metadata()
        .file_metadata()
        .num_rows();
    Ok(usize::try_from(rows).unwrap_or(0))
}

/// A reader of a Parquet file's rows in batches of 65,536.
fn parquet_reader(path: &Path) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    parquet_reader_builder(path)?
        .with_batch_size(65536)
        .build()
        .map_err(|e| Error::Table {
            action: "read",
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// The two formats a table file is written in, told apart by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated text with a header row (`.csv`).
    Csv,
    /// Apache Parquet (`.parquet` or `.pq`).
    Parquet,
}

impl TableFormat {
    /// The format a file name asks for: `.csv`, `.parquet` or `.pq` in any case; `None` for
    /// any other extension or none.
    pub fn of(path: &Path) -> Option<TableFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(TableFormat::Csv),
            "parquet" | "pq" => Some(TableFormat::Parquet),
            _ => None,
        }
    }
}

/// Spreadsheet workbooks someone may hand over instead of a CSV export: binary files that
/// no CSV reader can make sense of.
pub const WORKBOOK_EXTENSIONS: [&str; 5] = ["xlsx", "xlsm", "xls", "ods", "numbers"];

/// The field separators an input CSV file may use: a spreadsheet saved as CSV in a locale
/// whose decimal mark is a comma separates fields with `;`, and tab-separated exports are
/// common.
pub const CSV_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The field separator of a CSV file, judged by its header row (`first_line`, a UTF-8
/// byte-order mark allowed): of [`CSV_DELIMITERS`], the one under which the header holds every
/// `required` column and the most of the `wanted` ones; if none holds them, the one that
/// splits the header into the most fields (so an error lists the columns as the file means
/// them). A comma wins every tie, so a comma-separated file that names the columns is always
/// read as one.
///
/// Written here because the `csv` crate reads a given separator but does not guess one.
pub fn csv_delimiter(first_line: &[u8], wanted: &[&str], required: &[bool]) -> u8 {
    let first = first_line
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(first_line);
    let fields = |d: u8| -> Vec<String> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(d)
            .from_reader(first);
        let mut rec = csv::ByteRecord::new();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_string())
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut best: Option<(usize, u8)> = None;
    let mut widest = (0, b',');
    for d in CSV_DELIMITERS {
        let header = fields(d);
        let holds = |w: &str| header.iter().any(|h| h == w);
        let all_required = wanted.iter().zip(required).all(|(w, req)| !req || holds(w));
        let found = wanted.iter().filter(|w| holds(w)).count();
        if all_required && found > best.map_or(0, |b| b.0) {
            best = Some((found, d));
        }
        if header.len() > widest.0 {
            widest = (header.len(), d);
        }
    }
    best.map_or(widest.1, |b| b.1)
}

/// The field separator of the CSV file at `path` in `encoding`, judged by [`csv_delimiter`]
/// from its first line (read up to 1 MiB).
pub fn csv_file_delimiter(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
) -> std::io::Result<u8> {
    use std::io::{BufRead, Read};
    let mut first = Vec::new();
    std::io::BufReader::new(encoding.open(path)?)
        .take(1 << 20)
        .read_until(b'\n', &mut first)?;
    Ok(csv_delimiter(&first, wanted, required))
}

/// Watches the records of a CSV reader for a quote left open, which swallows the rows on the
/// lines after it into one field. Fed each record in turn ([`OpenQuoteCheck::record`]) and
/// the text once more at the end ([`OpenQuoteCheck::finish`]), it gives the message that
/// names where the quote opened; the caller says which row and file.
#[derive(Debug, Default)]
pub struct OpenQuoteCheck {
    /// The last record, when it runs over several lines: its row, first line and first byte.
    runs_on: Option<(usize, u64, u64)>,
}

impl OpenQuoteCheck {
    /// After the record at `row`, which starts on `line` at byte `byte` (of the text read as
    /// LF) and has `fields` fields where the header has `header`, the reader now on
    /// `next_line`: the message when the record runs over several lines with the wrong
    /// number of fields, a quote having taken in the rows on them.
    pub fn record(
        &mut self,
        row: usize,
        (line, byte): (u64, u64),
        next_line: u64,
        fields: usize,
        header: usize,
    ) -> Option<String> {
        let spans = next_line > line + 1;
        self.runs_on = spans.then_some((row, line, byte));
        (spans && fields != header).then(|| {
            format!(
                "a quoted field opened on line {line} runs on to line {}, swallowing the rows in between ({fields} fields where the header has {header}); close the quote on line {line} (a quote inside a field is written twice: \"\")",
                next_line - 1
            )
        })
    }

    /// After the last record, with the whole text again and its separator (`csv`, called
    /// only when needed): the row and message when that record's last field opened a quote
    /// that is never closed. Such a field takes in every line to the end, yet leaves its
    /// record the right number of fields.
    pub fn finish<R: std::io::BufRead>(
        &self,
        csv: impl FnOnce() -> std::io::Result<(R, u8)>,
    ) -> std::io::Result<Option<(usize, String)>> {
        let Some((row, line, byte)) = self.runs_on else {
            return Ok(None);
        };
        let (text, delimiter) = csv()?;
        Ok(ends_inside_quotes(text, delimiter, byte)?.then(|| {
            (
                row,
                format!(
                    "a quoted field opened on line {line} is never closed, so it runs on to the end of the file, swallowing the rows after it; close the quote on line {line} (a quote inside a field is written twice: \"\")"
                ),
            )
        }))
    }
}

/// Whether the CSV text `csv` (separated by `delimiter`, its line ends read as LF by
/// [`LineEndsAsLf`]) ends inside a quoted field when read from byte `from` of that LF text,
/// where a record starts: a quote opened there was never closed.
///
/// The `csv` crate ends such a field at the end of the input without a word, so when the
/// field is the last of its record the record has its right number of fields and takes in
/// every line after it. Only the last record can end so, and this re-reads its text alone,
/// by RFC 4180's quoting (a quote opens a field only at its start; inside, `""` is a quote).
/// Written here because neither `csv` nor `csv-core` says whether its input ended inside
/// quotes.
fn ends_inside_quotes(
    csv: impl std::io::BufRead,
    delimiter: u8,
    from: u64,
) -> std::io::Result<bool> {
    use std::io::Read;
    let mut text = LineEndsAsLf::new(csv);
    std::io::copy(&mut text.by_ref().take(from), &mut std::io::sink())?;
    #[derive(PartialEq)]
    enum At {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut at = At::FieldStart;
    let mut buf = [0u8; 1 << 16];
    loop {
        let n = text.read(&mut buf)?;
        if n == 0 {
            return Ok(at == At::Quoted);
        }
        for &b in &buf[..n] {
            at = match (at, b) {
                (At::Quoted, b'"') => At::QuoteInQuoted,
                (At::Quoted, _) => At::Quoted,
                (At::FieldStart | At::QuoteInQuoted, b'"') => At::Quoted,
                (_, b) if b == delimiter || b == b'\n' => At::FieldStart,
                _ => At::Unquoted,
            };
        }
    }
}

/// Reads `inner` with each CRLF or lone CR line end turned into LF.
///
/// The `csv` crate ends a record at CRLF, LF or a lone CR, but counts a line only at an LF it
/// reads: a record's position in a CRLF file names the line before the record's own (the LF
/// is read as the next record starts), and in a file whose lines end in CR alone (a classic
/// Mac export) every record is on line 1. Those lines go into every error and quarantine row.
/// Fed LF alone it counts them right, and every cell reads as before except that a line break
/// inside a quoted cell is LF. Written here because no crate offers this as a `Read`.
pub struct LineEndsAsLf<R> {
    inner: R,
    /// A CR read, written as LF once the next byte shows whether an LF follows it.
    pending_cr: bool,
}

impl<R: std::io::BufRead> LineEndsAsLf<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            pending_cr: false,
        }
    }
}

impl<R: std::io::BufRead> std::io::Read for LineEndsAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if std::mem::take(&mut self.pending_cr) {
                    out[0] = b'\n';
                    return Ok(1);
                }
                return Ok(0);
            }
            let (mut used, mut n) = (0, 0);
            while used < buf.len() && n < out.len() {
                let b = buf[used];
                if std::mem::take(&mut self.pending_cr) && b != b'\n' {
                    // A CR alone ends its line: write LF, and read `b` on the next turn.
                    out[n] = b'\n';
                    n += 1;
                    continue;
                }
                used += 1;
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    out[n] = b;
                    n += 1;
                }
            }
            self.inner.consume(used);
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

/// The reader [`open_csv_file`] gives.
pub type CsvFileReader =
    csv::Reader<LineEndsAsLf<std::io::BufReader<Box<dyn std::io::Read + Send>>>>;

/// Why [`open_csv_file`] could not open a CSV file; each message completes a sentence that
/// starts with the file's name.
#[derive(Debug, thiserror::Error)]
pub enum CsvOpenError {
    /// The file could not be read.
    #[error("cannot be read: {0}")]
    Read(std::io::Error),
    /// Its first row could not be read.
    #[error("has no readable header row: {0}")]
    Header(csv::Error),
}

/// A CSV reader of `path` with the separator its header row uses ([`csv_file_delimiter`]),
/// past that row, and the column names it holds (a UTF-8 byte-order mark taken off, bytes
/// that are not UTF-8 replaced). The file is read as UTF-8 text in `encoding`
/// ([`TextEncoding::open`]). `flexible` lets rows have another number of fields than the
/// header, for readers that report such rows themselves. CRLF and CR line ends are read as LF
/// ([`LineEndsAsLf`]), so that the records' positions name their lines.
pub fn open_csv_file(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    flexible: bool,
    encoding: TextEncoding,
) -> std::result::Result<(CsvFileReader, Vec<String>), CsvOpenError> {
    let delimiter =
        csv_file_delimiter(path, wanted, required, encoding).map_err(CsvOpenError::Read)?;
    let file = encoding.open(path).map_err(CsvOpenError::Read)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(flexible)
        .delimiter(delimiter)
        .from_reader(LineEndsAsLf::new(std::io::BufReader::new(file)));
    let header = rdr
        .byte_headers()
        .map_err(CsvOpenError::Header)?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    Ok((rdr, header))
}

/// A text cell as it may go into a CSV file that people open in a spreadsheet: a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula
/// (`=HYPERLINK(…)` in a job title), so it gets a leading `'`, as OWASP's CSV-injection
/// advice says. A cell that is a plain signed number (`-5`, `+1.5e3`, an input's numeric
/// column passed through as text) is read by a spreadsheet as that number, never as a
/// formula, and is kept as it is; numbers written by their own columns are never touched.
pub fn neutralise_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Whether `cell` is a decimal number with an optional sign, fraction and exponent (and
/// nothing else: no `inf`, `nan`, spaces or operators).
fn is_plain_number(cell: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (digits(int) || int.is_empty())
                && (digits(frac) || frac.is_empty())
                && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(digits)
}

/// Appends one RFC 4180 CSV row to `out`.
pub fn write_csv_row<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(c);
        }
    }
    out.push('\n');
}

/// Why a raw row cannot be read: the row stays in the output (or the quarantine file) with
/// this as its reason, never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowProblem {
    /// The row has another number of fields than the header (a comma outside quotes).
    FieldCount {
        /// Fields in the row.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A quote opened in the last row is never closed: the rest of the file became one field.
    QuoteNotClosed,
    /// A cell of a requested column is not valid UTF-8.
    NotUtf8 {
        /// The column's name in the header.
        column: String,
        /// Whether the file is CSV text, which `[data] encoding` can say how to read (a
        /// Parquet file's text is UTF-8 by its format).
        in_csv: bool,
    },
}

impl RowProblem {
    /// The column the problem lies in, when it lies in one column.
    pub fn column(&self) -> Option<&str> {
        match self {
            RowProblem::FieldCount { .. } | RowProblem::QuoteNotClosed => None,
            RowProblem::NotUtf8 { column, .. } => Some(column),
        }
    }
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowProblem::FieldCount { found, expected } => {
                let fields = if *found == 1 { "field" } else { "fields" };
                let fix = if found > expected {
                    "quote a value that holds a comma"
                } else {
                    "write a comma for every column, even an empty one"
                };
                write!(
                    f,
                    "the row has {found} {fields} where the header has {expected}; {fix}"
                )
            }
            RowProblem::QuoteNotClosed => f.write_str(
                "a quote opened in this row is never closed, so the rest of the file became one value; close it (a quote inside a value is written twice: \"\")",
            ),
            RowProblem::NotUtf8 { column, in_csv } => {
                write!(
                    f,
                    "column `{column}` is not valid UTF-8; re-save the file as UTF-8"
                )?;
                if *in_csv {
                    f.write_str(", or set `encoding` in [data] to the one it was saved in (windows-1252 for most Western European spreadsheets)")?;
                }
                Ok(())
            }
        }
    }
}

/// The column of `header` that is `name` but for case, spaces and punctuation (`Job Title`
/// or `JOB-TITLE` for `job_title`), to point out when `name` itself is missing.
pub fn column_like<'a>(header: &'a [String], name: &str) -> Option<&'a str> {
    fn loose(name: &str) -> String {
        name.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    }
    let want = loose(name);
    header
        .iter()
        .map(String::as_str)
        .find(|h| !want.is_empty() && loose(h) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_never_closed_is_found_from_where_its_record_starts() {
        // (CSV text, separator, the byte its last record starts at, ends inside quotes)
        let cases: [(&str, u8, u64, bool); 10] = [
            ("a,b\nc,\"d\ne,f\n", b',', 4, true),
            ("a,b\nc,\"d\ne,f", b',', 4, true),
            ("a,b\r\nc,\"d\r\ne,f\r\n", b',', 4, true),
            ("a,b\nc,\"d\ne\",f\n", b',', 4, false),
            ("a,b\nc,\"d \"\"e\"\"\nf\"\n", b',', 4, false),
            ("a,b\nc,\"d \"\"e\"\"\nf\n", b',', 4, true),
            // A quote inside an unquoted cell is text, not a quote.
            ("a,b\nc,5'10\"\nd,e\n", b',', 4, false),
            ("a;b\nc;\"d\ne;f\n", b';', 4, true),
            // Read from another record's start, the same file is another question.
            ("a,\"b\nc,d\n", b',', 0, true),
            ("a,\"b\nc,d\n", b',', 6, false),
        ];
        for (text, delimiter, from, open) in cases {
            assert_eq!(
                ends_inside_quotes(text.as_bytes(), delimiter, from).unwrap(),
                open,
                "{text:?} from {from}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_are_read_as_lf_and_csv_positions_name_their_lines() {
        use std::io::Read;
        let read = |input: &[u8], chunk: usize| {
            // A reader that hands out `chunk` bytes at a time, so that a CRLF falls across
            // two reads.
            let inner = std::io::BufReader::with_capacity(chunk, input);
            let mut out = Vec::new();
            LineEndsAsLf::new(inner).read_to_end(&mut out).unwrap();
            out
        };
        for chunk in [1, 2, 3, 64] {
            assert_eq!(
                read(b"a,b\r\nc,d\r\n", chunk),
                b"a,b\nc,d\n",
                "chunk {chunk}"
            );
            assert_eq!(read(b"a\rb\r", chunk), b"a\nb\n", "chunk {chunk}");
            assert_eq!(read(b"a\r\r\nb\n", chunk), b"a\n\nb\n", "chunk {chunk}");
            assert_eq!(read(b"", chunk), b"", "chunk {chunk}");
        }
        let dir = tempfile::tempdir().unwrap();
        for end in ["\r\n", "\r", "\n"] {
            let path = dir.path().join("jobs.csv");
            let text = "job_title,code\ncook,5120\n\"two\nlines\",2221\nnurse,2221\n";
            std::fs::write(&path, text.replace('\n', end)).unwrap();
            let (mut rdr, header) =
                open_csv_file(&path, &["job_title"], &[true], false, TextEncoding::UTF_8).unwrap();
            assert_eq!(header, ["job_title", "code"]);
            let rows: Vec<(u64, Vec<String>)> = rdr
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    let line = r.position().unwrap().line();
                    (line, r.iter().map(str::to_string).collect())
                })
                .collect();
            assert_eq!(
                rows,
                [
                    (2, vec!["cook".to_string(), "5120".to_string()]),
                    (3, vec!["two\nlines".to_string(), "2221".to_string()]),
                    (5, vec!["nurse".to_string(), "2221".to_string()]),
                ],
                "line ends {end:?}"
            );
        }
    }

    #[test]
    fn a_parquet_file_read_as_text_keeps_nulls_and_numbers_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("share", DataType::Float64, true),
            Field::new("job_title", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
                Arc::new(StringArray::from(vec![None, Some("chef")])),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let t = Table::read_parquet_as_text(&path).unwrap();
        let cells = |c: usize| (0..2).map(|r| t.columns[c].1.cell(r)).collect::<Vec<_>>();
        assert_eq!(cells(0), ["7", ""]);
        assert_eq!(cells(1), ["1.5", ""]);
        assert_eq!(cells(2), ["", "chef"]);
    }

    #[test]
    fn arrow_columns_keep_their_type_and_nulls_through_parquet_csv_and_take() {
        let dir = tempfile::tempdir().unwrap();
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(9)]));
        let days: ArrayRef = Arc::new(arrow::array::Date32Array::from(vec![0, 1, 19_000]));
        let t = Table::new()
            .with(
                "job_title",
                Column::Str(vec!["cook".into(), "=x".into(), "".into()]),
            )
            .with("id", Column::Arrow(ids))
            .with("day", Column::Arrow(days));
        let p = dir.path().join("t.parquet");
        t.write_parquet(&p).unwrap();
        let back = Table::read_parquet_as_arrow(&p).unwrap();
        let Some(Column::Arrow(id)) = back.column("id") else {
            panic!("{back:?}")
        };
        assert_eq!(id.data_type(), &DataType::Int64);
        assert_eq!(id.null_count(), 1);
        let Some(Column::Arrow(day)) = back.column("day") else {
            panic!("{back:?}")
        };
        assert_eq!(day.data_type(), &DataType::Date32);
        // A column without nulls is written as not nullable, as the typed columns are.
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap()).unwrap();
        let nullable: Vec<bool> = meta
            .schema()
            .fields()
            .iter()
            .map(|f| f.is_nullable())
            .collect();
        assert_eq!(nullable, [false, true, false]);
        // The same file in memory, for an answer that is never written to disk.
        assert_eq!(t.to_parquet_bytes().unwrap(), std::fs::read(&p).unwrap());
        assert_eq!(
            back.columns[2].1.texts().unwrap(),
            ["1970-01-01", "1970-01-02", "2022-01-08"]
        );
        let csv = dir.path().join("t.csv");
        t.write_csv(&csv).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "job_title,id,day\ncook,7,1970-01-01\n'=x,,1970-01-02\n,9,2022-01-08\n"
        );
        assert_eq!(t.columns[1].1.cell(1), "");
        let picked = t.columns[1].1.take(&[2, 1]);
        assert_eq!((picked.cell(0), picked.cell(1)), ("9".into(), "".into()));
        assert_eq!(
            t.columns[0].1.take(&[2, 0]),
            Column::Str(vec!["".into(), "cook".into()])
        );
    }

    #[test]
    fn the_extension_names_the_format_and_a_write_lands_whole() {
        let of = |p: &str| TableFormat::of(Path::new(p));
        assert_eq!(of("a/coded.csv"), Some(TableFormat::Csv));
        assert_eq!(of("CODED.CSV"), Some(TableFormat::Csv));
        assert_eq!(of("coded.parquet"), Some(TableFormat::Parquet));
        assert_eq!(of("coded.PQ"), Some(TableFormat::Parquet));
        for other in ["coded.json", "coded.xlsx", "coded", ".csv", "coded.csv.gz"] {
            assert_eq!(of(other), None, "{other}");
        }
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new().with("code", Column::Str(vec!["0110".into()]));
        for (name, format) in [("t.pq", TableFormat::Parquet), ("t.csv", TableFormat::Csv)] {
            t.write_as(&dir.path().join(name), format).unwrap();
        }
        assert_eq!(Table::read_parquet(&dir.path().join("t.pq")).unwrap(), t);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.csv")).unwrap(),
            "code\n0110\n"
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["t.csv", "t.pq"]);
        // A write that fails leaves neither the file nor its temporary.
        let missing = dir.path().join("no/t.csv");
        assert!(t.write_as(&missing, TableFormat::Csv).is_err());
        assert!(!dir.path().join("no").exists());
    }

    #[test]
    fn csv_text_cells_cannot_start_a_formula() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new()
            .with(
                "job_title",
                Column::Str(vec![
                    "=HYPERLINK(\"http://x\",\"y\")".into(),
                    "+1".into(),
                    "@cmd".into(),
                    "-cook".into(),
                    "cook - chef".into(),
                    "-5".into(),
                    "+1.5e3".into(),
                    "-1+1".into(),
                    "-inf".into(),
                ]),
            )
            .with(
                "p",
                Column::Float(vec![-0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            );
        let csv = dir.path().join("t.csv");
        t.write_csv(&csv).unwrap();
        let s = std::fs::read_to_string(csv).unwrap();
        assert_eq!(
            s,
            "job_title,p\n\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-0.500000\n+1,0.000000\n'@cmd,0.000000\n'-cook,0.000000\ncook - chef,0.000000\n-5,0.000000\n+1.5e3,0.000000\n'-1+1,0.000000\n'-inf,0.000000\n"
        );
    }

    #[test]
    fn an_added_column_never_takes_a_name_the_input_has() {
        let header = ["isco_code", "predicted_isco_code", "level"];
        let taken = |n: &str| header.contains(&n);
        assert_eq!(
            added_column_name("isco_code", taken),
            "predicted_predicted_isco_code"
        );
        assert_eq!(added_column_name("level", taken), "predicted_level");
        assert_eq!(added_column_name("title", taken), "title");
        let coded = [
            "isco_code",
            "predicted_isco_code",
            "predicted_predicted_isco_code",
            "title",
        ];
        assert_eq!(added_column_position(&coded, "isco_code"), Some(2));
        assert_eq!(added_column_position(&coded, "title"), Some(3));
        assert_eq!(added_column_position(&coded, "level"), None);
    }

    #[test]
    fn columns_of_several_values_a_row_read_as_text_but_are_no_text_column() {
        use arrow::array::{ListArray, StructArray};
        use arrow::datatypes::Int32Type;
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>([
            Some(vec![Some(1), None]),
            None,
        ]));
        let strukt: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("floor", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(3), None])) as ArrayRef,
        )]));
        // Text for a CSV output: a struct has no cast to text, yet is written as Arrow shows it.
        assert_eq!(Column::Arrow(list.clone()).texts().unwrap(), ["[1, ]", ""]);
        assert_eq!(
            Column::Arrow(strukt.clone()).texts().unwrap(),
            ["{floor: 3}", "{floor: }"]
        );
        assert!(
            not_text(list.data_type())
                .unwrap()
                .starts_with("holds lists")
        );
        assert!(
            not_text(strukt.data_type())
                .unwrap()
                .starts_with("holds structs")
        );
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        for t in [DataType::Utf8, DataType::LargeUtf8, DataType::Int64, dict] {
            assert_eq!(not_text(&t), None, "{t}");
        }
    }

    #[test]
    fn bytes_of_fixed_width_are_read_as_text_and_checked_for_utf8() {
        // Some writers store short text as fixed-width bytes; it is text like any binary
        // column's, and bytes that are not UTF-8 are found, not shown as hex.
        let fixed: ArrayRef = Arc::new(
            arrow::array::FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                [
                    Some(b"chef".to_vec()),
                    None,
                    Some(vec![0xff, 0xfe, b'a', b'b']),
                ]
                .into_iter(),
                4,
            )
            .unwrap(),
        );
        assert!(holds_bytes(fixed.data_type()));
        assert_eq!(rows_not_utf8(&fixed), [2]);
        let text = arrow_text(&fixed).unwrap();
        assert_eq!(&text[..2], ["chef", ""]);
    }

    #[test]
    fn parquet_written_with_any_common_codec_is_read() {
        // Polars writes zstd by default; pandas, Spark and duckdb snappy; R and older tools
        // gzip; some lz4.
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "job_title",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["chef", "nurse"]))],
        )
        .unwrap();
        for codec in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(Default::default()),
            Compression::GZIP(Default::default()),
            Compression::LZ4_RAW,
            Compression::LZ4,
        ] {
            let p = dir.path().join("t.parquet");
            let props = WriterProperties::builder().set_compression(codec).build();
            let mut w =
                ArrowWriter::try_new(File::create(&p).unwrap(), schema.clone(), Some(props))
                    .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let t = Table::read_parquet_as_text(&p).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(
                t.column("job_title"),
                Some(&Column::Str(vec!["chef".into(), "nurse".into()])),
                "{codec:?}"
            );
        }
        let e = unreadable(
            &"Parquet argument error: Parquet error: Disabled feature at compile time: brotli",
        );
        assert!(
            e.starts_with("it is compressed with brotli, which isco-dag does not read; write it with snappy, zstd"),
            "{e}"
        );
    }

    #[test]
    fn an_uploaded_parquet_file_is_read_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let upload = |max_rows, max_bytes| {
            Table::read_parquet_upload(
                File::open(&p).unwrap(),
                Path::new("up.parquet"),
                max_rows,
                max_bytes,
            )
        };
        let t = Table::new()
            .with(
                "job_title",
                Column::Str(vec!["chef".into(), "nurse".into()]),
            )
            .with("id", Column::Int(vec![1, 2]));
        t.write_parquet(&p).unwrap();
        assert_eq!(
            upload(2, 1 << 20).unwrap(),
            Table::read_parquet_as_arrow(&p).unwrap()
        );
        let e = upload(1, 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("`up.parquet` is too large: it has 2 rows, more than the 1"),
            "{e}"
        );
        let e = upload(2, 10).unwrap_err().to_string();
        assert!(e.contains("MiB of data uncompressed"), "{e}");
        // One 50 kB value that all 1,000 rows point to: a few kB stored, 50 MB decoded. The
        // read stops at the bound instead of decoding it all.
        let long = "a".repeat(50_000);
        Table::new()
            .with("job_title", Column::Str(vec![long; 1000]))
            .write_parquet(&p)
            .unwrap();
        let stored = std::fs::metadata(&p).unwrap().len();
        assert!(stored < 20_000, "{stored} bytes");
        let e = upload(1000, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("once decompressed"), "{e}");
        assert!(matches!(upload(1000, 1 << 20), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn parquet_round_trip_keeps_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let t = Table::new()
            .with("text", Column::Str(vec!["a, b".into(), "c\"d".into()]))
            .with("code", Column::Int(vec![2310, 5312]))
            .with("p", Column::Float(vec![0.5, 0.25]))
            .with("flag", Column::Bool(vec![true, false]));
        t.write_parquet(&p).unwrap();
        let back = Table::read_parquet(&p).unwrap();
        assert_eq!(back, t);
        let csv = dir.path().join("t.csv");
        t.write_csv(&csv).unwrap();
        let s = std::fs::read_to_string(csv).unwrap();
        assert_eq!(
            s,
            "text,code,p,flag\n\"a, b\",2310,0.500000,true\n\"c\"\"d\",5312,0.250000,false\n"
        );
    }

    #[test]
    fn parquet_columns_encoded_in_parallel_keep_row_groups_and_empty_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let n = 2500;
        let t = Table::new()
            .with("row", Column::Int((0..n).collect()))
            .with(
                "text",
                Column::Str((0..n).map(|i| format!("job {i}")).collect()),
            )
            .with("p", Column::Float((0..n).map(|i| i as f64 / 7.0).collect()));
        // Three row groups (1000 + 1000 + 500 rows), read back in order.
        t.write_parquet_groups(&p, 1000).unwrap();
        assert_eq!(Table::read_parquet(&p).unwrap(), t);
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(meta.num_row_groups(), 3);
        // A column with no value in some rows of one group is nullable in every group, and
        // its nulls stay on their rows.
        let valid: Vec<bool> = (0..n).map(|i| i < 2200 || i % 2 == 0).collect();
        let t = t.with(
            "q",
            Column::Nullable(
                Box::new(Column::Float(vec![0.5; n as usize])),
                valid.clone(),
            ),
        );
        t.write_parquet_groups(&p, 1000).unwrap();
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
        assert!(
            batches[0]
                .schema()
                .field_with_name("q")
                .unwrap()
                .is_nullable()
        );
        assert!(
            !batches[0]
                .schema()
                .field_with_name("p")
                .unwrap()
                .is_nullable()
        );
        let back: Vec<bool> = batches
            .iter()
            .flat_map(|b| {
                let q = b.column_by_name("q").unwrap().clone();
                (0..q.len()).map(move |i| q.is_valid(i))
            })
            .collect();
        assert_eq!(back, valid);
        // A table with columns but no rows keeps its schema.
        let empty = Table::new()
            .with("text", Column::Str(vec![]))
            .with("code", Column::Int(vec![]));
        empty.write_parquet(&p).unwrap();
        assert_eq!(Table::read_parquet(&p).unwrap(), empty);
    }

    #[test]
    fn a_share_of_a_parquet_files_rows_is_read_by_their_positions_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        // More rows than one read batch (65,536), in row groups that do not line up with it.
        let n = 150_000i64;
        let t = Table::new()
            .with("row", Column::Int((0..n).collect()))
            .with(
                "text",
                Column::Str((0..n).map(|i| format!("t{i}")).collect()),
            );
        t.write_parquet_groups(&p, 40_000).unwrap();
        assert_eq!(parquet_num_rows(&p).unwrap(), n as usize);
        let keep = |r: usize| r % 7 == 3;
        let want: Vec<i64> = (0..n).filter(|&r| keep(r as usize)).collect();
        let typed = Table::read_parquet_rows_as_arrow(&p, &keep).unwrap();
        let rows = typed.columns[0].1.texts().unwrap();
        assert_eq!(rows, want.iter().map(i64::to_string).collect::<Vec<_>>());
        let text = Table::read_parquet_rows_as_text(&p, &keep).unwrap();
        assert_eq!(
            text.str_col("text", &p).unwrap(),
            want.iter().map(|i| format!("t{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn missing_column_error_names_file_and_columns() {
        let t = Table::new().with("a", Column::Int(vec![1]));
        let e = t
            .str_col("text", Path::new("x.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.parquet") && e.contains("`text`") && e.contains("columns: a"));
    }
}
