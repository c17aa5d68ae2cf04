//! Finding OpenCL devices, and the per-device context and compiled programs
//! that every model on a device shares.
//!
//! Compiling the kernels takes PoCL about a second and an FPGA binary is
//! loaded once per board, so programs are cached per device for the life of
//! the process: loading a second model, or a new version, reuses them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_TYPE_ALL};
use opencl3::platform::get_platforms;
use opencl3::program::Program;
use opencl3::types::cl_device_id;
use sha2::{Digest, Sha256};

/// Which device a bundle asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    /// `opencl:N`: the Nth device over all platforms, in the order
    /// [`list_devices`] prints them.
    Index(usize),
    /// The first device whose platform and device names contain these
    /// (case-insensitive) texts.
    Name {
        platform: Option<String>,
        device: Option<String>,
    },
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelector::Index(i) => write!(f, "opencl:{i}"),
            DeviceSelector::Name { platform, device } => write!(
                f,
                "platform {:?}, device {:?}",
                platform.as_deref().unwrap_or("any"),
                device.as_deref().unwrap_or("any")
            ),
        }
    }
}

impl std::str::FromStr for DeviceSelector {
    type Err = String;

    /// `opencl:N`, as `instances.device` and the CLI write a device number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("opencl:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceSelector::Index)
            .ok_or_else(|| format!("expected opencl:N, got {s:?}"))
    }
}

/// One OpenCL device as `ferroserve opencl devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub index: usize,
    pub platform: String,
    pub name: String,
    pub version: String,
    pub compute_units: u32,
    pub max_clock_mhz: u32,
    pub global_mem_bytes: u64,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "opencl:{} {} ({}; {}, {} compute units, {} MHz, {} MiB)",
            self.index,
            self.name,
            self.platform,
            self.version,
            self.compute_units,
            self.max_clock_mhz,
            self.global_mem_bytes >> 20
        )
    }
}

/// Why no device could be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "no OpenCL runtime: {0} (install an OpenCL driver, e.g. Debian's pocl-opencl-icd for CPUs)"
    )]
    NoRuntime(String),
    #[error("no OpenCL device matches {wanted}; available: {available}")]
    NoMatch { wanted: String, available: String },
    #[error("OpenCL {call} failed on {device}: {reason}")]
    Call {
        call: &'static str,
        device: String,
        reason: String,
    },
}

fn all_devices() -> Result<Vec<(DeviceInfo, cl_device_id)>, DeviceError> {
    let platforms = get_platforms().map_err(|e| DeviceError::NoRuntime(format!("{e}")))?;
    let mut out = Vec::new();
    for p in platforms {
        let pname = p.name().unwrap_or_default();
        let Ok(ids) = p.get_devices(CL_DEVICE_TYPE_ALL) else {
            continue;
        };
        for id in ids {
            let d = Device::new(id);
            out.push((
                DeviceInfo {
                    index: out.len(),
                    platform: pname.clone(),
                    name: d.name().unwrap_or_default(),
                    version: d.version().unwrap_or_default(),
                    compute_units: d.max_compute_units().unwrap_or(0),
                    max_clock_mhz: d.max_clock_frequency().unwrap_or(0),
                    global_mem_bytes: d.global_mem_size().unwrap_or(0),
                },
                id,
            ));
        }
    }
    if out.is_empty() {
        return Err(DeviceError::NoRuntime(
            "the OpenCL loader found no platform with a device".into(),
        ));
    }
    Ok(out)
}

/// Every OpenCL device on this machine, in `opencl:N` order.
pub fn list_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    Ok(all_devices()?.into_iter().map(|(i, _)| i).collect())
}

/// A device, its context and its compiled programs, shared by every model
/// loaded on it.
pub struct DeviceContext {
    pub info: DeviceInfo,
    pub id: cl_device_id,
    pub context: Context,
    programs: Mutex<HashMap<[u8; 32], Arc<Program>>>,
}

// SAFETY: OpenCL device ids, contexts and programs may be used from any
// thread (OpenCL 1.2 §A.2: all API calls are thread-safe except
// clSetKernelArg on one kernel object, and kernels are per session here).
unsafe impl Send for DeviceContext {}
unsafe impl Sync for DeviceContext {}

