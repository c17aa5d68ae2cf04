//! OpenCL backend: ONNX graphs run by ferroserve's own kernels on any OpenCL
//! device — GPUs, CPUs (PoCL) and FPGAs (Intel FPGA SDK, AMD/Xilinx XRT).
//!
//! libOpenCL is loaded when first used, not linked, so the server starts on
//! machines without OpenCL; only loading an OpenCL model then fails. Every
//! node is checked against [`SUPPORTED_OPS`] at load, the kernels in
//! `kernels/opencl/` are compiled once per device (or a vendor-compiled
//! program binary is loaded instead, which is how FPGAs are programmed), and
//! weights are uploaded once per model.
//!
//! This crate knows OpenCL, ONNX graphs and `backends/core` only: not the
//! protocol, the scheduler, the registry or the server.

mod device;
mod graph;
mod kernels;
mod loaded;
mod model;
mod onnx;
mod ops;
mod plan;
mod session;
mod values;

pub use device::{list_devices, DeviceError, DeviceInfo, DeviceSelector};
pub use kernels::{source as kernel_source, KERNEL_NAMES};
pub use model::{LoadSpec, OpenClModel};
pub use session::OpenClSession;

/// ONNX operators (default domain) a model may use, FP32 throughout.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Erf",
    "Exp",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LeakyRelu",
    "Log",
    "MatMul",
    "MaxPool",
    "Mul",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
];

/// Whether an OpenCL device can be used here: its description, or why not.
pub fn opencl_available() -> Result<String, String> {
    let devices = list_devices().map_err(|e| e.to_string())?;
    Ok(devices.first().map(|d| d.to_string()).unwrap_or_default())
}

/// Loads a program binary on a device and checks it has every kernel: what
/// `ferroserve opencl check-binary` runs in the child process of a
/// [`LoadSpec::binary_probe`].
pub fn check_binary(selector: &DeviceSelector, binary: &[u8]) -> Result<DeviceInfo, String> {
    let device = device::open(selector).map_err(|e| e.to_string())?;
    let program = device.program(device::ProgramSource::Binary(binary))?;
    for k in KERNEL_NAMES {
        opencl3::kernel::Kernel::create(&program, k)
            .map_err(|e| format!("the program has no usable kernel {k:?} ({e})"))?;
    }
    Ok(device.info.clone())
}

/// The program binary of the kernels for a device, as the driver compiles
/// them: what `ferroserve opencl build-binary` writes. For an FPGA, build it
/// with the vendor's offline compiler from [`kernel_source`] instead.
pub fn build_binary(selector: &DeviceSelector) -> Result<(DeviceInfo, Vec<u8>), String> {
    let device = device::open(selector).map_err(|e| e.to_string())?;
    let binary = device.binary_of(&kernels::source())?;
    Ok((device.info.clone(), binary))
}
