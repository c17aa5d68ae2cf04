//! Loading a model onto a device: read and check the graph, get the program
//! (compiled from `kernels/opencl` or a vendor binary), upload the weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferroserve_backend_core::{BackendError, DeviceTimings, Signature};
use opencl3::kernel::Kernel as ClKernel;
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY};

use crate::device::{self, DeviceSelector, ProgramSource};
use crate::graph::Graph;
use crate::kernels::{self, KERNEL_NAMES};
use crate::loaded::Loaded;
use crate::plan;
use crate::session::OpenClSession;
use crate::values::HostData;

/// What to load and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    pub model: PathBuf,
    pub device: DeviceSelector,
    /// Precompiled program binaries: (device name pattern, file). Of the
    /// patterns the device's name contains (case-insensitive), the longest
    /// wins, so "u250" and "xilinx_u250_gen3x16" can sit side by side; its
    /// file is loaded instead of compiling the kernels' source.
    pub binaries: Vec<(String, PathBuf)>,
    /// An executable that loads a program binary in a child process first
    /// (`PROBE opencl check-binary --device opencl:N FILE`, exit status 0
    /// when it loads). Drivers may abort the whole process on a malformed
    /// binary (PoCL asserts on a truncated one), and a server must not die
    /// because one bundle carries a bad file. `None` loads in-process.
    pub binary_probe: Option<PathBuf>,
}

impl LoadSpec {
    /// Device `opencl:0`, kernels compiled from source.
    pub fn new(model: impl Into<PathBuf>) -> LoadSpec {
        LoadSpec {
            model: model.into(),
            device: DeviceSelector::Index(0),
            binaries: Vec::new(),
            binary_probe: None,
        }
    }
}

/// How long a probe may take: loading a binary is quick, but an FPGA
/// runtime programs the board on first load.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs the binary probe; `Err` says why the binary is not usable.
fn probe_binary(probe: &Path, device_index: usize, file: &Path) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(probe)
        .args(["opencl", "check-binary", "--device"])
        .arg(format!("opencl:{device_index}"))
        .arg(file)
        // The message is the child's `Error:` line; no backtrace after it.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the binary check {}: {e}", probe.display()))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > PROBE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the driver did not finish loading it within {} s",
                    PROBE_LIMIT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for the binary check: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    // The child's own error line (`error: ...`, as the binary prints
    // errors), else (a driver that aborted) the last thing it printed,
    // such as a failed assertion.
    let detail = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Err(match status.signal() {
        Some(sig) => format!(
            "the OpenCL driver crashed loading it (signal {sig}){}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        None => detail,
    })
}

/// A model checked, compiled for and uploaded to one device. Sessions
/// (one per instance worker) share its program and weights.
pub struct OpenClModel {
    loaded: Arc<Loaded>,
    /// Where the program came from, for logs: "source" or the binary's path.
    pub program_origin: String,
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Load(format!("{}: {e}", path.display()))
}

impl OpenClModel {
    pub fn load(spec: &LoadSpec) -> Result<OpenClModel, BackendError> {
        let bytes = std::fs::read(&spec.model).map_err(|e| load_err(&spec.model, e))?;
        let graph = Graph::decode(&bytes).map_err(|e| load_err(&spec.model, e))?;
        check_shapes(&graph).map_err(|e| load_err(&spec.model, e))?;
        let device = device::open(&spec.device).map_err(|e| BackendError::Load(e.to_string()))?;
        let name = device.info.name.to_lowercase();
        let chosen = spec
            .binaries
            .iter()
            .filter(|(pattern, _)| name.contains(&pattern.to_lowercase()))
            .max_by_key(|(pattern, _)| pattern.len());
        let (program, origin) = match chosen {
            Some((_, path)) => {
                let data = std::fs::read(path).map_err(|e| {
                    BackendError::Load(format!("program binary {}: {e}", path.display()))
                })?;
                if let Some(probe) = &spec.binary_probe {
                    probe_binary(probe, device.info.index, path).map_err(|e| {
                        BackendError::Load(format!(
                            "program binary {} is not usable on {:?}: {e}",
                            path.display(),
                            device.info.name
                        ))
                    })?;
                }
                let program = device.program(ProgramSource::Binary(&data)).map_err(|e| {
                    BackendError::Load(format!(
                        "program binary {} is not usable on {:?}: {e}",
                        path.display(),
                        device.info.name
                    ))
                })?;
                (program, path.display().to_string())
            }
            None => {
                let program = device
                    .program(ProgramSource::Source(&kernels::source()))
                    .map_err(|e| {
                        BackendError::Load(format!(
                            "compiling kernels/opencl for {:?} failed: {e}",
                            device.info.name
                        ))
                    })?;
                (program, "source".to_string())
            }
        };
        // A binary built from other sources may lack a kernel or have it
        // with other arguments; check names now, not at the first request.
        for k in KERNEL_NAMES {
            let kernel = ClKernel::create(&program, k).map_err(|e| {
                BackendError::Load(format!(
                    "program from {origin} has no usable kernel {k:?} ({e}); a binary must be built from kernels/opencl of this ferroserve version"
                ))
            })?;
            drop(kernel);
        }
        let mut weights = HashMap::new();
        for (&id, c) in &graph.constants {
            if let HostData::F32(v) = &c.data {
                let mut data: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                if data.is_empty() {
                    data.extend([0; 4]);
                }
                // SAFETY: COPY_HOST_PTR copies `data` before create returns.
                let b = unsafe {
                    Buffer::<u8>::create(
                        &device.context,
                        CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                        data.len(),
                        data.as_mut_ptr().cast(),
                    )
                }
                .map_err(|e| {
                    BackendError::Load(format!(
                        "uploading weight {:?} ({} bytes) to {:?}: {e}",
                        graph.value(id),
                        data.len(),
                        device.info.name
                    ))
                })?;
                weights.insert(id, b);
            }
        }
        let signature = Signature {
            inputs: graph.inputs.iter().map(|(_, s)| s.clone()).collect(),
            outputs: graph.outputs.iter().map(|(_, s)| s.clone()).collect(),
        };
        let timings = Arc::new(DeviceTimings::new(device.info.name.clone()));
        Ok(OpenClModel {
            loaded: Arc::new(Loaded {
                graph: Arc::new(graph),
                signature,
                device,
                program,
                weights,
                timings,
            }),
            program_origin: origin,
        })
    }

    /// A new instance: its own queue, kernel objects and buffers.
    pub fn session(&self) -> Result<OpenClSession, BackendError> {
        OpenClSession::new(self.loaded.clone())
    }

    pub fn signature(&self) -> &Signature {
        &self.loaded.signature
    }

    pub fn device_name(&self) -> &str {
        &self.loaded.device.info.name
    }

    pub fn timings(&self) -> Arc<DeviceTimings> {
        self.loaded.timings.clone()
    }
}

/// Plans the graph once for its declared input shapes, with free dimensions
/// set to 1, so that shape errors (a 3-D Conv, mismatched Gemm operands)
/// refuse the model at load. Skipped where an INT64 input decides shapes.
fn check_shapes(graph: &Graph) -> Result<(), String> {
    if graph
        .inputs
        .iter()
        .any(|(id, _)| graph.kinds[*id] == crate::values::Kind::I64)
    {
        return Ok(());
    }
    let shapes: Vec<Vec<usize>> = graph
        .inputs
        .iter()
        .map(|(_, s)| {
            s.shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d as usize })
                .collect()
        })
        .collect();
    plan::build(graph, &shapes, &HashMap::new()).map(|_| ())
}
