//! `ferroserve opencl …`: the devices this machine has, and the kernels as a
//! program binary or as one source file for a vendor's offline compiler.

use std::path::PathBuf;

use ferroserve_backend_opencl::{
    build_binary, check_binary, kernel_source, list_devices, DeviceSelector,
};

#[derive(clap::Subcommand)]
pub enum OpenclCommand {
    /// List OpenCL devices as `opencl:N`, the names `instances.device` takes.
    Devices,
    /// Compile the kernels for a device and write its program binary, for a
    /// bundle's `[opencl.binaries]` (skips compiling at load).
    BuildBinary {
        /// The device: opencl:N.
        #[arg(long, default_value = "opencl:0")]
        device: String,
        /// Where to write the binary.
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a program binary on a device and check it has every kernel;
    /// exit status 0 when it does. The server runs this in a child process
    /// before loading a bundle's binary, because some drivers abort on a
    /// malformed one.
    CheckBinary {
        /// The device: opencl:N.
        #[arg(long, default_value = "opencl:0")]
        device: String,
        /// The program binary.
        file: PathBuf,
    },
    /// Write all kernels as one OpenCL C file: the input of an FPGA offline
    /// compiler (Intel `aoc`, AMD/Xilinx `v++`).
    Source {
        /// Where to write the source; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OpenclCliError {
    #[error("{0}")]
    Device(String),
    #[error("--device: expected opencl:N, got {0:?}")]
    Selector(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn selector(device: &str) -> Result<DeviceSelector, OpenclCliError> {
    device
        .parse()
        .map_err(|_| OpenclCliError::Selector(device.to_string()))
}

pub fn run(command: OpenclCommand) -> Result<(), OpenclCliError> {
    match command {
        OpenclCommand::Devices => {
            let devices = list_devices().map_err(|e| OpenclCliError::Device(e.to_string()))?;
            for d in devices {
                println!("{d}");
            }
            Ok(())
        }
        OpenclCommand::CheckBinary { device, file } => {
            let binary = std::fs::read(&file).map_err(|source| OpenclCliError::Read {
                path: file.clone(),
                source,
            })?;
            let info =
                check_binary(&selector(&device)?, &binary).map_err(OpenclCliError::Device)?;
            println!(
                "{} loads on {:?} with every kernel",
                file.display(),
                info.name
            );
            Ok(())
        }
        OpenclCommand::BuildBinary { device, out } => {
            let (info, binary) =
                build_binary(&selector(&device)?).map_err(OpenclCliError::Device)?;
            std::fs::write(&out, &binary).map_err(|source| OpenclCliError::Write {
                path: out.clone(),
                source,
            })?;
            println!(
                "wrote {} ({} bytes) for {:?}; in bundle.toml: [opencl.binaries] {:?} = \"{}\"",
                out.display(),
                binary.len(),
                info.name,
                info.name,
                out.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            );
            Ok(())
        }
        OpenclCommand::Source { out } => {
            let source = kernel_source();
            match out {
                None => print!("{source}"),
                Some(path) => {
                    std::fs::write(&path, source).map_err(|source| OpenclCliError::Write {
                        path: path.clone(),
                        source,
                    })?
                }
            }
            Ok(())
        }
    }
}
