//! A decoded inference request, the same whichever protocol carried it.

use std::time::Duration;

use ferroserve_backend_core::Tensor;
use serde_json::{Map, Value};

/// An output the client asked for, and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: bool,
    /// The classification extension: return the top N classes of this
    /// output as `"score:index[:label]"` strings instead of its values.
    pub classification: Option<usize>,
}

/// A decoded inference request, before validation against the model.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<(String, Tensor)>,
    /// `None`: every output, binary if `binary_data_output` was set.
    pub outputs: Option<Vec<RequestedOutput>>,
    pub binary_data_output: bool,
    /// Custom parameters, echoed back in the response.
    pub parameters: Option<Map<String, Value>>,
    /// Triton's `timeout` parameter (microseconds).
    pub timeout: Option<Duration>,
}
