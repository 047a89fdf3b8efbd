//! Compute backends, buffers and the graph scheduler.

use crate::context::{Context, Graph, Tensor};

use crate::sys;
use crate::types::Type;
use std::any::Any;
use std::ffi::CStr;
use std::sync::Arc;

/// A compute backend (CPU today; CUDA and others through ggml's device registry).
pub struct Backend {
    raw: sys::ggml_backend_t,
    /// The CPU backend's thread-count setter is found through the registry; `None` elsewhere.
    is_cpu: bool,
    /// For a GPU backend: the CPU backend the scheduler runs unsupported ops on.
    cpu_fallback: Option<Arc<Backend>>,
}

/// A GPU device ggml can see (CUDA, HIP, Vulkan, Metal: whichever backends this ggml was built
/// with, or loaded at run time).
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub description: String,
    pub free_bytes: usize,
    pub total_bytes: usize,
}

// SAFETY: a ggml backend may be used from any thread, one thread at a time (we hand out `&mut`
// for compute through Sched, and the CPU backend's setters take `&self` but are plain stores).
unsafe impl Send for Backend {}
// SAFETY: as above; concurrent use is serialized by the owners (one engine per backend).
unsafe impl Sync for Backend {}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: raw came from a ggml_backend_*_init and is freed once, here.
        unsafe { sys::ggml_backend_free(self.raw) }
    }
}

/// What a weight tensor is used for, to ask whether a buffer type can hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightUse {
    MulMat,
    /// Stacked expert matrices `[k, m, n_expert]` read by `mul_mat_id`.
    MulMatId,
    GetRows,
    Other,
}

