//! One file through the model. A reader thread decodes and converts
//! record batches into a bounded queue; this thread checks rows, builds
//! tensors and keeps up to `depth` requests in the model's queue at once
//! (so its batcher always has a full batch waiting); a writer thread
//! encodes the answers, in input order, into the output file. Each queue holds a few batches,
//! so memory stays flat however large the file is.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType as ArrowType, Field};
use crossbeam_channel::{bounded, Receiver, Sender};
use ferroserve_backend_core::Tensor;
use ferroserve_monitoring::drift::baseline::Values;
use ferroserve_monitoring::drift::data::{schema_table, table_of, Column, Table};
use ferroserve_monitoring::drift::mapping::{map_inputs, Mapped, TensorColumns};
use ferroserve_runtime::Model;
use tokio::task::JoinHandle;

use crate::direct::Direct;
use crate::options::{Options, Progress};
use crate::outputs::OutputColumns;
use crate::sink::{Format, Sink};
use crate::tensors::{row_problem, tensor_of, Resolved, Strictness};
use crate::BatchError;

/// A model loaded for batch scoring, with what scoring it needs.
pub struct Scorer {
    pub model: Arc<Model>,
    pub batched: bool,
    /// Rows per request: the batcher's full batch (1 for an unbatched
    /// model).
    pub chunk: usize,
    /// Requests in the model's queue at once.
    pub depth: usize,
    pub feature_names: HashMap<String, Vec<String>>,
    /// A raw-style entry script: each row goes to run() as a JSON object.
    pub raw: bool,
    pub runtime: tokio::runtime::Runtime,
}

/// What scoring one file came to.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    pub rows: u64,
    pub scored: u64,
    /// `(row, reason)` of each row not scored, in row order.
    pub errors: Vec<(u64, String)>,
    /// The finished output file, unless `--summary-only`.
    pub output: Option<PathBuf>,
}

/// One request's rows, its place in the file, and its answer to come.
struct InFlight {
    /// The file's row number of each row sent.
    rows: Vec<u64>,
    ids: ArrayRef,
    answer: JoinHandle<Vec<Piece>>,
}

/// A record batch as read, and as a table where it needs one.
type Decoded = (RecordBatch, Option<Table>);

/// Whether the `wanted` columns (all of them before the plan says which)
/// are numbers or lists of numbers: what the direct path takes.
fn all_numeric(batch: &RecordBatch, wanted: Option<&Vec<String>>) -> bool {
    batch.schema().fields().iter().all(|f| {
        if wanted.is_some_and(|w| !w.contains(f.name())) {
            return true;
        }
        match f.data_type() {
            ArrowType::List(e) | ArrowType::LargeList(e) | ArrowType::FixedSizeList(e, _) => {
                e.data_type().is_numeric()
            }
            t => t.is_numeric(),
        }
    })
}

/// A request's inputs by name.
type Named = Vec<(String, Tensor)>;

/// Part of a request's rows: answered together, or one row that failed.
enum Piece {
    Scored {
        rows: Range<usize>,
        answers: Vec<Vec<Tensor>>,
    },
    Failed {
        row: usize,
        reason: String,
    },
}

