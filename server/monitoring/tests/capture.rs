//! The capture writer end to end on real files: what is written reads back
//! as the same rows, files rotate and are renamed only when whole, every
//! offered sample is written or counted dropped, and a kill -9 leaves no
//! torn file under a final name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use ferroserve_backend_core::{DataType, Signature, Tensor, TensorSpec};
use ferroserve_monitoring::capture::{
    Capture, CaptureCounters, CaptureSettings, Labels, Sample, Target,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn signature() -> Signature {
    let spec = |name: &str, dtype, shape: Vec<i64>| TensorSpec {
        name: name.into(),
        dtype,
        shape,
    };
    Signature {
        inputs: vec![spec("x", DataType::Fp32, vec![-1, 3])],
        outputs: vec![
            spec("score", DataType::Fp32, vec![-1, 2]),
            spec("label", DataType::Bytes, vec![-1]),
        ],
    }
}

fn target() -> Target {
    Target {
        labels: Labels {
            endpoint: "fraud".into(),
            deployment: "blue".into(),
            model_version: "3".into(),
        },
        instance: "replica-a".into(),
    }
}

fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor {
    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Tensor::new(DataType::Fp32, shape, Bytes::from(data)).unwrap()
}

/// Request `i` with `rows` rows: x[r] = [i, r, -1], score[r] = [i + r, 0.5],
/// label[r] = "l{i}-{r}"; every seventh request failed (no outputs).
fn sample(i: usize, rows: usize) -> Sample {
    let failed = i % 7 == 3;
    let x: Vec<f32> = (0..rows).flat_map(|r| [i as f32, r as f32, -1.0]).collect();
    let score: Vec<f32> = (0..rows).flat_map(|r| [(i + r) as f32, 0.5]).collect();
    let labels: Vec<String> = (0..rows).map(|r| format!("l{i}-{r}")).collect();
    Sample {
        request_id: format!("req-{i}"),
        timestamp: SystemTime::now(),
        latency: Duration::from_micros(100 + i as u64),
        status: if failed { 400 } else { 200 },
        error: failed.then(|| "x: bad".to_string()),
        inputs: vec![("x".into(), f32s(vec![rows as i64, 3], &x))],
        outputs: if failed {
            vec![]
        } else {
            vec![
                ("score".into(), f32s(vec![rows as i64, 2], &score)),
                (
                    "label".into(),
                    Tensor::from_strings(vec![rows as i64], &labels).unwrap(),
                ),
            ]
        },
    }
}

/// Every file under `dir`, final names and temporary ones apart.
fn files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut done, mut tmp) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().into_string().unwrap();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                done.push(p);
            } else if name.ends_with(".parquet.tmp") {
                tmp.push(p);
            }
        }
    }
    done.sort();
    (done, tmp)
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn settings(sink: &Path) -> CaptureSettings {
    CaptureSettings::all(sink.to_path_buf())
}

/// A capture of [`signature`]'s model, and its counters.
fn start(s: CaptureSettings) -> (Capture, CaptureCounters) {
    let counters = CaptureCounters::unregistered();
    let capture = Capture::start(s, target(), &signature(), true, counters.clone(), None).unwrap();
    (capture, counters)
}

#[test]
fn captured_rows_read_back_as_sent_one_column_per_feature() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, counters) = start(settings(dir.path()));
    for i in 0..50 {
        capture.offer(sample(i, 1 + i % 3));
    }
    capture.close();
    assert_eq!(counters.written.get(), 50);
    assert_eq!(counters.dropped_queue_full.get(), 0);
    let (done, tmp) = files(dir.path());
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(counters.files.get(), 1);
    assert_eq!(
        counters.bytes.get(),
        std::fs::metadata(&done[0]).unwrap().len()
    );
    let rel = done[0]
        .strip_prefix(dir.path())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(rel.starts_with("fraud/blue/20"), "{rel}");
    assert!(rel.ends_with("/replica-a-0.parquet"), "{rel}");

    let batches = read(&done[0]);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "request_id",
            "row",
            "endpoint",
            "deployment",
            "model_version",
            "timestamp",
            "latency_us",
            "status",
            "error",
            "x_0",
            "x_1",
            "x_2",
            "score_0",
            "score_1",
            "label"
        ]
    );
    let mut seen = 0;
    for b in &batches {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let ids = col("request_id");
        let ids = ids.as_string::<i32>();
        let row = col("row");
        let row = row.as_primitive::<UInt32Type>();
        let x0 = col("x_0");
        let x0 = x0.as_primitive::<Float32Type>();
        let x1 = col("x_1");
        let x1 = x1.as_primitive::<Float32Type>();
        let s0 = col("score_0");
        let s0 = s0.as_primitive::<Float32Type>();
        let label = col("label");
        let label = label.as_list::<i32>();
        let error = col("error");
        let error = error.as_string::<i32>();
        for k in 0..b.num_rows() {
            let i: usize = ids.value(k).strip_prefix("req-").unwrap().parse().unwrap();
            let r = row.value(k) as usize;
            assert_eq!((x0.value(k), x1.value(k)), (i as f32, r as f32));
            if i % 7 == 3 {
                assert!(s0.is_null(k) && label.is_null(k));
                assert_eq!(error.value(k), "x: bad");
            } else {
                assert_eq!(s0.value(k), (i + r) as f32);
                let l = label.value(k);
                assert_eq!(
                    l.as_binary::<i32>().value(0),
                    format!("l{i}-{r}").as_bytes()
                );
                assert!(error.is_null(k));
            }
            seen += 1;
        }
    }
    assert_eq!(seen, (0..50).map(|i| 1 + i % 3).sum::<usize>());
}

