//! One instance of a loaded model: its command queue, kernel objects and
//! activation buffers, reused from batch to batch.

use std::collections::HashMap;
use std::ptr;
use std::sync::Arc;

use bytes::Bytes;
use ferroserve_backend_core::{Backend, BackendError, DataType, DeviceTimings, Signature, Tensor};
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::event::Event;
use opencl3::kernel::Kernel as ClKernel;
use opencl3::memory::{Buffer, ClMem, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};
use opencl3::types::{cl_mem, CL_BLOCKING, CL_NON_BLOCKING};

use crate::graph::ValueId;
use crate::kernels::KERNEL_NAMES;
use crate::loaded::Loaded;
use crate::plan::{self, Arg, Plan, Storage};
use crate::values::Kind;

/// Distinct input shapes a session keeps plans for; a model with free
/// dimensions other than the batch could otherwise grow the cache forever.
const MAX_PLANS: usize = 64;

/// What a plan depends on: each input's shape, and the values of INT64
/// inputs (a Reshape target given by the caller).
type PlanKey = Vec<(Vec<usize>, Vec<i64>)>;

/// A plan with its integer tables uploaded.
struct DevicePlan {
    plan: Plan,
    tables: Vec<Buffer<i32>>,
}

/// The session's queue. OpenCL command queues may be used from any thread
/// (all calls but clSetKernelArg are thread-safe); this one is used by one
/// worker thread at a time, which owns the session.
struct Queue(CommandQueue);
// SAFETY: see above; the queue is only ever used through `&mut self`.
unsafe impl Send for Queue {}

pub struct OpenClSession {
    model: Arc<Loaded>,
    queue: Queue,
    kernels: Vec<ClKernel>,
    slots: Vec<Buffer<u8>>,
    slot_capacity: Vec<usize>,
    plans: HashMap<PlanKey, Arc<DevicePlan>>,
}

fn cl_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Run(format!("OpenCL {what}: {e}"))
}

impl OpenClSession {
    pub(crate) fn new(model: Arc<Loaded>) -> Result<OpenClSession, BackendError> {
        let ctx = &model.device.context;
        // SAFETY: the device belongs to the context it was opened with.
        let queue = unsafe {
            CommandQueue::create_with_properties(ctx, model.device.id, CL_QUEUE_PROFILING_ENABLE, 0)
        }
        .or_else(|_| {
            // OpenCL 1.x drivers (several FPGA runtimes) only have the old call.
            #[allow(deprecated)]
            // SAFETY: as above.
            unsafe {
                CommandQueue::create(ctx, model.device.id, CL_QUEUE_PROFILING_ENABLE)
            }
        })
        .map_err(|e| BackendError::Load(format!("OpenCL clCreateCommandQueue: {e}")))?;
        let mut kernels = Vec::with_capacity(KERNEL_NAMES.len());
        for name in KERNEL_NAMES {
            kernels.push(ClKernel::create(&model.program, name).map_err(|e| {
                BackendError::Load(format!("OpenCL clCreateKernel({name:?}): {e}"))
            })?);
        }
        Ok(OpenClSession {
            model,
            queue: Queue(queue),
            kernels,
            slots: Vec::new(),
            slot_capacity: Vec::new(),
            plans: HashMap::new(),
        })
    }

    fn plan_for(&mut self, inputs: &[Tensor]) -> Result<Arc<DevicePlan>, BackendError> {
        let graph = &self.model.graph;
        let mut key = Vec::with_capacity(inputs.len());
        let mut host = HashMap::new();
        for ((id, _), t) in graph.inputs.iter().zip(inputs) {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d.max(0) as usize).collect();
            let values = if graph.kinds[*id] == Kind::I64 {
                let v: Vec<i64> = t
                    .data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                host.insert(*id, v.clone());
                v
            } else {
                Vec::new()
            };
            key.push((shape, values));
        }
        if let Some(p) = self.plans.get(&key) {
            return Ok(p.clone());
        }
        let shapes: Vec<Vec<usize>> = key.iter().map(|(s, _)| s.clone()).collect();
        let plan = plan::build(graph, &shapes, &host).map_err(BackendError::Run)?;
        let mut tables = Vec::with_capacity(plan.tables.len());
        for t in &plan.tables {
            let mut data = t.clone();
            // SAFETY: COPY_HOST_PTR copies `data` before create returns.
            let b = unsafe {
                Buffer::<i32>::create(
                    &self.model.device.context,
                    CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                    data.len().max(1),
                    if data.is_empty() {
                        ptr::null_mut()
                    } else {
                        data.as_mut_ptr().cast()
                    },
                )
            }
            .map_err(|e| cl_err("clCreateBuffer", e))?;
            tables.push(b);
        }
        if self.plans.len() >= MAX_PLANS {
            self.plans.clear();
        }
        let p = Arc::new(DevicePlan { plan, tables });
        self.plans.insert(key, p.clone());
        Ok(p)
    }

    fn ensure_slots(&mut self, plan: &Plan) -> Result<(), BackendError> {
        for (i, &bytes) in plan.slot_bytes.iter().enumerate() {
            let need = bytes.max(4);
            if i < self.slots.len() && self.slot_capacity[i] >= need {
                continue;
            }
            // SAFETY: no host pointer; the buffer is written before it is read.
            let b = unsafe {
                Buffer::<u8>::create(
                    &self.model.device.context,
                    CL_MEM_READ_WRITE,
                    need,
                    ptr::null_mut(),
                )
            }
            .map_err(|e| cl_err(&format!("clCreateBuffer({need} bytes)"), e))?;
            if i < self.slots.len() {
                self.slots[i] = b;
                self.slot_capacity[i] = need;
            } else {
                self.slots.push(b);
                self.slot_capacity.push(need);
            }
        }
        Ok(())
    }

    fn mem(&self, plan: &Plan, v: ValueId) -> Result<cl_mem, BackendError> {
        match plan.storage[v] {
            Storage::Slot(s) => Ok(self.slots[s].get()),
            Storage::Weight(w) => Ok(self.model.weights[&w].get()),
            Storage::Host => Err(BackendError::Run(format!(
                "value {:?} is an INT64 host value, not a device buffer",
                self.model.graph.value(v)
            ))),
        }
    }
}