/// Scores `input` into `output` (in `format`); `Err` when the file cannot
/// be scored at all, or the run's error threshold is crossed.
pub fn score_file(
    scorer: &Scorer,
    opts: &Options,
    input: &Path,
    output: &Path,
    progress: &Progress,
) -> Result<Scored, BatchError> {
    let read_rows = (scorer.chunk * 4).max(1024);
    // A raw-style script reads a JSON Lines file's lines as request bodies.
    let verbatim = scorer.raw && crate::read::is_json_lines(input);
    let (batches, total) = if verbatim {
        (crate::read::open_lines(input, read_rows)?, None)
    } else {
        crate::read::open(input, read_rows)?
    };
    if let Some(t) = total {
        progress.expected.fetch_add(t, Ordering::Relaxed);
    }
    // The reader decodes, and converts to a table the batches that need
    // one (texts to parse, BYTES inputs, a raw-style script): the work this
    // thread would otherwise do while the model's queue runs dry. Numbers
    // and lists of numbers go by the direct path, converted on this thread
    // a few vectorised casts at a time.
    let needs_table = scorer.raw
        || scorer
            .model
            .signature
            .inputs
            .iter()
            .any(|s| s.dtype == ferroserve_backend_core::DataType::Bytes);
    let (batch_tx, batch_rx) = bounded::<Result<Decoded, BatchError>>(2);
    let path = input.to_path_buf();
    // The columns the inputs read, once the first batch has planned them:
    // an id column of texts need not send every batch down the table path.
    let mapped_columns: Arc<OnceLock<Vec<String>>> = Arc::default();
    let wanted = mapped_columns.clone();
    let reader = thread::Builder::new()
        .name("batch-read".into())
        .spawn(move || {
            for b in batches {
                let decoded = match b {
                    Ok(batch) if !needs_table && all_numeric(&batch, wanted.get()) => {
                        Ok((batch, None))
                    }
                    Ok(batch) => table_of(&batch)
                        .map(|table| (batch, Some(table)))
                        .map_err(|e| BatchError::File {
                            path: path.clone(),
                            message: e.to_string(),
                        }),
                    Err(e) => Err(BatchError::Read {
                        path: path.clone(),
                        message: e.to_string(),
                    }),
                };
                if batch_tx.send(decoded).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| BatchError::Read {
            path: input.to_path_buf(),
            message: format!("cannot start a reader thread: {e}"),
        })?;
    let file = FileJob {
        input,
        output,
        verbatim,
        mapped_columns: &mapped_columns,
    };
    let result = scorer
        .runtime
        .block_on(score_batches(scorer, opts, &file, batch_rx, progress));
    // The reader stops at its next send once the queue's receiver is gone.
    let _ = reader.join();
    result
}

/// One file's paths and what its reader shares with this thread.
struct FileJob<'a> {
    input: &'a Path,
    output: &'a Path,
    /// A raw-style script's JSON Lines: each line is a request body.
    verbatim: bool,
    /// Set once the first batch has planned the inputs' columns.
    mapped_columns: &'a OnceLock<Vec<String>>,
}

async fn score_batches(
    scorer: &Scorer,
    opts: &Options,
    file: &FileJob<'_>,
    batches: Receiver<Result<Decoded, BatchError>>,
    progress: &Progress,
) -> Result<Scored, BatchError> {
    let (input, output, verbatim, mapped_columns) =
        (file.input, file.output, file.verbatim, file.mapped_columns);
    let file_error = |message: String| BatchError::File {
        path: input.to_path_buf(),
        message,
    };
    let strict = Strictness {
        allow_nan: opts.allow_nan,
    };
    let mut scored = Scored::default();
    let mut plan: Option<(Vec<Mapped>, OutputColumns)> = None;
    let mut writer: Option<Writer> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_row: u64 = 0;
    while let Ok(batch) = batches.recv() {
        let (batch, table) = batch?;
        let shape = schema_table(&batch.schema()).map_err(|e| file_error(e.to_string()))?;
        if plan.is_none() {
            let mapped = if scorer.raw {
                Vec::new()
            } else {
                map(scorer, opts, &shape, input)?
            };
            let id_field = match &opts.id_column {
                Some(c) => {
                    let Some(f) = batch.schema().field_with_name(c).ok().cloned() else {
                        return Err(BatchError::Argument {
                            argument: "--id-column",
                            message: format!(
                                "{}: no column {c:?} (its columns: {:?})",
                                input.display(),
                                shape.names()
                            ),
                        });
                    };
                    f.with_nullable(true)
                }
                None => Field::new("row", ArrowType::Int64, false),
            };
            let columns = if scorer.raw {
                OutputColumns::raw(id_field)
            } else {
                OutputColumns::new(
                    &scorer.model.signature,
                    scorer.batched,
                    &scorer.feature_names,
                    id_field,
                )
            };
            if !opts.summary_only {
                if opts.format == Format::Csv && !columns.all_scalar() {
                    return Err(BatchError::Argument {
                        argument: "--format",
                        message: format!(
                            "csv cannot hold the list columns of outputs {:?}; use parquet or jsonl",
                            columns.list_columns()
                        ),
                    });
                }
                writer = Some(Writer::start(output, opts.format, &columns)?);
            }
            let _ = mapped_columns.set(
                mapped
                    .iter()
                    .flat_map(|m| match &m.columns {
                        TensorColumns::Tabular(cols) => {
                            cols.iter().map(|(_, c)| c.clone()).collect()
                        }
                        TensorColumns::List(c) => vec![c.clone()],
                    })
                    .collect(),
            );
            plan = Some((mapped, columns));
        }
        let (mapped, columns) = plan.as_ref().expect("planned above");
        let n_rows = batch.num_rows();
        let base = next_row;
        next_row += n_rows as u64;
        scored.rows += n_rows as u64;
        let direct = match &table {
            None if !scorer.raw => Direct::new(&batch, mapped),
            _ => None,
        };
        // The table path, for what the direct one does not take.
        let table = match (table, &direct) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(table_of(&batch).map_err(|e| file_error(e.to_string()))?),
        };
        let resolved: Vec<Resolved> = match &table {
            Some(t) => mapped.iter().map(|m| Resolved::new(m, t)).collect(),
            None => Vec::new(),
        };
        let mut good: Vec<usize> = Vec::with_capacity(n_rows);
        for r in 0..n_rows {
            let problem = match &direct {
                Some(d) => d.row_problem(r, scorer.batched, strict),
                None => mapped
                    .iter()
                    .zip(&resolved)
                    .find_map(|(m, c)| row_problem(m, c, r, scorer.batched, strict)),
            };
            match problem {
                Some(reason) => {
                    scored.errors.push((base + r as u64, reason));
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                None => good.push(r),
            }
        }
        check_threshold(opts, progress)?;
        let ids_all: Option<ArrayRef> = opts.id_column.as_ref().and_then(|c| {
            batch
                .schema()
                .index_of(c)
                .ok()
                .map(|i| batch.column(i).clone())
        });
        for rows in good.chunks(scorer.chunk) {
            let named = if let (true, Some(table)) = (scorer.raw, &table) {
                // One row per call, as its JSON object: what the script's
                // run(raw_data) gets from POST /score.
                let body = match (verbatim, table.columns.first()) {
                    (true, Some((_, Column::Scalar(Values::Text(lines))))) => {
                        lines[rows[0]].clone().unwrap_or_default()
                    }
                    _ => row_json(table, rows[0]),
                };
                let t = Tensor::from_strings(vec![1], &[body])
                    .map_err(|e| file_error(format!("row {}: {e}", base + rows[0] as u64)))?;
                vec![("raw".to_string(), t)]
            } else if let Some(d) = &direct {
                d.tensors(rows, scorer.batched)
                    .map_err(|e| file_error(format!("inputs: {e}")))?
            } else {
                mapped
                    .iter()
                    .zip(&resolved)
                    .map(|(m, c)| {
                        tensor_of(m, c, rows, scorer.batched)
                            .map(|t| (m.spec.name.clone(), t))
                            .map_err(|e| file_error(format!("input {:?}: {e}", m.spec.name)))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let ids: ArrayRef = match &ids_all {
                Some(col) => {
                    let idx = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
                    arrow_select::take::take(col.as_ref(), &idx, None)
                        .map_err(|e| file_error(e.to_string()))?
                }
                None => Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|&r| (base + r as u64) as i64),
                )),
            };
            let model = scorer.model.clone();
            let (n, batched, retries) = (rows.len(), scorer.batched, opts.max_retries);
            in_flight.push_back(InFlight {
                rows: rows.iter().map(|&r| base + r as u64).collect(),
                ids,
                answer: tokio::spawn(score_rows(model, named, n, batched, retries)),
            });
            while in_flight.len() >= scorer.depth {
                let done = in_flight.pop_front().expect("not empty");
                finish(done, columns, writer.as_ref(), &mut scored, progress, input).await?;
                check_threshold(opts, progress)?;
            }
        }
    }
    let columns = match &plan {
        Some((_, c)) => c.clone(),
        None => {
            // An empty file: no rows, but still an output with the columns.
            let row = Field::new("row", ArrowType::Int64, false);
            let mapped_none = if scorer.raw {
                OutputColumns::raw(row)
            } else {
                OutputColumns::new(
                    &scorer.model.signature,
                    scorer.batched,
                    &scorer.feature_names,
                    row,
                )
            };
            if !opts.summary_only {
                writer = Some(Writer::start(output, opts.format, &mapped_none)?);
            }
            mapped_none
        }
    };
    while let Some(done) = in_flight.pop_front() {
        finish(
            done,
            &columns,
            writer.as_ref(),
            &mut scored,
            progress,
            input,
        )
        .await?;
        check_threshold(opts, progress)?;
    }
    if let Some(w) = writer {
        scored.output = Some(w.close()?);
    }
    Ok(scored)
}

fn check_threshold(opts: &Options, progress: &Progress) -> Result<(), BatchError> {
    let errors = progress.errors.load(Ordering::Relaxed);
    match opts.error_threshold {
        Some(t) if errors > t => Err(BatchError::Threshold {
            errors,
            threshold: t,
        }),
        _ => Ok(()),
    }
}

/// Row `r` as a JSON object of its columns (numbers, texts, lists of
/// numbers; nulls as null).
fn row_json(table: &Table, r: usize) -> String {
    let mut row = serde_json::Map::new();
    for (name, column) in &table.columns {
        let v = match column {
            Column::Scalar(Values::Numeric(v)) => v[r].map_or(serde_json::Value::Null, |x| {
                serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, Into::into)
            }),
            Column::Scalar(Values::Text(v)) => v[r]
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String),
            Column::List(v) => v[r].as_ref().map_or(serde_json::Value::Null, |xs| {
                xs.iter()
                    .map(|&x| {
                        serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, Into::into)
                    })
                    .collect()
            }),
        };
        row.insert(name.clone(), v);
    }
    serde_json::Value::Object(row).to_string()
}

