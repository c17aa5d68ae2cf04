//! What the benchmark needs to know about a python example bundle, read from
//! its `bundle.toml`, and the requests it sends to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ferroserve_loadtest::RequestSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Tensor,
    Raw,
}

/// One declared FP32 input: its name and its dims after the batch dimension.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub row_shape: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct PyBundle {
    pub name: String,
    /// The version folder, which is the script's `AZUREML_MODEL_DIR`.
    pub dir: PathBuf,
    pub script: PathBuf,
    pub style: Style,
    /// Tensor style: the inputs (FP32 only) and the output names.
    pub inputs: Vec<Input>,
    pub outputs: Vec<String>,
    pub max_batch_size: usize,
    /// Worker processes the server runs for it.
    pub instances: usize,
}

impl PyBundle {
    /// Reads the newest version of `repo/name`.
    pub fn read(repo: &Path, name: &str) -> Result<PyBundle> {
        let (dir, doc) = crate::settings::newest_bundle_toml(repo, name)?;
        let file = dir.join("bundle.toml");
        let str_at = |table: Option<&str>, key: &str| -> Option<String> {
            let t = match table {
                Some(t) => doc.get(t)?,
                None => &doc,
            };
            t.get(key)?.as_str().map(str::to_string)
        };
        if str_at(None, "backend").as_deref() != Some("python") {
            bail!("{}: not a python bundle", file.display());
        }
        let style = match str_at(Some("python"), "style").as_deref() {
            Some("tensor") => Style::Tensor,
            Some("raw") | None => Style::Raw,
            Some(other) => bail!("{}: unknown python style {other:?}", file.display()),
        };
        let script = dir.join(str_at(None, "model").unwrap_or_else(|| "score.py".to_string()));
        let int = |table: &str, key: &str| -> usize {
            doc.get(table)
                .and_then(|t| t.get(key))
                .and_then(|v| v.as_integer())
                .map_or(0, |v| v.max(0) as usize)
        };
        let tensors = |key: &str| -> Vec<&toml::Value> {
            doc.get(key)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        };
        let name_of = |t: &toml::Value| {
            t.get("name")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let mut inputs = Vec::new();
        for t in tensors("inputs") {
            if t.get("datatype").and_then(|v| v.as_str()) != Some("FP32") {
                bail!("{}: the benchmark sends FP32 inputs only", file.display());
            }
            let shape: Vec<i64> = t
                .get("shape")
                .and_then(|v| v.as_array())
                .with_context(|| format!("{}: input shape", file.display()))?
                .iter()
                .map(|d| d.as_integer().context("shape dims are integers"))
                .collect::<Result<_>>()?;
            if shape.first() != Some(&-1) || shape[1..].iter().any(|&d| d < 1) {
                bail!(
                    "{}: the benchmark needs input shape [-1, fixed dims…], got {shape:?}",
                    file.display()
                );
            }
            inputs.push(Input {
                name: name_of(t),
                row_shape: shape[1..].to_vec(),
            });
        }
        if style == Style::Tensor && inputs.is_empty() {
            bail!("{}: a tensor-style bundle without inputs", file.display());
        }
        Ok(PyBundle {
            name: name.to_string(),
            dir,
            script,
            style,
            inputs,
            outputs: tensors("outputs").into_iter().map(name_of).collect(),
            max_batch_size: int("batching", "max_batch_size").max(1),
            instances: int("instances", "count").max(1),
        })
    }

    /// `rows` rows of input `i` as deterministic pseudo-random FP32 in
    /// [-1, 1), little-endian: the same bytes for the server and the
    /// reference, and the same on every run.
    pub fn input_data(&self, i: usize, rows: usize) -> Bytes {
        let elements = rows * self.inputs[i].row_shape.iter().product::<i64>() as usize;
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ (i as u64);
        let mut out = Vec::with_capacity(elements * 4);
        for _ in 0..elements {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            out.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(out)
    }

    pub fn shape(&self, i: usize, rows: usize) -> Vec<i64> {
        let mut shape = vec![rows as i64];
        shape.extend_from_slice(&self.inputs[i].row_shape);
        shape
    }

    /// A tensor-style infer request with binary tensors in both directions
    /// (every declared output asked for as binary data), as a
    /// performance-minded client sends it.
    pub fn infer_request(&self, rows: usize) -> Result<RequestSpec> {
        let data: Vec<Bytes> = (0..self.inputs.len())
            .map(|i| self.input_data(i, rows))
            .collect();
        let inputs: Vec<serde_json::Value> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({
                    "name": t.name,
                    "shape": self.shape(i, rows),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": data[i].len()},
                })
            })
            .collect();
        let outputs: Vec<serde_json::Value> = self
            .outputs
            .iter()
            .map(|o| serde_json::json!({"name": o, "parameters": {"binary_data": true}}))
            .collect();
        let header = serde_json::json!({"inputs": inputs, "outputs": outputs}).to_string();
        let mut body =
            Vec::with_capacity(header.len() + data.iter().map(Bytes::len).sum::<usize>());
        body.extend_from_slice(header.as_bytes());
        for d in &data {
            body.extend_from_slice(d);
        }
        Ok(
            RequestSpec::post(format!("/v2/models/{}/infer", self.name), body)
                .header("inference-header-content-length", header.len().to_string())?
                .header("content-type", "application/octet-stream")?,
        )
    }

    /// A raw-style scoring call (`POST /v2/models/{m}/score`) with `body`.
    pub fn score_request(&self, body: Bytes) -> Result<RequestSpec> {
        Ok(
            RequestSpec::post(format!("/v2/models/{}/score", self.name), body)
                .header("content-type", "application/json")?,
        )
    }
}
