//! The OpenCL C sources in `kernels/opencl/`, embedded at build time, and the
//! kernel names the executor launches.
//!
//! A precompiled program binary (an FPGA bitstream) must provide every kernel
//! in [`KERNEL_NAMES`] with the same arguments; load checks that it does.

/// The kernels, in the order `Kernel` ids index them.
pub const KERNEL_NAMES: [&str; 12] = [
    "gemm",
    "im2col",
    "conv2d",
    "binary_same",
    "binary_broadcast",
    "unary",
    "batchnorm",
    "transpose",
    "concat_copy",
    "softmax",
    "global_average_pool",
    "pool",
];

/// Indexes into [`KERNEL_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Gemm = 0,
    Im2col,
    Conv2d,
    BinarySame,
    BinaryBroadcast,
    Unary,
    BatchNorm,
    Transpose,
    ConcatCopy,
    Softmax,
    GlobalAveragePool,
    Pool,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        KERNEL_NAMES[self as usize]
    }
}

/// The source files, in the order they are concatenated.
pub const FILES: [(&str, &str); 6] = [
    ("gemm.cl", include_str!("../../../kernels/opencl/gemm.cl")),
    ("conv.cl", include_str!("../../../kernels/opencl/conv.cl")),
    (
        "elementwise.cl",
        include_str!("../../../kernels/opencl/elementwise.cl"),
    ),
    (
        "layout.cl",
        include_str!("../../../kernels/opencl/layout.cl"),
    ),
    (
        "reduce.cl",
        include_str!("../../../kernels/opencl/reduce.cl"),
    ),
    ("pool.cl", include_str!("../../../kernels/opencl/pool.cl")),
];

/// All kernels as one OpenCL C program, the input of an offline compiler.
pub fn source() -> String {
    let mut s = String::new();
    for (name, text) in FILES {
        s.push_str(&format!("// ---- kernels/opencl/{name}\n"));
        s.push_str(text);
        s.push('\n');
    }
    s
}
