//! Reading a table of training or captured data (Parquet or CSV, by the
//! file's extension) into named columns: numbers as f64, texts, and lists
//! of numbers (a captured non-tabular tensor's rows).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType as ArrowType};

use super::baseline::Values;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Arrow { path: PathBuf, source: ArrowError },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: expected a .parquet or .csv file, got extension {extension:?}")]
    Format { path: PathBuf, extension: String },
    #[error(
        "{path}: column {column:?} has type {found}, expected numbers, text, or lists of numbers"
    )]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
    },
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Scalar(Values),
    /// Each row a list of numbers (`None`: a null row).
    List(Vec<Option<Vec<f64>>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Scalar(v) => v.len(),
            Column::List(v) => v.len(),
        }
    }
}

/// A table read whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
    pub rows: usize,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Appends another table's rows, column by column (by name; columns
    /// the other lacks get nulls).
    pub fn append(&mut self, other: Table) {
        let rows = self.rows;
        for (name, col) in other.columns {
            match self.columns.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => extend(mine, col),
                None => {
                    let mut filled = empty_like(&col, rows);
                    extend(&mut filled, col);
                    self.columns.push((name, filled));
                }
            }
        }
        self.rows += other.rows;
        for (_, c) in &mut self.columns {
            let missing = self.rows - c.len();
            let pad = empty_like(c, missing);
            extend(c, pad);
        }
    }
}

fn empty_like(col: &Column, rows: usize) -> Column {
    match col {
        Column::Scalar(Values::Numeric(_)) => Column::Scalar(Values::Numeric(vec![None; rows])),
        Column::Scalar(Values::Text(_)) => Column::Scalar(Values::Text(vec![None; rows])),
        Column::List(_) => Column::List(vec![None; rows]),
    }
}

fn extend(a: &mut Column, b: Column) {
    match (a, b) {
        (Column::Scalar(Values::Numeric(a)), Column::Scalar(Values::Numeric(b))) => a.extend(b),
        (Column::Scalar(Values::Text(a)), Column::Scalar(Values::Text(b))) => a.extend(b),
        (Column::List(a), Column::List(b)) => a.extend(b),
        // Numbers in one file and texts in another: keep both as text.
        (Column::Scalar(a @ Values::Numeric(_)), Column::Scalar(Values::Text(b))) => {
            let Values::Numeric(nums) = std::mem::replace(a, Values::Text(Vec::new())) else {
                unreachable!()
            };
            let mut texts: Vec<Option<String>> =
                nums.into_iter().map(|x| x.map(|x| x.to_string())).collect();
            texts.extend(b);
            *a = Values::Text(texts);
        }
        (Column::Scalar(Values::Text(a)), Column::Scalar(Values::Numeric(b))) => {
            a.extend(b.into_iter().map(|x| x.map(|x| x.to_string())))
        }
        (a, b) => {
            let n = b.len();
            extend(a, empty_like(a, n));
        }
    }
}

/// Reads `path` (`.parquet` or `.csv`, with a header row).
pub fn read_table(path: &Path) -> Result<Table, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let arrow = |source| DataError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let batches: Vec<RecordBatch> = match extension.as_str() {
        "parquet" => {
            let file = File::open(path).map_err(io)?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.build())
                    .map_err(|source| DataError::Parquet {
                        path: path.to_path_buf(),
                        source,
                    })?;
            reader.collect::<Result<_, _>>().map_err(arrow)?
        }
        "csv" => {
            let mut file = File::open(path).map_err(io)?;
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = format.infer_schema(&mut file, None).map_err(arrow)?;
            let file = File::open(path).map_err(io)?;
            arrow_csv::ReaderBuilder::new(Arc::new(schema))
                .with_format(format)
                .build(file)
                .map_err(arrow)?
                .collect::<Result<_, _>>()
                .map_err(arrow)?
        }
        _ => {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                extension,
            })
        }
    };
    let mut table = Table {
        columns: Vec::new(),
        rows: 0,
    };
    for batch in batches {
        let part = table_of(&batch).map_err(|e| DataError::ColumnType {
            path: path.to_path_buf(),
            column: e.column,
            found: e.found,
        })?;
        if table.columns.is_empty() {
            table = part;
        } else {
            table.append(part);
        }
    }
    Ok(table)
}

/// A column whose Arrow type is none of numbers, text or lists of numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?} has type {found}, expected numbers, text, or lists of numbers")]
pub struct UnsupportedColumn {
    pub column: String,
    pub found: String,
}