impl Backend {
    /// The CPU backend with `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Backend {
        // SAFETY: no preconditions; returns null only on allocation failure.
        let raw = unsafe { sys::ggml_backend_cpu_init() };
        assert!(!raw.is_null(), "ggml_backend_cpu_init failed");
        let b = Backend {
            raw,
            is_cpu: true,
            cpu_fallback: None,
        };
        b.set_n_threads(n_threads);
        b
    }

    /// The GPU devices ggml knows, in registry order (index = the N of `cuda:N`).
    pub fn gpus() -> Vec<(GpuInfo, sys::ggml_backend_dev_t)> {
        let mut out = Vec::new();
        // SAFETY: registry enumeration; device handles and their strings are static.
        unsafe {
            for i in 0..sys::ggml_backend_dev_count() {
                let dev = sys::ggml_backend_dev_get(i);
                let ty = sys::ggml_backend_dev_type(dev);
                if ty != sys::GGML_BACKEND_DEVICE_TYPE_GPU
                    && ty != sys::GGML_BACKEND_DEVICE_TYPE_IGPU
                {
                    continue;
                }
                let (mut free, mut total) = (0usize, 0usize);
                sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
                let s = |p: *const std::os::raw::c_char| {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                };
                out.push((
                    GpuInfo {
                        name: s(sys::ggml_backend_dev_name(dev)),
                        description: s(sys::ggml_backend_dev_description(dev)),
                        free_bytes: free,
                        total_bytes: total,
                    },
                    dev,
                ));
            }
        }
        out
    }

    /// A backend on GPU number `index` (see [`Backend::gpus`]); ops the GPU lacks run on a CPU
    /// backend of `n_threads` threads.
    pub fn gpu(index: usize, n_threads: usize) -> Result<Backend, String> {
        let gpus = Backend::gpus();
        let Some((_, dev)) = gpus.get(index) else {
            return Err(if gpus.is_empty() {
                "no GPU found: this build of ggml has no GPU backend (build with --features cuda, or run with the CUDA ggml libraries; see docs/GPU.md), or no GPU is visible".to_string()
            } else {
                format!("GPU {index} not found: {} GPU(s) visible", gpus.len())
            });
        };
        // SAFETY: dev is a live registry device; null params = defaults.
        let raw = unsafe { sys::ggml_backend_dev_init(*dev, std::ptr::null()) };
        if raw.is_null() {
            return Err(format!("could not initialize GPU {index}"));
        }
        Ok(Backend {
            raw,
            is_cpu: false,
            cpu_fallback: Some(Arc::new(Backend::cpu(n_threads))),
        })
    }

    /// Free and total memory of this backend's device, in bytes.
    pub fn memory(&self) -> (usize, usize) {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: live backend; its device handle is static.
        unsafe {
            let dev = sys::ggml_backend_get_device(self.raw);
            if !dev.is_null() {
                sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
            }
        }
        (free, total)
    }

    /// The backends a scheduler for this one needs, in priority order: this one, then the CPU
    /// backend for the ops it does not support.
    pub fn sched_backends(self: &Arc<Self>) -> Vec<Arc<Backend>> {
        let mut v = vec![self.clone()];
        if let Some(cpu) = &self.cpu_fallback {
            v.push(cpu.clone());
        }
        v
    }

    pub fn set_n_threads(&self, n: usize) {
        if self.is_cpu {
            // SAFETY: raw is a live CPU backend (is_cpu).
            unsafe { sys::ggml_backend_cpu_set_n_threads(self.raw, n.max(1) as i32) }
        }
    }

    /// Wait until everything queued on this backend (graphs, async copies) has finished.
    pub fn synchronize(&self) {
        // SAFETY: live backend.
        unsafe { sys::ggml_backend_synchronize(self.raw) }
    }

    pub fn name(&self) -> String {
        // SAFETY: live backend; static C string.
        unsafe { CStr::from_ptr(sys::ggml_backend_name(self.raw)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn is_cpu(&self) -> bool {
        self.is_cpu
    }

    /// Page-locked host memory of `bytes` for fast transfers from this backend's device (what
    /// llama.cpp reads its logits into); `None` on the CPU backend or if it cannot be had.
    pub fn pinned_host_memory(&self, bytes: usize) -> Option<PinnedHost> {
        if self.is_cpu || bytes == 0 {
            return None;
        }
        // SAFETY: live backend; the device handle and its buffer type are static in ggml.
        let raw = unsafe {
            let dev = sys::ggml_backend_get_device(self.raw);
            if dev.is_null() {
                return None;
            }
            let buft = sys::ggml_backend_dev_host_buffer_type(dev);
            if buft.is_null() {
                return None;
            }
            sys::ggml_backend_buft_alloc_buffer(buft, bytes)
        };
        if raw.is_null() {
            return None;
        }
        let buffer = Buffer {
            core: Arc::new(BufferCore { raw, _host: None }),
        };
        // SAFETY: live buffer; a host buffer type's base is a CPU pointer.
        let base = unsafe { sys::ggml_backend_buffer_get_base(raw) } as *mut f32;
        if base.is_null() || buffer.size() < bytes || !base.is_aligned() {
            return None;
        }
        Some(PinnedHost {
            _buffer: buffer,
            base,
            len: bytes / 4,
        })
    }

    pub fn default_buffer_type(&self) -> BufferType {
        // SAFETY: live backend.
        BufferType(unsafe { sys::ggml_backend_get_default_buffer_type(self.raw) })
    }

    /// The CPU device's extra buffer types (weight repacking for faster matmuls), in ggml's
    /// order of preference; empty for other backends.
    ///
    /// Leaves out ggml's AMX buffer type (Intel Sapphire Rapids and later): its matmul crashes
    /// in `ggml_backend_amx_mul_mat` on the first evaluation with Q4_K_M models (llama.cpp issue
    /// 20824, closed unfixed; it crashed every model on the project's Xeon CI machine). The
    /// weights then go to the next type, ggml's AVX-512 repack, which runs fine there.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
        let mut out = self.all_extra_buffer_types();
        out.retain(|b| b.name() != "AMX");
        out
    }

    /// Whether `buft` is one of the CPU's extra buffer types, whose weights are stored in a
    /// repacked (row-interleaved) layout: a view of some rows of such a weight is not a matrix.
    pub fn is_repacked_buffer_type(&self, buft: BufferType) -> bool {
        self.all_extra_buffer_types().contains(&buft)
    }

    fn all_extra_buffer_types(&self) -> Vec<BufferType> {
        if !self.is_cpu {
            return Vec::new();
        }
        let mut out = Vec::new();
        // SAFETY: registry lookups with a static name; the returned function (if any) has the
        // documented signature `ggml_backend_dev_get_extra_bufts_t` and returns a NULL-terminated
        // array that lives as long as the device (static).
        unsafe {
            let dev = sys::ggml_backend_get_device(self.raw);
            if dev.is_null() {
                return out;
            }
            let reg = sys::ggml_backend_dev_backend_reg(dev);
            let f = sys::ggml_backend_reg_get_proc_address(
                reg,
                c"ggml_backend_dev_get_extra_bufts".as_ptr(),
            );
            if f.is_null() {
                return out;
            }
            let f: sys::ggml_backend_dev_get_extra_bufts_t = std::mem::transmute(f);
            let Some(f) = f else { return out };
            let mut p = f(dev);
            while !p.is_null() && !(*p).is_null() {
                out.push(BufferType(*p));
                p = p.add(1);
            }
        }
        out
    }

    /// Whether this backend's device can run `usage` with a weight of type `ty` and shape `ne`
    /// stored in `buft`
    /// (how llama.cpp decides where each weight goes).
    pub fn supports_weight(
        &self,
        ty: Type,
        ne: [i64; 4],
        usage: WeightUse,
        buft: BufferType,
    ) -> bool {
        let mut ctx = Context::new(8, 0);
        let shadow = ctx.new_tensor(ty, &ne);
        let op = match usage {
            WeightUse::MulMat => {
                let b = ctx.new_tensor(Type::F32, &[ne[0], 512, ne[2], ne[3]]);
                ctx.mul_mat(&shadow, &b)
            }
            WeightUse::MulMatId => {
                // As llama.cpp probes it: a few experts used by each of 512 tokens.
                let used = ne[2].min(4);
                let b = ctx.new_tensor(Type::F32, &[ne[0], used, 512]);
                let ids = ctx.new_tensor(Type::I32, &[used, 512]);
                ctx.mul_mat_id(&shadow, &b, &ids)
            }
            WeightUse::GetRows => {
                let b = ctx.new_tensor(Type::I32, &[512]);
                ctx.get_rows(&shadow, &b)
            }
            // Norm weights, biases: elementwise use.
            WeightUse::Other => {
                let a = ctx.new_tensor(Type::F32, &ne);
                ctx.mul(&a, &shadow)
            }
        };
        // SAFETY: shadow is a fresh tensor of a live context with no buffer; we attach a dummy
        // zero-size buffer of `buft` so supports_op can see the buffer type, and detach and free
        // it before returning (the context is dropped after).
        unsafe {
            let dev = sys::ggml_backend_get_device(self.raw);
            if dev.is_null() {
                return false;
            }
            let dummy = sys::ggml_backend_buft_alloc_buffer(buft.0, 0);
            if dummy.is_null() {
                return false;
            }
            (*shadow.as_ptr()).buffer = dummy;
            let ok = sys::ggml_backend_dev_supports_op(dev, op.as_ptr());
            (*shadow.as_ptr()).buffer = std::ptr::null_mut();
            sys::ggml_backend_buffer_free(dummy);
            ok
        }
    }

    pub(crate) fn raw(&self) -> sys::ggml_backend_t {
        self.raw
    }
}

/// A buffer type (where and how tensor memory is allocated).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BufferType(pub(crate) sys::ggml_backend_buffer_type_t);
// SAFETY: buffer types are static descriptors owned by their backend registry.
unsafe impl Send for BufferType {}
// SAFETY: as above.
unsafe impl Sync for BufferType {}

impl BufferType {
    pub fn name(&self) -> String {
        // SAFETY: static descriptor; static C string.
        unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
    pub fn is_host(&self) -> bool {
        // SAFETY: static descriptor.
        unsafe { sys::ggml_backend_buft_is_host(self.0) }
    }
    /// The plain CPU buffer type.
    pub fn cpu() -> BufferType {
        // SAFETY: no preconditions.
        BufferType(unsafe { sys::ggml_backend_cpu_buffer_type() })
    }
}

/// Page-locked host memory (see [`Backend::pinned_host_memory`]), viewed as f32s.
pub struct PinnedHost {
    _buffer: Buffer,
    base: *mut f32,
    len: usize,
}
// SAFETY: plain host memory owned by this value; access goes through &/&mut self.
unsafe impl Send for PinnedHost {}
// SAFETY: as above.
unsafe impl Sync for PinnedHost {}

impl PinnedHost {
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: base points to at least len f32s (checked at allocation), aligned, owned by
        // _buffer which lives as long as self; &mut self makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

/// Backend memory holding tensors. The memory is freed when the `Buffer` and every context
/// with tensors in it are gone (those contexts keep it alive).
pub struct Buffer {
    core: Arc<BufferCore>,
}

/// The ggml buffer itself, shared by its [`Buffer`] and the contexts whose tensors it holds.
struct BufferCore {
    raw: sys::ggml_backend_buffer_t,
    /// For buffers over host memory we do not own (a memory-mapped file): keeps it alive.
    _host: Option<Arc<dyn Any + Send + Sync>>,
}
// SAFETY: backend buffers are not tied to a thread; ggml-backend synchronizes transfers.
unsafe impl Send for BufferCore {}
// SAFETY: as above.
unsafe impl Sync for BufferCore {}

impl Drop for BufferCore {
    fn drop(&mut self) {
        // SAFETY: raw was allocated by ggml and is freed once, here, when neither the Buffer
        // nor any context with tensors in it is left.
        unsafe { sys::ggml_backend_buffer_free(self.raw) }
    }
}

impl Buffer {
    /// Allocate memory for every tensor of `ctx` that has none yet, in `buft`.
    /// `None` if the allocation failed (out of memory) or there was nothing to allocate.
    pub fn alloc_ctx_tensors(ctx: &Context, buft: BufferType) -> Option<Buffer> {
        // SAFETY: live context; ggml assigns each unallocated tensor a slice of the new buffer.
        let raw = unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx.as_ptr(), buft.0) };
        if raw.is_null() {
            return None;
        }
        let buffer = Buffer {
            core: Arc::new(BufferCore { raw, _host: None }),
        };
        // The context's tensors now point into this memory.
        ctx.keep_shared(buffer.core.clone());
        Some(buffer)
    }

    fn raw(&self) -> sys::ggml_backend_buffer_t {
        self.core.raw
    }

    /// A CPU buffer over host memory owned by `owner` (e.g. a memory-mapped file): tensors placed
    /// in it with [`Buffer::place`] read that memory directly, without copying.
    pub fn from_host_memory<T: AsRef<[u8]> + Send + Sync + 'static>(owner: Arc<T>) -> Buffer {
        let bytes: &[u8] = (*owner).as_ref();
        // SAFETY: the memory stays valid and unmoved while `owner` lives, and the buffer keeps
        // `owner`. ggml only reads weights placed here (they are never graph outputs).
        let raw =
            unsafe { sys::ggml_backend_cpu_buffer_from_ptr(bytes.as_ptr() as *mut _, bytes.len()) };
        assert!(!raw.is_null(), "ggml_backend_cpu_buffer_from_ptr failed");
        Buffer {
            core: Arc::new(BufferCore {
                raw,
                _host: Some(owner),
            }),
        }
    }

    /// Place tensor `t` (no memory yet) at byte `offset` of this buffer.
    /// Panics if the tensor does not fit: the caller checked file bounds before.
    pub fn place(&self, t: &Tensor, offset: usize) {
        assert!(!t.is_allocated(), "tensor {} already has memory", t.name());
        assert!(
            offset + t.nbytes() <= self.size(),
            "tensor {} outside its buffer",
            t.name()
        );
        // SAFETY: live buffer and tensor; the range is inside the buffer (checked above).
        unsafe {
            let base = sys::ggml_backend_buffer_get_base(self.raw()) as *mut u8;
            let status =
                sys::ggml_backend_tensor_alloc(self.raw(), t.as_ptr(), base.add(offset).cast());
            assert_eq!(
                status,
                sys::GGML_STATUS_SUCCESS,
                "ggml_backend_tensor_alloc failed"
            );
        }
        // The tensor now points into this memory.
        t.keep(self.core.clone());
    }

    pub fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.raw()) }
    }

    /// Mark as holding weights (lets the scheduler prefer running ops where weights live).
    pub fn set_usage_weights(&self) {
        // SAFETY: live buffer.
        unsafe {
            sys::ggml_backend_buffer_set_usage(self.raw(), sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        }
    }

    pub fn clear(&self, value: u8) {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_clear(self.raw(), value) }
    }

    pub fn buffer_type(&self) -> BufferType {
        // SAFETY: live buffer.
        BufferType(unsafe { sys::ggml_backend_buffer_get_type(self.raw()) })
    }
}