impl Backend for OpenClSession {
    fn signature(&self) -> &Signature {
        &self.model.signature
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let graph = self.model.graph.clone();
        if inputs.len() != graph.inputs.len() {
            return Err(BackendError::Run(format!(
                "expected {} inputs, got {}",
                graph.inputs.len(),
                inputs.len()
            )));
        }
        for ((id, spec), t) in graph.inputs.iter().zip(&inputs) {
            let want = if graph.kinds[*id] == Kind::F32 {
                DataType::Fp32
            } else {
                DataType::Int64
            };
            if t.dtype != want {
                return Err(BackendError::Run(format!(
                    "input {:?}: expected {want}, got {}",
                    spec.name, t.dtype
                )));
            }
        }
        let dp = self.plan_for(&inputs)?;
        let plan = &dp.plan;
        self.ensure_slots(plan)?;
        let mut events: Vec<(&'static str, Event)> = Vec::with_capacity(plan.launches.len() + 4);
        for ((id, _), t) in graph.inputs.iter().zip(&inputs) {
            if let Storage::Slot(s) = plan.storage[*id] {
                if t.data.is_empty() {
                    continue;
                }
                // SAFETY: `inputs` outlives the queue's work: the blocking
                // reads below wait for everything enqueued before them.
                let e = unsafe {
                    self.queue.0.enqueue_write_buffer(
                        &mut self.slots[s],
                        CL_NON_BLOCKING,
                        0,
                        &t.data,
                        &[],
                    )
                }
                .map_err(|e| cl_err("clEnqueueWriteBuffer", e))?;
                events.push(("upload", e));
            }
        }
        for launch in &plan.launches {
            let kernel = &self.kernels[launch.kernel as usize];
            for (i, arg) in launch.args.iter().enumerate() {
                let i = i as u32;
                // SAFETY: argument types follow the kernel signatures in
                // kernels/opencl (checked by the node tests); buffers are
                // cl_mem handles that outlive the launch.
                let r = unsafe {
                    match arg {
                        Arg::Value(v) => kernel.set_arg(i, &self.mem(plan, *v)?),
                        Arg::Scratch(slot) => kernel.set_arg(i, &self.slots[*slot].get()),
                        Arg::Table(t) => kernel.set_arg(i, &dp.tables[*t].get()),
                        Arg::I32(x) => kernel.set_arg(i, x),
                        Arg::F32(x) => kernel.set_arg(i, x),
                    }
                };
                r.map_err(|e| {
                    cl_err(&format!("clSetKernelArg({}, {i})", launch.kernel.name()), e)
                })?;
            }
            let local = launch.local.as_ref().map_or(ptr::null(), |l| l.as_ptr());
            // SAFETY: work sizes have `global.len()` entries; local, when
            // given, divides global (the planner rounds global up).
            let e = unsafe {
                self.queue.0.enqueue_nd_range_kernel(
                    kernel.get(),
                    launch.global.len() as u32,
                    ptr::null(),
                    launch.global.as_ptr(),
                    local,
                    &[],
                )
            }
            .map_err(|e| {
                cl_err(
                    &format!("clEnqueueNDRangeKernel({})", launch.kernel.name()),
                    e,
                )
            })?;
            events.push((launch.kernel.name(), e));
        }
        let mut outputs = Vec::with_capacity(graph.outputs.len());
        for (id, _) in &graph.outputs {
            let shape = plan.shapes[*id].clone().expect("planned");
            let len: usize = 4 * shape.iter().product::<usize>();
            let mut data = vec![0u8; len];
            if len > 0 {
                let e = match plan.storage[*id] {
                    // SAFETY: `data` has exactly `len` bytes and the read blocks.
                    Storage::Slot(s) => unsafe {
                        self.queue.0.enqueue_read_buffer(
                            &self.slots[s],
                            CL_BLOCKING,
                            0,
                            &mut data,
                            &[],
                        )
                    },
                    // SAFETY: as above.
                    Storage::Weight(w) => unsafe {
                        self.queue.0.enqueue_read_buffer(
                            &self.model.weights[&w],
                            CL_BLOCKING,
                            0,
                            &mut data,
                            &[],
                        )
                    },
                    Storage::Host => unreachable!("graph outputs are FP32"),
                }
                .map_err(|e| cl_err("clEnqueueReadBuffer", e))?;
                events.push(("download", e));
            }
            outputs.push(
                Tensor::new(
                    DataType::Fp32,
                    shape.iter().map(|&d| d as i64).collect(),
                    Bytes::from(data),
                )
                .map_err(|e| BackendError::Run(e.to_string()))?,
            );
        }
        self.queue.0.finish().map_err(|e| cl_err("clFinish", e))?;
        let mut measured = Vec::with_capacity(events.len());
        for (name, e) in &events {
            if let (Ok(s), Ok(t)) = (e.profiling_command_start(), e.profiling_command_end()) {
                measured.push((*name, t.saturating_sub(s)));
            }
        }
        self.model.timings.add(&measured);
        Ok(outputs)
    }

    fn device_timings(&self) -> Option<Arc<DeviceTimings>> {
        Some(self.model.timings.clone())
    }
}
