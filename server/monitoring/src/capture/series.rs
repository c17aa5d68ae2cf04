//! The capture's Prometheus families, labelled by endpoint and deployment;
//! the server registers them, [`CaptureSeries::for_deployment`] hands one
//! deployment's children to its capture.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::CaptureCounters;

#[derive(Clone)]
pub struct CaptureSeries {
    samples: IntCounterVec,
    dropped: IntCounterVec,
    bytes: IntCounterVec,
    files: IntCounterVec,
    queue_depth: IntGaugeVec,
}

const LABELS: [&str; 2] = ["endpoint", "deployment"];

impl CaptureSeries {
    pub fn new() -> CaptureSeries {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        CaptureSeries {
            samples: counter(
                "ferroserve_capture_samples_total",
                "Captured requests written to closed Parquet files",
                &LABELS,
            ),
            dropped: counter(
                "ferroserve_capture_dropped_total",
                "Sampled requests not captured, by reason (queue_full, write_error)",
                &["endpoint", "deployment", "reason"],
            ),
            bytes: counter(
                "ferroserve_capture_bytes_total",
                "Bytes of closed capture files",
                &LABELS,
            ),
            files: counter(
                "ferroserve_capture_files_total",
                "Capture files closed and given their final names",
                &LABELS,
            ),
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "ferroserve_capture_queue_depth",
                    "Samples waiting for the capture writer",
                ),
                &LABELS,
            )
            .expect("valid metric"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.samples.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.files.clone()),
            Box::new(self.queue_depth.clone()),
        ]
    }

    /// One deployment's counters. A redeployed deployment of the same name
    /// continues the same series.
    pub fn for_deployment(&self, endpoint: &str, deployment: &str) -> CaptureCounters {
        let l = [endpoint, deployment];
        CaptureCounters {
            written: self.samples.with_label_values(&l),
            dropped_queue_full: self.dropped.with_label_values(&[
                endpoint,
                deployment,
                "queue_full",
            ]),
            dropped_write_error: self.dropped.with_label_values(&[
                endpoint,
                deployment,
                "write_error",
            ]),
            bytes: self.bytes.with_label_values(&l),
            files: self.files.with_label_values(&l),
            queue_depth: self.queue_depth.with_label_values(&l),
        }
    }
}

impl Default for CaptureSeries {
    fn default() -> Self {
        CaptureSeries::new()
    }
}