#[test]
fn files_rotate_by_size_and_nothing_is_dropped_while_the_queue_has_room() {
    offer_and_count(20_000, 20_000);
}

#[test]
fn with_a_tiny_queue_every_sample_is_written_or_counted_dropped() {
    offer_and_count(20_000, 4);
}

/// Offers `offered` 2-row samples through a queue of `queue` and checks
/// the counts against the files.
fn offer_and_count(offered: usize, queue: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_file_bytes = 8 << 10;
    s.queue = queue;
    let (capture, counters) = start(s);
    for i in 0..offered {
        capture.offer(sample(i, 2));
    }
    capture.close();
    let (written, dropped) = (counters.written.get(), counters.dropped_queue_full.get());
    assert_eq!(written + dropped, offered as u64);
    assert_eq!(counters.dropped_write_error.get(), 0);
    let (done, tmp) = files(dir.path());
    assert!(tmp.is_empty(), "{tmp:?}");
    if queue >= offered {
        assert_eq!(dropped, 0);
        assert!(done.len() > 1, "expected rotation, got {done:?}");
    }
    assert_eq!(counters.files.get(), done.len() as u64);
    let mut ids = std::collections::HashSet::new();
    let mut rows = 0;
    for f in &done {
        for b in read(f) {
            rows += b.num_rows();
            let c = b.column_by_name("request_id").unwrap().clone();
            for k in 0..b.num_rows() {
                ids.insert(c.as_string::<i32>().value(k).to_string());
            }
        }
    }
    assert_eq!(rows as u64, written * 2);
    assert_eq!(ids.len() as u64, written);
}

#[test]
fn inputs_that_do_not_fit_the_signature_are_null_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, counters) = start(settings(dir.path()));
    let mut bad = sample(0, 1);
    bad.inputs = vec![("x".into(), f32s(vec![1, 2], &[1.0, 2.0]))];
    bad.outputs.clear();
    bad.status = 400;
    capture.offer(bad);
    capture.close();
    assert_eq!(counters.written.get(), 1);
    let (done, _) = files(dir.path());
    let b = &read(&done[0])[0];
    assert!(b.column_by_name("x_0").unwrap().is_null(0));
    assert_eq!(
        b.column_by_name("status")
            .unwrap()
            .as_primitive::<arrow_array::types::UInt16Type>()
            .value(0),
        400
    );
}

#[test]
fn a_sink_that_cannot_be_written_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = Capture::start(
        settings(&blocker.join("capture")),
        target(),
        &signature(),
        true,
        CaptureCounters::unregistered(),
        None,
    )
    .err()
    .expect("a sink under a file cannot be created");
    assert!(
        err.to_string()
            .contains(&blocker.join("capture").display().to_string()),
        "{err}"
    );
    let mut s = settings(dir.path());
    s.sample_rate = 1.5;
    let err = Capture::start(
        s,
        target(),
        &signature(),
        true,
        CaptureCounters::unregistered(),
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("1.5"), "{err}");
}

const CHILD_SINK: &str = "FERROSERVE_CAPTURE_CHILD_SINK";

/// Run by `a_kill_9_leaves_only_whole_files_under_final_names` in a child
/// process: captures until it is killed.
#[test]
#[ignore = "the child of the kill -9 test"]
fn capture_child() {
    let Some(sink) = std::env::var_os(CHILD_SINK) else {
        return;
    };
    let mut s = settings(Path::new(&sink));
    s.max_file_bytes = 16 << 10;
    let capture = Capture::start(
        s,
        target(),
        &signature(),
        true,
        CaptureCounters::unregistered(),
        None,
    )
    .unwrap();
    for i in 0.. {
        capture.offer(sample(i, 3));
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn a_kill_9_leaves_only_whole_files_under_final_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["capture_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_SINK, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while files(dir.path()).0.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child wrote no files"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (done, _tmp) = files(dir.path());
    let mut counts: HashMap<PathBuf, usize> = HashMap::new();
    for f in &done {
        let rows: usize = read(f).iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "{} is empty", f.display());
        counts.insert(f.clone(), rows);
    }
    assert!(counts.len() >= 4);
}