/// One record batch as a [`Table`] (batch scoring reads files a batch at
/// a time).
pub fn table_of(batch: &RecordBatch) -> Result<Table, UnsupportedColumn> {
    let mut part = Table {
        columns: Vec::new(),
        rows: batch.num_rows(),
    };
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let col = column_of(array).map_err(|found| UnsupportedColumn {
            column: field.name().clone(),
            found,
        })?;
        part.columns.push((field.name().clone(), col));
    }
    Ok(part)
}

/// What a column of an Arrow type becomes in a [`Table`]; `None` for a
/// type it cannot hold. One decision for [`table_of`] and [`schema_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    /// Microseconds (or the file's unit) since the epoch, as numbers.
    Time,
    Text,
    Binary,
    List,
}

fn kind_of(ty: &ArrowType) -> Option<Kind> {
    match ty {
        _ if is_number(ty) => Some(Kind::Number),
        ArrowType::Timestamp(..) | ArrowType::Date32 | ArrowType::Date64 => Some(Kind::Time),
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => Some(Kind::Text),
        ArrowType::Binary | ArrowType::LargeBinary => Some(Kind::Binary),
        ArrowType::List(f) | ArrowType::LargeList(f) | ArrowType::FixedSizeList(f, _)
            if is_number(f.data_type()) =>
        {
            Some(Kind::List)
        }
        _ => None,
    }
}

/// An empty table with `schema`'s columns, each of the kind [`table_of`]
/// would make of it: what mapping columns to tensors needs, without
/// converting any value.
pub fn schema_table(schema: &arrow_schema::Schema) -> Result<Table, UnsupportedColumn> {
    let mut columns = Vec::new();
    for field in schema.fields() {
        let column = match kind_of(field.data_type()) {
            Some(Kind::Number | Kind::Time) => Column::Scalar(Values::Numeric(Vec::new())),
            Some(Kind::Text | Kind::Binary) => Column::Scalar(Values::Text(Vec::new())),
            Some(Kind::List) => Column::List(Vec::new()),
            None => {
                return Err(UnsupportedColumn {
                    column: field.name().clone(),
                    found: field.data_type().to_string(),
                })
            }
        };
        columns.push((field.name().clone(), column));
    }
    Ok(Table { columns, rows: 0 })
}

fn column_of(array: &ArrayRef) -> Result<Column, String> {
    let Some(kind) = kind_of(array.data_type()) else {
        return Err(array.data_type().to_string());
    };
    match kind {
        Kind::Number => Ok(Column::Scalar(Values::Numeric(numbers(array)?))),
        Kind::Time => {
            let i = arrow_cast::cast(array, &ArrowType::Int64).map_err(|e| e.to_string())?;
            Ok(Column::Scalar(Values::Numeric(numbers(&i)?)))
        }
        Kind::Text => {
            let s = arrow_cast::cast(array, &ArrowType::Utf8).map_err(|e| e.to_string())?;
            let s = s.as_string::<i32>();
            Ok(Column::Scalar(Values::Text(
                s.iter().map(|v| v.map(str::to_string)).collect(),
            )))
        }
        Kind::Binary => {
            let s = arrow_cast::cast(array, &ArrowType::Binary).map_err(|e| e.to_string())?;
            let s = s.as_binary::<i32>();
            Ok(Column::Scalar(Values::Text(
                s.iter()
                    .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            )))
        }
        Kind::List => {
            let list = arrow_cast::cast(
                array,
                &ArrowType::List(Arc::new(arrow_schema::Field::new_list_field(
                    ArrowType::Float64,
                    true,
                ))),
            )
            .map_err(|e| e.to_string())?;
            let list = list.as_list::<i32>();
            let mut out = Vec::with_capacity(list.len());
            for i in 0..list.len() {
                if list.is_null(i) {
                    out.push(None);
                    continue;
                }
                let row = list.value(i);
                let row = row.as_primitive::<Float64Type>();
                out.push(Some(row.iter().map(|x| x.unwrap_or(f64::NAN)).collect()));
            }
            Ok(Column::List(out))
        }
    }
}

fn is_number(ty: &ArrowType) -> bool {
    ty.is_numeric() || matches!(ty, ArrowType::Boolean)
}

fn numbers(array: &ArrayRef) -> Result<Vec<Option<f64>>, String> {
    let f = arrow_cast::cast(array, &ArrowType::Float64).map_err(|e| e.to_string())?;
    Ok(f.as_primitive::<Float64Type>().iter().collect())
}
