use std::sync::Arc;

use crate::{DataType, DeviceTimings, Tensor};

/// A named input or output: what a model accepts or produces.
///
/// `shape` uses -1 for a dimension the model leaves free (the batch dimension
/// of a batchable model, or a variable sequence length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a loaded model, in the order [`Backend::run`] uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Errors a backend reports. The message is shown to clients as is, so it says
/// what the backend said without internal detail the client cannot act on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("failed to load model: {0}")]
    Load(String),
    #[error("model signature: {0}")]
    Signature(String),
    #[error("inference failed: {0}")]
    Run(String),
}

/// What a backend offers beyond running batches of tensors. The layers above
/// ask the backend through [`Backend::capabilities`] instead of reading a
/// backend's own settings, so a new backend says what it can do in one place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The model takes a request body as it came (one BYTES element per
    /// request) and answers free-form text, as Azure ML's raw-style entry
    /// scripts do: the server offers it `POST /v2/models/{m}/score`, and no
    /// warm-up request of zeros can be made up for it.
    pub raw_body: bool,
}

/// Whether a loaded model can answer now, for backends whose sessions can
/// fail after loading succeeded (a Python worker whose `init()` raised).
/// Shared by all sessions of one loaded model.
pub trait Health: Send + Sync {
    /// Why the model cannot answer; `None` when it can.
    fn failure(&self) -> Option<String>;
}

/// One loaded session of a model on one device.
///
/// The scheduler owns one `Backend` per instance worker thread and calls it
/// with whole batches; a backend never sees requests, queues or clients.
pub trait Backend: Send {
    /// The signature as the model itself reports it.
    fn signature(&self) -> &Signature;

    /// Runs one batch. `inputs` follow `signature().inputs` in order; the
    /// result follows `signature().outputs` in order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;

    /// Per-kernel device time, for backends that can measure their device.
    /// The server exports it in `/metrics`; the scheduler never looks.
    fn device_timings(&self) -> Option<Arc<DeviceTimings>> {
        None
    }

    /// What this backend offers beyond [`Backend::run`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The readiness of the model this session belongs to, for backends
    /// whose sessions can become unable to answer; `None`: always ready.
    fn health(&self) -> Option<Arc<dyn Health>> {
        None
    }
}
