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
    GetRows,
    Other,
}

impl Backend {
    /// The CPU backend with `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Backend {
        // SAFETY: no preconditions; returns null only on allocation failure.
        let raw = unsafe { sys::ggml_backend_cpu_init() };
        assert!(!raw.is_null(), "ggml_backend_cpu_init failed");
        let b = Backend { raw, is_cpu: true };
        b.set_n_threads(n_threads);
        b
    }

    pub fn set_n_threads(&self, n: usize) {
        if self.is_cpu {
            // SAFETY: raw is a live CPU backend (is_cpu).
            unsafe { sys::ggml_backend_cpu_set_n_threads(self.raw, n.max(1) as i32) }
        }
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

    pub fn default_buffer_type(&self) -> BufferType {
        // SAFETY: live backend.
        BufferType(unsafe { sys::ggml_backend_get_default_buffer_type(self.raw) })
    }

    /// The CPU device's extra buffer types (weight repacking for faster matmuls), in ggml's
    /// order of preference; empty for other backends.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
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
                ctx.mul_mat(shadow, b)
            }
            WeightUse::GetRows => {
                let b = ctx.new_tensor(Type::I32, &[512]);
                ctx.get_rows(shadow, b)
            }
            // Norm weights, biases: elementwise use.
            WeightUse::Other => {
                let a = ctx.new_tensor(Type::F32, &ne);
                ctx.mul(a, shadow)
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
pub struct BufferType(sys::ggml_backend_buffer_type_t);
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

/// Backend memory holding tensors. Frees its memory on drop.
pub struct Buffer {
    raw: sys::ggml_backend_buffer_t,
    /// For buffers over host memory we do not own (a memory-mapped file): keeps it alive.
    _host: Option<Arc<dyn Any + Send + Sync>>,
}
// SAFETY: backend buffers are not tied to a thread; ggml-backend synchronizes transfers.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: raw was allocated by ggml and is freed once, here.
        unsafe { sys::ggml_backend_buffer_free(self.raw) }
    }
}

impl Buffer {
    /// Allocate memory for every tensor of `ctx` that has none yet, in `buft`.
    /// `None` if the allocation failed (out of memory) or there was nothing to allocate.
    pub fn alloc_ctx_tensors(ctx: &Context, buft: BufferType) -> Option<Buffer> {
        // SAFETY: live context; ggml assigns each unallocated tensor a slice of the new buffer.
        let raw = unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx.as_ptr(), buft.0) };
        (!raw.is_null()).then_some(Buffer { raw, _host: None })
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
            raw,
            _host: Some(owner),
        }
    }

    /// Place tensor `t` (no memory yet) at byte `offset` of this buffer.
    /// Panics if the tensor does not fit: the caller checked file bounds before.
    pub fn place(&self, t: Tensor, offset: usize) {
        assert!(!t.is_allocated(), "tensor {} already has memory", t.name());
        assert!(
            offset + t.nbytes() <= self.size(),
            "tensor {} outside its buffer",
            t.name()
        );
        // SAFETY: live buffer and tensor; the range is inside the buffer (checked above).
        unsafe {
            let base = sys::ggml_backend_buffer_get_base(self.raw) as *mut u8;
            let status =
                sys::ggml_backend_tensor_alloc(self.raw, t.as_ptr(), base.add(offset).cast());
            assert_eq!(
                status,
                sys::GGML_STATUS_SUCCESS,
                "ggml_backend_tensor_alloc failed"
            );
        }
    }

    pub fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.raw) }
    }

    /// Mark as holding weights (lets the scheduler prefer running ops where weights live).
    pub fn set_usage_weights(&self) {
        // SAFETY: live buffer.
        unsafe {
            sys::ggml_backend_buffer_set_usage(self.raw, sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        }
    }

    pub fn clear(&self, value: u8) {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_clear(self.raw, value) }
    }

    pub fn buffer_type(&self) -> BufferType {
        // SAFETY: live buffer.
        BufferType(unsafe { sys::ggml_backend_buffer_get_type(self.raw) })
    }
}

/// The backend scheduler: assigns graph nodes to backends and allocates intermediate tensors.
pub struct Sched {
    raw: sys::ggml_backend_sched_t,
    /// The backends, kept alive (and in ggml's priority order) for the scheduler's lifetime.
    _backends: Vec<Arc<Backend>>,
}
// SAFETY: the scheduler is used by one owner at a time (`&mut self` for every operation).
unsafe impl Send for Sched {}
// SAFETY: no `&self` method touches the scheduler state.
unsafe impl Sync for Sched {}

impl Drop for Sched {
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
            raw,
            _backends: backends,
        }
    }

    /// Reserve compute memory for a graph of the largest shape to be used.
    pub fn reserve(&mut self, g: Graph) -> bool {
        // SAFETY: live scheduler and graph (its context outlives this call).
        unsafe { sys::ggml_backend_sched_reserve(self.raw, g.as_ptr()) }
    }

    /// Forget the last allocation (before allocating another graph).
    pub fn reset(&mut self) {
        // SAFETY: live scheduler.
        unsafe { sys::ggml_backend_sched_reset(self.raw) }
    }

    /// Assign backends and memory to every node of `g`; inputs can be written after this.
    pub fn alloc_graph(&mut self, g: Graph) -> bool {
        // SAFETY: live scheduler and graph.
        unsafe { sys::ggml_backend_sched_alloc_graph(self.raw, g.as_ptr()) }
    }

    /// Run `g` (allocated by the last `alloc_graph`) to completion.
    pub fn compute(&mut self, g: Graph) -> Result<(), String> {
        // SAFETY: live scheduler and a graph allocated by it.
        let st = unsafe { sys::ggml_backend_sched_graph_compute(self.raw, g.as_ptr()) };
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
        self._backends.iter().map(|b| self.buffer_size(b)).sum()
    }

    /// Bytes of compute memory held for `backend`.
    pub fn buffer_size(&self, backend: &Backend) -> usize {
        // SAFETY: live scheduler; backend is one of its own.
        unsafe { sys::ggml_backend_sched_get_buffer_size(self.raw, backend.raw()) }
    }
}
