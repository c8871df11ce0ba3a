//! The device: Flick's kernels (`shaders/kernels/*.wgsl`) compiled on first use, buffers, launches
//! recorded into one command encoder and submitted when a result is read.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use flick_shaders::{KERNELS, Variant, instantiate};
use wgpu::util::DeviceExt;

/// Launch parameters live in one buffer, a slot of [`SLOT_BYTES`] per launch (the storage
/// offset alignment every adapter accepts), written before the launches that read them are
/// submitted; [`PARAM_SLOTS`] launches per submission.
const SLOT_BYTES: u64 = 256;
const PARAM_SLOTS: u32 = 1024;
/// Parameter words a launch may pass.
const PARAM_WORDS: usize = 16;
/// Workgroups along x before a launch spreads over y (WebGPU guarantees 65535 per dimension).
const MAX_GROUPS_X: u32 = 65_535;

/// An f32 buffer on the device (`len` values). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Buf {
    pub(crate) buffer: Rc<wgpu::Buffer>,
    pub len: usize,
}

/// A GPU opened for generation.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// What the adapter says it is.
    pub info: wgpu::AdapterInfo,
    pipelines: RefCell<HashMap<(&'static str, Variant), Rc<wgpu::ComputePipeline>>>,
    params: wgpu::Buffer,
    slot: Cell<u32>,
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    launches: Cell<usize>,
    aliased: Cell<usize>,
    /// Per kernel: launches and seconds, when profiling (natively: each launch submitted and
    /// waited for alone).
    profile: RefCell<Option<HashMap<&'static str, (usize, f64)>>>,
    zeros: RefCell<HashMap<usize, Buf>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    /// Open the first adapter that `backends` offer (the browser's WebGPU; natively Vulkan,
    /// Metal or DX12) with the limits the kernels need.
    pub async fn open(backends: wgpu::Backends) -> Result<Self, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("no GPU adapter ({e})"))?;
        Self::from_adapter(adapter).await
    }

    /// Open a device on `adapter`.
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Self, String> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        if limits.max_storage_buffers_per_shader_stage < 7 {
            return Err(format!(
                "{} storage buffers per shader stage, 7 needed",
                limits.max_storage_buffers_per_shader_stage
            ));
        }
        let mut required = wgpu::Limits::downlevel_defaults();
        required.max_storage_buffers_per_shader_stage =
            limits.max_storage_buffers_per_shader_stage.min(8);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("flick-direct"),
                required_limits: required,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the adapter gave no device ({e})"))?;
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("launch parameters"),
            size: SLOT_BYTES * PARAM_SLOTS as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            info,
            pipelines: RefCell::new(HashMap::new()),
            params,
            slot: Cell::new(0),
            encoder: RefCell::new(None),
            launches: Cell::new(0),
            aliased: Cell::new(0),
            profile: RefCell::new(None),
            zeros: RefCell::new(HashMap::new()),
        })
    }

    /// Profile from now on (`true`, natively): every launch is submitted and waited for alone and
    /// its time added to its kernel's; slow, for finding where the time goes. `false` stops.
    pub fn set_profiling(&self, on: bool) {
        *self.profile.borrow_mut() = on.then(HashMap::new);
    }

    /// What profiling measured: per kernel, launches and seconds, the slowest first.
    pub fn profile(&self) -> Vec<(&'static str, usize, f64)> {
        let mut rows: Vec<_> = self
            .profile
            .borrow()
            .iter()
            .flatten()
            .map(|(k, (n, t))| (*k, *n, *t))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }

    /// Buffers copied so far because a launch bound them twice.
    pub fn aliased_copies(&self) -> usize {
        self.aliased.get()
    }

    /// Kernels launched so far.
    pub fn launches(&self) -> usize {
        self.launches.get()
    }

    /// Kernel pipelines compiled so far (one per kernel and template values).
    pub fn compiled(&self) -> usize {
        self.pipelines.borrow().len()
    }

    /// A buffer holding `data`.
    pub fn upload(&self, data: &[f32]) -> Buf {
        let padded;
        let data = if data.is_empty() {
            padded = [0f32];
            &padded[..]
        } else {
            data
        };
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(data),
                usage: Self::usage(),
            });
        Buf {
            buffer: Rc::new(buffer),
            len: data.len(),
        }
    }

    /// A new buffer of `len` values (zeros).
    pub fn alloc(&self, len: usize) -> Buf {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * len.max(1) as u64,
            usage: Self::usage(),
            mapped_at_creation: false,
        });
        Buf {
            buffer: Rc::new(buffer),
            len,
        }
    }

    /// A shared buffer of `len` zeros (never written: an absent attention bias).
    pub fn zeros(&self, len: usize) -> Buf {
        self.zeros
            .borrow_mut()
            .entry(len)
            .or_insert_with(|| self.alloc(len))
            .clone()
    }

    fn usage() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
    }

    fn pipeline(&self, name: &'static str, v: Variant) -> Rc<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.borrow().get(&(name, v)) {
            return p.clone();
        }
        let src = KERNELS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no kernel {name} in shaders/kernels"));
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(instantiate(src, v).into()),
            });
        let pipeline = Rc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        self.pipelines
            .borrow_mut()
            .insert((name, v), pipeline.clone());
        pipeline
    }

    /// Record a launch of kernel `name` (template values `v`) over `groups` workgroups, with
    /// `bufs` bound in order and `params` as the last binding.
    pub(crate) fn launch(
        &self,
        name: &'static str,
        v: Variant,
        bufs: &[&Buf],
        params: &[u32],
        groups: usize,
    ) {
        assert!(params.len() <= PARAM_WORDS, "{name}: too many parameters");
        let pipeline = self.pipeline(name, v);
        if self.slot.get() == PARAM_SLOTS {
            self.submit();
        }
        let offset = self.slot.get() as u64 * SLOT_BYTES;
        self.slot.set(self.slot.get() + 1);
        let mut words = [0u32; PARAM_WORDS];
        words[..params.len()].copy_from_slice(params);
        self.queue
            .write_buffer(&self.params, offset, bytemuck::cast_slice(&words));
        let mut recording = self.encoder.borrow_mut();
        let encoder = recording.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        // WebGPU refuses a buffer bound twice to one kernel (Flick's kernels declare every binding
        // writable; native wgpu does not check): every binding of a buffer but its last (the
        // written one: outputs come after inputs) reads a copy made just before the launch.
        let copies: Vec<Option<Buf>> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                bufs[i + 1..]
                    .iter()
                    .any(|o| Rc::ptr_eq(&o.buffer, &b.buffer))
                    .then(|| {
                        let copy = self.alloc(b.len);
                        encoder.copy_buffer_to_buffer(
                            &b.buffer,
                            0,
                            &copy.buffer,
                            0,
                            4 * b.len.max(1) as u64,
                        );
                        self.aliased.set(self.aliased.get() + 1);
                        copy
                    })
            })
            .collect();
        let bufs: Vec<&Buf> = bufs
            .iter()
            .zip(&copies)
            .map(|(b, c)| c.as_ref().unwrap_or(b))
            .collect();
        let mut entries: Vec<wgpu::BindGroupEntry> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.buffer.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: bufs.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params,
                offset,
                size: std::num::NonZeroU64::new(4 * PARAM_WORDS as u64),
            }),
        });
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = groups.max(1) as u32;
        let (x, y) = if groups <= MAX_GROUPS_X {
            (groups, 1)
        } else {
            (MAX_GROUPS_X, groups.div_ceil(MAX_GROUPS_X))
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(name),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        drop(pass);
        drop(recording);
        self.launches.set(self.launches.get() + 1);
        #[cfg(not(target_arch = "wasm32"))]
        if self.profile.borrow().is_some() {
            // While profiling every launch is submitted as it is recorded: this one (with its
            // alias copies) alone.
            let t0 = std::time::Instant::now();
            self.submit();
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            });
            let secs = t0.elapsed().as_secs_f64();
            if let Some(p) = self.profile.borrow_mut().as_mut() {
                let e = p.entry(name).or_default();
                e.0 += 1;
                e.1 += secs;
            }
        }
    }

    /// Submit what has been recorded.
    pub fn submit(&self) {
        if let Some(encoder) = self.encoder.borrow_mut().take() {
            self.queue.submit([encoder.finish()]);
        }
        self.slot.set(0);
    }

    /// Drop what has been recorded and not submitted (its kernels' pipelines stay compiled).
    pub fn discard(&self) {
        self.encoder.borrow_mut().take();
        self.slot.set(0);
    }

    /// Read a buffer back (after everything recorded so far has run).
    pub async fn read(&self, b: &Buf) -> Result<Vec<f32>, String> {
        let size = 4 * b.len.max(1) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut encoder = self.encoder.borrow_mut();
            let encoder = encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            encoder.copy_buffer_to_buffer(&b.buffer, 0, &staging, 0, size);
        }
        self.submit();
        let (tx, rx) = futures_channel::oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| format!("waiting for the GPU failed: {e}"))?;
        rx.await
            .map_err(|_| "the read-back was dropped".to_string())?
            .map_err(|e| format!("reading back from the GPU failed: {e}"))?;
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| format!("reading back from the GPU failed: {e}"))?;
        let mut out: Vec<f32> = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        staging.unmap();
        out.truncate(b.len);
        Ok(out)
    }
}
