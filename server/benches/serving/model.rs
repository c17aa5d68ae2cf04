//! What the benchmark needs to know about an example bundle, read from its
//! `bundle.toml`, and the requests it sends to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ferroserve_loadtest::RequestSpec;

/// One single-input, single-output FP32 bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub model_file: PathBuf,
    pub input: String,
    /// The input's dims after the batch dimension.
    pub row_shape: Vec<i64>,
    pub output: String,
    /// Bytes of one row of the output (its fixed dims after the batch
    /// dimension times its element size), so answers can be checked.
    pub output_row_bytes: usize,
    pub max_batch_size: usize,
    /// Intra-op threads as the server resolves them, so the in-process
    /// reference runs ONNX Runtime exactly as the server does.
    pub intra_op_threads: usize,
}

impl Bundle {
    /// Reads the newest version of `repo/name`.
    pub fn read(repo: &Path, name: &str) -> Result<Bundle> {
        let (dir, doc) = crate::settings::newest_bundle_toml(repo, name)?;
        let file = dir.join("bundle.toml");
        let first = |key: &str| -> Result<&toml::Value> {
            match doc.get(key).and_then(|v| v.as_array()).map(Vec::as_slice) {
                Some([one]) => Ok(one),
                _ => bail!(
                    "{}: the benchmark needs exactly one [[{key}]]",
                    file.display()
                ),
            }
        };
        let input = first("inputs")?;
        let output = first("outputs")?;
        if input.get("datatype").and_then(|v| v.as_str()) != Some("FP32") {
            bail!("{}: the benchmark sends FP32 inputs only", file.display());
        }
        let batched_shape = |tensor: &toml::Value, what: &str| -> Result<Vec<i64>> {
            let shape: Vec<i64> = tensor
                .get("shape")
                .and_then(|v| v.as_array())
                .with_context(|| format!("{}: {what} shape", file.display()))?
                .iter()
                .map(|d| d.as_integer().context("shape dims are integers"))
                .collect::<Result<_>>()?;
            if shape.first() != Some(&-1) || shape[1..].iter().any(|&d| d < 1) {
                bail!(
                    "{}: the benchmark needs {what} shape [-1, fixed dims…], got {shape:?}",
                    file.display()
                );
            }
            Ok(shape)
        };
        let shape = batched_shape(input, "input")?;
        let output_shape = batched_shape(output, "output")?;
        let output_datatype = output
            .get("datatype")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let output_element_bytes = element_bytes(output_datatype).with_context(|| {
            format!(
                "{}: the benchmark checks answers by size and cannot size {output_datatype:?} outputs",
                file.display()
            )
        })?;
        let int = |table: &str, key: &str| -> usize {
            doc.get(table)
                .and_then(|t| t.get(key))
                .and_then(|v| v.as_integer())
                .map_or(0, |v| v.max(0) as usize)
        };
        let count = int("instances", "count").max(1);
        let intra_op_threads = match int("instances", "intra_op_threads") {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / count).max(1),
            n => n,
        };
        let model = doc
            .get("model")
            .and_then(|v| v.as_str())
            .unwrap_or("model.onnx");
        let name_of = |t: &toml::Value| {
            t.get("name")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(Bundle {
            name: name.to_string(),
            model_file: dir.join(model),
            input: name_of(input),
            row_shape: shape[1..].to_vec(),
            output: name_of(output),
            output_row_bytes: output_shape[1..].iter().product::<i64>() as usize
                * output_element_bytes,
            max_batch_size: int("batching", "max_batch_size"),
            intra_op_threads,
        })
    }

    pub fn row_elements(&self) -> usize {
        self.row_shape.iter().product::<i64>() as usize
    }

    /// `rows` rows of deterministic pseudo-random FP32 in [-1, 1), as
    /// little-endian bytes: the same input for the server and the in-process
    /// reference, and the same on every run.
    pub fn input_data(&self, rows: usize) -> Bytes {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = Vec::with_capacity(rows * self.row_elements() * 4);
        for _ in 0..rows * self.row_elements() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            out.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(out)
    }

    pub fn shape(&self, rows: usize) -> Vec<i64> {
        let mut shape = vec![rows as i64];
        shape.extend_from_slice(&self.row_shape);
        shape
    }

    /// An infer request with binary tensors in both directions, as a
    /// performance-minded client (Triton's, with `binary_data=True`) sends it.
    pub fn infer_request(&self, rows: usize) -> Result<RequestSpec> {
        let data = self.input_data(rows);
        let header = serde_json::json!({
            "inputs": [{
                "name": self.input,
                "shape": self.shape(rows),
                "datatype": "FP32",
                "parameters": {"binary_data_size": data.len()},
            }],
            "outputs": [{"name": self.output, "parameters": {"binary_data": true}}],
        })
        .to_string();
        let mut body = Vec::with_capacity(header.len() + data.len());
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(&data);
        Ok(
            RequestSpec::post(format!("/v2/models/{}/infer", self.name), body)
                .header("inference-header-content-length", header.len().to_string())?
                .header("content-type", "application/octet-stream")?,
        )
    }
}

/// Bytes per element of a fixed-size datatype; `None` for BYTES (strings
/// have no fixed size) and unknown names.
fn element_bytes(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}
