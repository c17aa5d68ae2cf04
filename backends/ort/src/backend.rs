use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ferroserve_backend_core::{Backend, BackendError, Signature, Tensor, TensorSpec};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Outlet, ValueType};

use crate::{convert, element, runtime};

/// How a session uses threads.
///
/// The server runs several instances of a model side by side, each on its own
/// worker thread, so it divides the cores among them rather than letting every
/// session take all of them (ONNX Runtime's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrtOptions {
    /// Threads one operator may use; 0 leaves ONNX Runtime's default (one per
    /// physical core).
    pub intra_op_threads: usize,
    /// Threads for running independent branches of the graph at once. Only
    /// meaningful with parallel execution, which ferroserve does not enable
    /// (batching already keeps the cores busy), so 0 (default) is normal.
    pub inter_op_threads: usize,
}

/// One ONNX Runtime session on the CPU, owned by one instance worker.
#[derive(Debug)]
pub struct OrtBackend {
    session: Session,
    signature: Signature,
    model_path: PathBuf,
}

impl OrtBackend {
    /// Creates a session for the model at `model_path`.
    ///
    /// Needs [`init_runtime`](crate::init_runtime) to have succeeded. Loading is
    /// slow (graph optimisation, weight pre-packing), which is why the server
    /// does it off the request path.
    pub fn load(model_path: &Path, opts: &OrtOptions) -> Result<OrtBackend, BackendError> {
        // Checked here so the message names the path the bundle points at, not
        // whatever ONNX Runtime makes of it.
        if !model_path.is_file() {
            return Err(BackendError::Load(format!(
                "model file {} does not exist",
                model_path.display()
            )));
        }
        let environment = runtime::environment().ok_or_else(|| {
            BackendError::Load(
                "ONNX Runtime is not loaded: call ferroserve_backend_ort::init_runtime at start-up"
                    .into(),
            )
        })?;
        let session = build_session(&environment, model_path, opts).map_err(|e| {
            // ONNX Runtime names the file in some messages ("Load model from
            // … failed") but not others ("Could not find an implementation…").
            let path = model_path.display().to_string();
            let message = e.message();
            BackendError::Load(if message.contains(&path) {
                message.to_string()
            } else {
                format!("{path}: {message}")
            })
        })?;
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|o| tensor_spec(o, "input"))
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| tensor_spec(o, "output"))
                .collect::<Result<_, _>>()?,
        };
        tracing::debug!(model = %model_path.display(), ?signature, ?opts, "created ONNX Runtime session");
        Ok(OrtBackend {
            session,
            signature,
            model_path: model_path.to_path_buf(),
        })
    }

    /// The model file this session was created from.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }
}

fn build_session(
    environment: &Environment,
    model_path: &Path,
    opts: &OrtOptions,
) -> ort::Result<Session> {
    let mut builder = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        // Sequential: batches, not graph branches, are what keep cores busy.
        .with_parallel_execution(false)?
        // Pool threads sleep when a run ends instead of spin-waiting for the
        // next one (ONNX Runtime's default). The server runs several instance,
        // batcher and I/O threads, and a spinning pool burns a core per idle
        // thread that another instance could have used. Measured on the conv
        // example (2 intra-op threads, 2-core machine): one instance running
        // back-to-back batches loses 5-15% throughput without spinning (most at
        // small batches), but two such instances gain 40-80%, and batches with
        // 1 ms gaps run equally fast on 0.5 instead of 2 cores.
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?;
    if opts.intra_op_threads > 0 {
        builder = builder.with_intra_threads(opts.intra_op_threads)?;
    }
    if opts.inter_op_threads > 0 {
        builder = builder.with_inter_threads(opts.inter_op_threads)?;
    }
    builder.commit_from_file(model_path)
}

/// The signature entry for one model input or output; `role` is "input" or
/// "output", for the message.
fn tensor_spec(outlet: &Outlet, role: &str) -> Result<TensorSpec, BackendError> {
    let name = outlet.name();
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(BackendError::Signature(format!(
            "{role} '{name}' is a {}; only tensors can be served",
            outlet.dtype()
        )));
    };
    let dtype = element::data_type(*ty).ok_or_else(|| {
        BackendError::Signature(format!(
            "{role} '{name}' has element type {ty}, which the Open Inference Protocol has no datatype for"
        ))
    })?;
    Ok(TensorSpec {
        name: name.to_string(),
        dtype,
        // ONNX Runtime reports symbolic and unknown dimensions as -1 already;
        // clamp anything else negative so the signature has one spelling.
        shape: shape.iter().map(|&d| d.max(-1)).collect(),
    })
}

impl Backend for OrtBackend {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let specs = &self.signature.inputs;
        if inputs.len() != specs.len() {
            return Err(BackendError::Run(format!(
                "the model takes {} input(s) ({}), got {}",
                specs.len(),
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                inputs.len()
            )));
        }
        let mut feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (spec, tensor) in specs.iter().zip(&inputs) {
            if tensor.dtype != spec.dtype {
                return Err(BackendError::Run(format!(
                    "input '{}' is {} but the model expects {}",
                    spec.name, tensor.dtype, spec.dtype
                )));
            }
            let value = convert::to_ort(tensor, &spec.name).map_err(BackendError::Run)?;
            feeds.push((Cow::Borrowed(spec.name.as_str()), value));
        }

        let outputs = self
            .session
            .run(feeds)
            .map_err(|e| BackendError::Run(e.message().to_string()))?;
        outputs
            .iter()
            .map(|(name, value)| convert::from_ort(&value, name).map_err(BackendError::Run))
            .collect()
    }
}