/// The backend scheduler: assigns graph nodes to backends and allocates intermediate tensors.
/// Its compute memory lives until the `Sched` and every graph it allocated are gone.
pub struct Sched {
    core: Arc<SchedCore>,
    /// The backends, in ggml's priority order.
    backends: Vec<Arc<Backend>>,
}

/// The ggml scheduler itself, shared by its [`Sched`] and the contexts of the graphs it
/// allocated (their intermediate tensors point into its compute buffers).
struct SchedCore {
    raw: sys::ggml_backend_sched_t,
    /// The backends, kept alive for the scheduler's lifetime.
    _backends: Vec<Arc<Backend>>,
}
// SAFETY: the scheduler is used through one `Sched` at a time (`&mut self` for every
// operation); the graphs' contexts only hold it to keep its memory alive.
unsafe impl Send for SchedCore {}
// SAFETY: as above.
unsafe impl Sync for SchedCore {}

impl Drop for SchedCore {
    fn drop(&mut self) {
        // SAFETY: raw from ggml_backend_sched_new, freed once, before the backends (field order).
        unsafe { sys::ggml_backend_sched_free(self.raw) }
    }
}

impl Sched {
    /// A scheduler over `backends` in priority order (the CPU last), for graphs of up to
    /// `graph_size` nodes.
    pub fn new(backends: Vec<Arc<Backend>>, graph_size: usize) -> Sched {
        let mut raws: Vec<sys::ggml_backend_t> = backends.iter().map(|b| b.raw()).collect();
        // SAFETY: `raws` holds live backends (kept in `_backends`); null bufts = defaults.
        let raw = unsafe {
            sys::ggml_backend_sched_new(
                raws.as_mut_ptr(),
                std::ptr::null_mut(),
                raws.len() as i32,
                graph_size,
                false,
                true,
            )
        };
        assert!(!raw.is_null(), "ggml_backend_sched_new failed");
        Sched {
            core: Arc::new(SchedCore {
                raw,
                _backends: backends.clone(),
            }),
            backends,
        }
    }

