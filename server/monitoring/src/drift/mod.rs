//! Drift: how production traffic compares with the data a model version
//! was trained on.
//!
//! - [`baseline`]: the reference statistics `ferroserve baseline` computes
//!   from the training data and the registry keeps with the version.
//! - [`histogram`] and [`window`]: a window of production values as counts
//!   on the baseline's bins (fixed size, mergeable by adding), and the
//!   [`window::Plan`] that feeds it from a request's tensors; [`edges`]:
//!   which bin a value falls in, in a few steps.
//! - [`stats`]: PSI, Jensen–Shannon, chi-square, Kolmogorov–Smirnov and
//!   Wasserstein on those counts; [`rules`]: which one decides, at what
//!   threshold; [`report`]: all of them per feature, with data quality.
//! - [`monitor`]: one deployment's tumbling window online, its gauges
//!   ([`series`]) and the threshold crossings that become events.
//! - [`data`] and [`mapping`]: reading training and captured files and
//!   matching their columns to the model's tensors.

pub mod baseline;
pub mod data;
pub mod edges;
pub mod histogram;
pub mod mapping;
pub mod monitor;
pub mod report;
pub mod rules;
pub mod series;
pub mod stats;
pub mod window;

pub use baseline::Baseline;
pub use monitor::{Closed, Crossing, DriftSettings, Monitor, Observed, Snapshot, Watched};
pub use report::Report;
pub use rules::{Method, Rule, Rules};
pub use series::DriftSeries;
