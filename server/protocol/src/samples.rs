//! Files of v2 inference requests (one request object, or a list of them),
//! as bundles carry for warm-up and the load tester reads with `--input`.

use std::path::Path;

use bytes::Bytes;
use ferroserve_backend_core::Tensor;
use serde_json::Value;

/// One request's inputs, by name.
pub type Inputs = Vec<(String, Tensor)>;

/// Every request of the file, decoded with the server's own JSON decoder,
/// so a file that loads here is one the server accepts.
pub fn read(path: &Path) -> Result<Vec<Inputs>, String> {
    let what = path.display();
    let text = std::fs::read(path).map_err(|e| format!("{what}: cannot read: {e}"))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{what}: not JSON: {e}"))?;
    let list = match value {
        Value::Array(list) => list,
        one @ Value::Object(_) => vec![one],
        other => {
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            };
            return Err(format!(
                "{what}: expected a v2 inference request or a list of them, got {kind}"
            ));
        }
    };
    if list.is_empty() {
        return Err(format!("{what}: the list of requests is empty"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let body = Bytes::from(serde_json::to_vec(&r).expect("JSON re-serializes"));
            crate::json::decode_request(body, None)
                .map(|req| req.inputs)
                .map_err(|e| format!("{what}: request {i}: {e}"))
        })
        .collect()
}
