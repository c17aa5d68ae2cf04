//! `ferroserve opencl …`: the devices this machine has, and the kernels as a
//! program binary or as one source file for a vendor's offline compiler.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

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

fn selector(device: &str) -> Result<DeviceSelector> {
    device
        .parse()
        .map_err(|_| anyhow!("--device: expected opencl:N, got {device:?}"))
}

pub fn run(command: OpenclCommand) -> Result<()> {
    match command {
        OpenclCommand::Devices => {
            let devices = list_devices()?;
            for d in devices {
                println!("{d}");
            }
            Ok(())
        }
        OpenclCommand::CheckBinary { device, file } => {
            let binary =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let info = check_binary(&selector(&device)?, &binary).map_err(|e| anyhow!(e))?;
            println!(
                "{} loads on {:?} with every kernel",
                file.display(),
                info.name
            );
            Ok(())
        }
        OpenclCommand::BuildBinary { device, out } => {
            let (info, binary) = build_binary(&selector(&device)?).map_err(|e| anyhow!(e))?;
            std::fs::write(&out, &binary)
                .with_context(|| format!("cannot write {}", out.display()))?;
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
                Some(path) => std::fs::write(&path, source)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            }
            Ok(())
        }
    }
}