/// Waits for a request's answer and hands its rows to the writer.
async fn finish(
    done: InFlight,
    columns: &OutputColumns,
    writer: Option<&Writer>,
    scored: &mut Scored,
    progress: &Progress,
    input: &Path,
) -> Result<(), BatchError> {
    let pieces = done.answer.await.map_err(|e| BatchError::File {
        path: input.to_path_buf(),
        message: format!("a scoring task failed: {e}"),
    })?;
    for piece in pieces {
        match piece {
            Piece::Scored { rows, answers } => {
                let n = rows.len() as u64;
                if let Some(w) = writer {
                    let ids = done.ids.slice(rows.start, rows.len());
                    let batch = columns.batch(ids, &answers).map_err(|e| BatchError::File {
                        path: input.to_path_buf(),
                        message: format!("the model's outputs do not make columns: {e}"),
                    })?;
                    w.send(batch)?;
                }
                scored.scored += n;
                progress.rows.fetch_add(n, Ordering::Relaxed);
            }
            Piece::Failed { row, reason } => {
                scored.errors.push((done.rows[row], reason));
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Scores `rows` rows: a failure the server side could recover from (an
/// overloaded queue, a timeout, a backend error) is retried `retries`
/// times with a growing pause; a failure that persists splits the rows in
/// halves until the rows that fail on their own are found.
async fn score_rows(
    model: Arc<Model>,
    named: Vec<(String, Tensor)>,
    rows: usize,
    batched: bool,
    retries: u32,
) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut todo: VecDeque<(usize, usize, Named)> = VecDeque::new();
    todo.push_back((0, rows, named));
    while let Some((offset, n, named)) = todo.pop_front() {
        let mut attempt = 0;
        let failure = loop {
            match model.infer_uncounted(named.clone(), None).await {
                Ok(out) => {
                    pieces.push(Piece::Scored {
                        rows: offset..offset + n,
                        answers: vec![out.outputs],
                    });
                    break None;
                }
                Err(e) if e.http_status() >= 500 && attempt < retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        let Some(reason) = failure else { continue };
        if !batched || n == 1 {
            pieces.push(Piece::Failed {
                row: offset,
                reason,
            });
            continue;
        }
        match split(&named, n) {
            Some((left, right)) => {
                let half = n / 2;
                todo.push_front((offset + half, n - half, right));
                todo.push_front((offset, half, left));
            }
            None => pieces.extend((offset..offset + n).map(|row| Piece::Failed {
                row,
                reason: reason.clone(),
            })),
        }
    }
    pieces
}

/// The inputs' first `n / 2` rows and the rest.
fn split(named: &[(String, Tensor)], n: usize) -> Option<(Named, Named)> {
    let half = n / 2;
    let mut left = Vec::with_capacity(named.len());
    let mut right = Vec::with_capacity(named.len());
    for (name, t) in named {
        let mut parts = t.split(&[half, n - half]).ok()?.into_iter();
        left.push((name.clone(), parts.next()?));
        right.push((name.clone(), parts.next()?));
    }
    Some((left, right))
}

/// Maps the model's inputs onto the file's columns: `--map` first, then
/// the bundle's `feature_names`, then the columns' own names.
fn map(
    scorer: &Scorer,
    opts: &Options,
    table: &Table,
    input_path: &Path,
) -> Result<Vec<Mapped>, BatchError> {
    let file_error = |message: String| BatchError::File {
        path: input_path.to_path_buf(),
        message,
    };
    let mut names = scorer.feature_names.clone();
    let mut lists: Vec<(String, String)> = Vec::new();
    for (input, cols) in &opts.map {
        for c in cols {
            if table.column(c).is_none() {
                return Err(BatchError::Argument {
                    argument: "--map",
                    message: format!(
                        "{input}=...: {} has no column {c:?} (its columns: {:?})",
                        input_path.display(),
                        table.names()
                    ),
                });
            }
        }
        if let [c] = cols.as_slice() {
            if matches!(table.column(c), Some(Column::List(_))) {
                lists.push((input.clone(), c.clone()));
                continue;
            }
        }
        names.insert(input.clone(), cols.clone());
    }
    let signature = &scorer.model.signature;
    // A list column named as an input feeds it whatever its shape (a
    // `[-1, k]` input's rows kept as lists, as the capture keeps them).
    for spec in &signature.inputs {
        if !names.contains_key(&spec.name)
            && !lists.iter().any(|(i, _)| *i == spec.name)
            && matches!(table.column(&spec.name), Some(Column::List(_)))
        {
            lists.push((spec.name.clone(), spec.name.clone()));
        }
    }
    let mut mapped = map_inputs(table, &signature.inputs, scorer.batched, &names)
        .or_else(|e| {
            // A list column named by --map stands in for the input's name.
            if lists.is_empty() {
                Err(e)
            } else {
                Ok(Vec::new())
            }
        })
        .map_err(|e| file_error(e.to_string()))?;
    if !lists.is_empty() {
        mapped = signature
            .inputs
            .iter()
            .map(|spec| {
                if let Some((_, c)) = lists.iter().find(|(i, _)| *i == spec.name) {
                    return Ok(Mapped {
                        spec: spec.clone(),
                        columns: TensorColumns::List(c.clone()),
                    });
                }
                map_inputs(table, std::slice::from_ref(spec), scorer.batched, &names)
                    .map(|mut m| m.remove(0))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()
            .map_err(file_error)?;
    }
    Ok(mapped)
}

/// What the writer thread receives: batches, then `Done` to finish the
/// file. A queue that closes without `Done` (the run stopped) abandons the
/// temporary file, so no partial output takes the final name.
enum ToWriter {
    Batch(RecordBatch),
    Done,
}

/// The writer thread of one output file.
struct Writer {
    tx: Sender<ToWriter>,
    thread: thread::JoinHandle<Result<Option<PathBuf>, BatchError>>,
    path: PathBuf,
}

impl Writer {
    fn start(path: &Path, format: Format, columns: &OutputColumns) -> Result<Writer, BatchError> {
        let mut sink = Sink::create(path, format, columns.schema())?;
        let (tx, rx) = bounded::<ToWriter>(4);
        let thread = thread::Builder::new()
            .name("batch-write".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        ToWriter::Batch(batch) => {
                            if let Err(e) = sink.write(&batch) {
                                sink.abandon();
                                return Err(e);
                            }
                        }
                        ToWriter::Done => return sink.finish().map(Some),
                    }
                }
                sink.abandon();
                Ok(None)
            })
            .map_err(|e| BatchError::Write {
                path: path.to_path_buf(),
                message: format!("cannot start a writer thread: {e}"),
            })?;
        Ok(Writer {
            tx,
            thread,
            path: path.to_path_buf(),
        })
    }

    /// Queues a batch; a writer that has stopped (on an error) says why
    /// when the file is closed, and here that it stopped.
    fn send(&self, batch: RecordBatch) -> Result<(), BatchError> {
        self.tx
            .send(ToWriter::Batch(batch))
            .map_err(|_| BatchError::Write {
                path: self.path.clone(),
                message: "the writer stopped on an earlier error".into(),
            })
    }

    fn close(self) -> Result<PathBuf, BatchError> {
        let _ = self.tx.send(ToWriter::Done);
        drop(self.tx);
        let path = self.path;
        match self.thread.join() {
            Ok(Ok(Some(p))) => Ok(p),
            Ok(Ok(None)) => Err(BatchError::Write {
                path,
                message: "the writer stopped before the file was complete".into(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BatchError::Write {
                path,
                message: "the writer thread panicked".into(),
            }),
        }
    }
}