fn registry() -> &'static Mutex<HashMap<usize, Arc<DeviceContext>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<DeviceContext>>>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

/// Opens (once per process) the device `selector` names.
pub fn open(selector: &DeviceSelector) -> Result<Arc<DeviceContext>, DeviceError> {
    let devices = all_devices()?;
    let lower = |s: &str| s.to_lowercase();
    let found = match selector {
        DeviceSelector::Index(i) => devices.iter().find(|(d, _)| d.index == *i),
        DeviceSelector::Name { platform, device } => devices.iter().find(|(d, _)| {
            platform
                .as_ref()
                .is_none_or(|p| lower(&d.platform).contains(&lower(p)))
                && device
                    .as_ref()
                    .is_none_or(|n| lower(&d.name).contains(&lower(n)))
        }),
    };
    let Some((info, id)) = found else {
        return Err(DeviceError::NoMatch {
            wanted: selector.to_string(),
            available: devices
                .iter()
                .map(|(d, _)| format!("opencl:{} {:?} on {:?}", d.index, d.name, d.platform))
                .collect::<Vec<_>>()
                .join("; "),
        });
    };
    let mut reg = registry().lock().expect("device registry lock");
    if let Some(ctx) = reg.get(&(*id as usize)) {
        return Ok(ctx.clone());
    }
    let context = Context::from_device(&Device::new(*id)).map_err(|e| DeviceError::Call {
        call: "clCreateContext",
        device: info.name.clone(),
        reason: e.to_string(),
    })?;
    let ctx = Arc::new(DeviceContext {
        info: info.clone(),
        id: *id,
        context,
        programs: Mutex::new(HashMap::new()),
    });
    reg.insert(*id as usize, ctx.clone());
    Ok(ctx)
}

/// Where a program comes from.
pub enum ProgramSource<'a> {
    /// OpenCL C, compiled for the device now.
    Source(&'a str),
    /// A binary made for this device by its vendor's offline compiler (an
    /// FPGA bitstream such as `.aocx` or `.xclbin`), or by `ferroserve
    /// opencl build-binary`.
    Binary(&'a [u8]),
}

/// Build options for our kernels. Strict IEEE maths is kept (no
/// `-cl-fast-relaxed-math`): Softmax and Sigmoid rely on infinities.
pub const BUILD_OPTIONS: &str = "-cl-std=CL1.2 -cl-mad-enable";

impl DeviceContext {
    /// Builds (or returns the cached) program. The error is the build log or
    /// the OpenCL error, for the caller to wrap with the bundle's file name.
    pub fn program(&self, source: ProgramSource<'_>) -> Result<Arc<Program>, String> {
        let key: [u8; 32] = match &source {
            ProgramSource::Source(s) => Sha256::digest(s.as_bytes()).into(),
            ProgramSource::Binary(b) => Sha256::digest(b).into(),
        };
        let mut programs = self.programs.lock().expect("program cache lock");
        if let Some(p) = programs.get(&key) {
            return Ok(p.clone());
        }
        let program = match source {
            ProgramSource::Source(s) => {
                Program::create_and_build_from_source(&self.context, s, BUILD_OPTIONS)?
            }
            ProgramSource::Binary(b) => {
                // SAFETY: `self.id` is the context's one device.
                let mut p = unsafe { Program::create_from_binary(&self.context, &[self.id], &[b]) }
                    .map_err(|e| format!("clCreateProgramWithBinary: {e}"))?;
                p.build(&[self.id], BUILD_OPTIONS).map_err(|e| {
                    let log = p.get_build_log(self.id).unwrap_or_default();
                    format!("clBuildProgram: {e} {log}")
                })?;
                p
            }
        };
        let program = Arc::new(program);
        programs.insert(key, program.clone());
        Ok(program)
    }

    /// The program binary of `source` for this device, for `ferroserve
    /// opencl build-binary`.
    pub fn binary_of(&self, source: &str) -> Result<Vec<u8>, String> {
        let program = self.program(ProgramSource::Source(source))?;
        let mut binaries = program
            .get_binaries()
            .map_err(|e| format!("clGetProgramInfo(CL_PROGRAM_BINARIES): {e}"))?;
        binaries
            .pop()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| "the driver returned no program binary".into())
    }
}