    fn raw(&self) -> sys::ggml_backend_sched_t {
        self.core.raw
    }

    /// Reserve compute memory for a graph of the largest shape to be used.
    pub fn reserve(&mut self, g: &Graph) -> bool {
        // SAFETY: live scheduler and graph (its context outlives this call).
        unsafe { sys::ggml_backend_sched_reserve(self.raw(), g.as_ptr()) }
    }

    /// Forget the last allocation (before allocating another graph).
    pub fn reset(&mut self) {
        // SAFETY: live scheduler.
        unsafe { sys::ggml_backend_sched_reset(self.raw()) }
    }

    /// Assign backends and memory to every node of `g`; inputs can be written after this.
    pub fn alloc_graph(&mut self, g: &Graph) -> bool {
        if std::env::var_os("BLOCKSPEC_DEBUG_SCHED").is_some() {
            self.report_fallbacks(g);
        }
        // The graph's intermediate tensors will point into this scheduler's memory.
        g.keep(self.core.clone());
        // SAFETY: live scheduler and graph.
        unsafe { sys::ggml_backend_sched_alloc_graph(self.raw(), g.as_ptr()) }
    }

    /// Assign every node of `g` the first backend supports, and the graph inputs they read, to
    /// that backend (call after `reset`, before `alloc_graph`). With a GPU first, the whole step
    /// then stays on the device: inputs are written straight to device memory and nothing is
    /// split off to the CPU unless the GPU lacks the op.
    pub fn pin_to_first_backend(&mut self, g: &Graph) {
        let Some(first) = self.backends.first().map(|b| b.raw()) else {
            return;
        };
        // SAFETY: live scheduler, backend and graph; node and source pointers are valid for the
        // graph's lifetime; set_tensor_backend only records an assignment for the next split.
        unsafe {
            let n = sys::ggml_graph_n_nodes(g.as_ptr());
            for i in 0..n {
                let node = sys::ggml_graph_node(g.as_ptr(), i);
                if !(*node).buffer.is_null() || !sys::ggml_backend_supports_op(first, node) {
                    continue;
                }
                sys::ggml_backend_sched_set_tensor_backend(self.raw(), node, first);
                for &src in (*node).src.iter() {
                    if !src.is_null()
                        && (*src).buffer.is_null()
                        && (*src).view_src.is_null()
                        && (*src).op == sys::GGML_OP_NONE
                    {
                        sys::ggml_backend_sched_set_tensor_backend(self.raw(), src, first);
                    }
                }
            }
        }
    }

