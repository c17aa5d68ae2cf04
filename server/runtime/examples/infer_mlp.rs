//! The runtime crate on its own: load a model bundle and run one batch, with
//! no server, no registry and no listener, as batch scoring or an offline
//! comparison would.
//!
//! ```sh
//! cargo run -p ferroserve-runtime --example infer_mlp              # examples/models/mlp/1
//! cargo run -p ferroserve-runtime --example infer_mlp -- path/to/bundle
//! ```
//!
//! It prints the shape of the answer and the most likely class of each row.

use std::error::Error;
use std::path::PathBuf;

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor};
use ferroserve_runtime::{LoadSettings, Model};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/mlp/1")
        });
    let library = ferroserve_runtime::onnxruntime::init()?;
    println!("ONNX Runtime: {}", library.display());
    let model = Model::load(&dir, &LoadSettings::default())?;
    let input = &model.signature.inputs[0];
    let features = usize::try_from(*input.shape.last().unwrap_or(&1)).unwrap_or(1);
    let rows = 4;
    let values: Vec<u8> = (0..rows * features)
        .flat_map(|i| ((i % 7) as f32 / 7.0).to_le_bytes())
        .collect();
    let batch = Tensor::new(
        DataType::Fp32,
        vec![rows as i64, features as i64],
        Bytes::from(values),
    )?;
    // `infer` waits on the batcher with a tokio timer: a current-thread
    // runtime is all it needs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let answer = rt.block_on(model.infer(vec![(input.name.clone(), batch)], None))?;
    for (spec, out) in model.signature.outputs.iter().zip(&answer.outputs) {
        println!("{} {:?} {}", spec.name, out.shape, out.dtype);
        if out.dtype == DataType::Fp32 && out.shape.len() == 2 {
            let classes = out.shape[1] as usize;
            let v: Vec<f32> = out
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            for (r, row) in v.chunks(classes).enumerate() {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                println!("  row {r}: class {best} ({:.3})", row[best]);
            }
        }
    }
    println!(
        "queued {:?}, computed in {:?}",
        answer.queue_time, answer.compute_time
    );
    Ok(())
}
