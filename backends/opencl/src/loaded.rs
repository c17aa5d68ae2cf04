//! What every session of a loaded model shares: built once when the model
//! loads, read by each of its sessions.

use std::collections::HashMap;
use std::sync::Arc;

use ferroserve_backend_core::{DeviceTimings, Signature};
use opencl3::memory::Buffer;
use opencl3::program::Program;

use crate::device::DeviceContext;
use crate::graph::{Graph, ValueId};

/// What every session of a model shares.
pub(crate) struct Loaded {
    pub graph: Arc<Graph>,
    pub signature: Signature,
    pub device: Arc<DeviceContext>,
    pub program: Arc<Program>,
    pub weights: HashMap<ValueId, Buffer<u8>>,
    pub timings: Arc<DeviceTimings>,
}

// SAFETY: buffers and programs are OpenCL objects, usable from any thread;
// nothing here is mutated after load.
unsafe impl Send for Loaded {}
unsafe impl Sync for Loaded {}