    /// Debugging aid (BLOCKSPEC_DEBUG_SCHED=1): print the nodes of `g` the first backend cannot
    /// run, with their sources, before the scheduler splits the graph.
    fn report_fallbacks(&self, g: &Graph) {
        let Some(first) = self.backends.first() else {
            return;
        };
        let name = |t: *mut sys::ggml_tensor| -> String {
            if t.is_null() {
                return "-".into();
            }
            // SAFETY: a live tensor of the graph; name and op name are C strings it owns.
            unsafe {
                let n = CStr::from_ptr((*t).name.as_ptr()).to_string_lossy();
                let op = CStr::from_ptr(sys::ggml_op_name((*t).op)).to_string_lossy();
                let vs = if (*t).view_src.is_null() { "" } else { " view" };
                let buf = if (*t).buffer.is_null() { "" } else { " buf" };
                format!("{n}:{op}{vs}{buf}")
            }
        };
        // SAFETY: live graph and backend; nodes are valid for the graph's lifetime.
        unsafe {
            let n = sys::ggml_graph_n_nodes(g.as_ptr());
            for i in 0..n {
                let node = sys::ggml_graph_node(g.as_ptr(), i);
                if !sys::ggml_backend_supports_op(first.raw(), node) {
                    let srcs: Vec<String> = (0..3).map(|j| name((*node).src[j])).collect();
                    eprintln!(
                        "sched: node {i} {} not on {}: srcs {srcs:?}",
                        name(node),
                        first.name()
                    );
                }
            }
        }
    }

    /// Run `g` (allocated by the last `alloc_graph`) to completion.
    pub fn compute(&mut self, g: &Graph) -> Result<(), String> {
        // SAFETY: live scheduler and a graph allocated by it.
        let st = unsafe { sys::ggml_backend_sched_graph_compute(self.raw(), g.as_ptr()) };
        if st == sys::GGML_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(format!("ggml graph compute failed with status {st}"))
        }
    }

    /// Bytes of compute memory held over all backends. When this changes after an allocation,
    /// the buffers were reallocated: tensors of graphs allocated before point into freed memory
    /// (ggml's allocator does not re-place tensors that already have data), so such graphs must
    /// not be evaluated again.
    pub fn total_buffer_size(&self) -> usize {
        self.backends.iter().map(|b| self.buffer_size(b)).sum()
    }

    /// Bytes of compute memory held for `backend`.
    pub fn buffer_size(&self, backend: &Backend) -> usize {
        // SAFETY: live scheduler; backend is one of its own.
        unsafe { sys::ggml_backend_sched_get_buffer_size(self.raw(), backend.raw()) }
    }
}
