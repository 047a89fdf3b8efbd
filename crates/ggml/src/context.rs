//! ggml contexts, tensor handles, graph building.

use crate::sys;
use crate::types::Type;
use std::any::Any;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// The `ggml_context` itself, shared by its [`Context`] and every [`Tensor`] and [`Graph`] made
/// in it: freed when the last of them is dropped, so no handle can outlive its metadata.
struct Core {
    raw: NonNull<sys::ggml_context>,
    /// Whatever the memory of this context's tensors depends on: the contexts of tensors that
    /// nodes of this context read (weights, KV cache; recorded by every operation), the buffers
    /// holding its tensors' data, the scheduler that allocated its graph's intermediates.
    keep: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

// SAFETY: a ggml_context has no thread affinity. Its arena is written only through
// `&mut Context` (one owner); handles read metadata that no one writes after creation, except
// `set_name`/`set_output`/`set_input`, which take `&mut Context` of the tensor's own context.
unsafe impl Send for Core {}
// SAFETY: as above.
unsafe impl Sync for Core {}

impl Drop for Core {
    fn drop(&mut self) {
        // SAFETY: raw came from ggml_init and is freed exactly once, here, when no handle is left.
        unsafe { sys::ggml_free(self.raw.as_ptr()) }
    }
}

impl Core {
    fn keep(&self, owner: Arc<dyn Any + Send + Sync>) {
        let mut keep = self.keep.lock().unwrap_or_else(|e| e.into_inner());
        let p = Arc::as_ptr(&owner) as *const ();
        if !keep.iter().any(|k| Arc::as_ptr(k) as *const () == p) {
            keep.push(owner);
        }
    }
}

/// The builder of a `ggml_context`: makes tensors, graph nodes and graphs in it. Contexts made
/// here never allocate tensor data (`no_alloc`): data lives in backend buffers
/// ([`crate::Buffer`]) or, for graph intermediates, in the scheduler's.
pub struct Context {
    core: Arc<Core>,
}

/// A handle to a tensor. It shares ownership of its context (cheap to clone: one reference
/// count), so the tensor's metadata, and through the context's `keep` list the memory it
/// points into, stay alive as long as the handle: safe code cannot reach freed memory.
#[derive(Clone)]
pub struct Tensor {
    ptr: NonNull<sys::ggml_tensor>,
    core: Arc<Core>,
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.ptr == other.ptr
    }
}
impl Eq for Tensor {}
impl std::hash::Hash for Tensor {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.ptr.hash(h)
    }
}

// SAFETY: a tensor handle is a pointer into a context it keeps alive, which is Send + Sync (see
// Core); reading metadata is thread-safe, and data transfers go through ggml-backend.
unsafe impl Send for Tensor {}
// SAFETY: as above.
unsafe impl Sync for Tensor {}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?} {:?})", self.name(), self.ty(), self.ne())
    }
}

/// Rotary position embedding parameters (ggml_rope_ext's scalars).
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub n_dims: i32,
    /// GGML_ROPE_TYPE_NORMAL (0) or GGML_ROPE_TYPE_NEOX (2).
    pub mode: i32,
    pub n_ctx_orig: i32,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

impl Tensor {
    fn raw(&self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }

    fn get(&self) -> &sys::ggml_tensor {
        // SAFETY: `core` keeps the tensor's context alive, and nothing writes the metadata
        // concurrently (metadata is written only through `&mut Context`).
        unsafe { self.ptr.as_ref() }
    }

    /// Make `owner` live at least as long as this tensor's context (the buffer holding its data).
    pub(crate) fn keep(&self, owner: Arc<dyn Any + Send + Sync>) {
        self.core.keep(owner)
    }

    /// Elements per dimension (ggml order: ne[0] is the fastest-moving).
    pub fn ne(&self) -> [i64; 4] {
        self.get().ne
    }
    /// Strides in bytes per dimension.
    pub fn nb(&self) -> [usize; 4] {
        self.get().nb
    }
    pub fn ty(&self) -> Type {
        Type::from_raw(self.get().type_).expect("ggml tensors always carry a valid type")
    }
    pub fn nelements(&self) -> i64 {
        self.ne().iter().product()
    }
    pub fn nbytes(&self) -> usize {
        // SAFETY: valid tensor (type invariant).
        unsafe { sys::ggml_nbytes(self.raw()) }
    }
    pub fn name(&self) -> String {
        // SAFETY: `name` is a NUL-terminated fixed array inside the tensor.
        unsafe { std::ffi::CStr::from_ptr(self.get().name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
    /// Whether the tensor has memory (a buffer or a data pointer).
    pub fn is_allocated(&self) -> bool {
        let t = self.get();
        !t.data.is_null() || !t.buffer.is_null()
    }

    /// The type of the buffer holding the tensor's data (None while it has none).
    pub fn buffer_type(&self) -> Option<crate::BufferType> {
        let b = self.get().buffer;
        if b.is_null() {
            return None;
        }
        // SAFETY: a non-null `buffer` of a live tensor is a live ggml_backend_buffer.
        Some(crate::BufferType(unsafe {
            sys::ggml_backend_buffer_get_type(b)
        }))
    }

    /// Copy `data` into the tensor's memory at byte `offset` (any backend).
    ///
    /// Panics if the tensor has no memory or the range is out of bounds: both are programming
    /// errors of the caller, never caused by user input.
    pub fn write_bytes(&self, data: &[u8], offset: usize) {
        assert!(
            self.get().buffer.is_some_nonnull(),
            "tensor {} has no buffer",
            self.name()
        );
        assert!(
            offset + data.len() <= self.nbytes(),
            "write out of bounds of {}",
            self.name()
        );
        // SAFETY: the tensor is allocated in a backend buffer and the range is inside it.
        unsafe {
            sys::ggml_backend_tensor_set(self.raw(), data.as_ptr().cast(), offset, data.len())
        }
    }

    /// Copy the tensor's bytes `[offset, offset + out.len())` into `out`.
    pub fn read_bytes(&self, out: &mut [u8], offset: usize) {
        assert!(
            self.get().buffer.is_some_nonnull(),
            "tensor {} has no buffer",
            self.name()
        );
        assert!(
            offset + out.len() <= self.nbytes(),
            "read out of bounds of {}",
            self.name()
        );
        // SAFETY: as in write_bytes.
        unsafe {
            sys::ggml_backend_tensor_get(self.raw(), out.as_mut_ptr().cast(), offset, out.len())
        }
    }

    pub fn write_f32(&self, data: &[f32]) {
        assert_eq!(self.ty(), Type::F32);
        self.write_bytes(as_bytes(data), 0)
    }
    pub fn write_i32(&self, data: &[i32]) {
        assert_eq!(self.ty(), Type::I32);
        self.write_bytes(as_bytes(data), 0)
    }
    pub fn write_i64(&self, data: &[i64]) {
        assert_eq!(self.ty(), Type::I64);
        self.write_bytes(as_bytes(data), 0)
    }
    pub fn write_f16_bits(&self, data: &[u16]) {
        assert_eq!(self.ty(), Type::F16);
        self.write_bytes(as_bytes(data), 0)
    }
    /// Read the first `out.len()` f32 elements (tensor must be F32 and contiguous).
    pub fn read_f32_into(&self, out: &mut [f32], first: usize) {
        assert_eq!(self.ty(), Type::F32);
        // SAFETY: f32 has no invalid bit patterns; the slice is reinterpreted as bytes only.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                out.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(out),
            )
        };
        self.read_bytes(bytes, first * 4)
    }

    /// Read `out.len()` i32 elements starting at element `first` (tensor must be I32).
    pub fn read_i32_into(&self, out: &mut [i32], first: usize) {
        assert_eq!(self.ty(), Type::I32);
        // SAFETY: i32 has no invalid bit patterns; the slice is reinterpreted as bytes only.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                out.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(out),
            )
        };
        self.read_bytes(bytes, first * 4)
    }

    /// The raw pointer, for the backend module.
    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_tensor {
        self.raw()
    }
}

trait NonNullExt {
    fn is_some_nonnull(&self) -> bool;
}
impl<T> NonNullExt for *mut T {
    fn is_some_nonnull(&self) -> bool {
        !self.is_null()
    }
}

fn as_bytes<T: Copy>(data: &[T]) -> &[u8] {
    // SAFETY: T is a plain numeric type (f32/i32/i64/u16) here; any byte view of it is valid.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// A computation graph living in a [`Context`]; like a [`Tensor`], it keeps its context alive.
#[derive(Clone)]
pub struct Graph {
    ptr: NonNull<sys::ggml_cgraph>,
    core: Arc<Core>,
}
// SAFETY: like Tensor, a pointer into a Send + Sync context that the handle keeps alive.
unsafe impl Send for Graph {}
// SAFETY: as above.
unsafe impl Sync for Graph {}

impl Graph {
    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_cgraph {
        self.ptr.as_ptr()
    }
    /// Make `owner` live at least as long as this graph's context (the scheduler that allocated
    /// its intermediate tensors).
    pub(crate) fn keep(&self, owner: Arc<dyn Any + Send + Sync>) {
        self.core.keep(owner)
    }
    pub fn n_nodes(&self) -> i32 {
        // SAFETY: valid graph of a live context.
        unsafe { sys::ggml_graph_n_nodes(self.as_ptr()) }
    }

    /// How many nodes of each operation the graph runs (views and reshapes included, though
    /// they launch no kernel), most frequent first: what a GPU step is made of.
    pub fn op_counts(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        // SAFETY: valid graph of a live context; nodes are valid for its lifetime; op names
        // are static C strings.
        unsafe {
            for i in 0..self.n_nodes() {
                let node = sys::ggml_graph_node(self.as_ptr(), i);
                let name = std::ffi::CStr::from_ptr(sys::ggml_op_desc(node)).to_string_lossy();
                *counts.entry(name.into_owned()).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Wrap a tensor ggml just made in this context (`$self`).
macro_rules! ptr {
    ($self:ident, $e:expr) => {
        $self.wrap(NonNull::new($e).expect("ggml returned a null tensor (context out of memory)"))
    };
}

impl Context {
    /// A metadata-only context with room for `n_tensors` tensors and a graph of `graph_nodes`.
    pub fn new(n_tensors: usize, graph_nodes: usize) -> Context {
        // SAFETY: pure size computations.
        let mem = unsafe {
            sys::ggml_tensor_overhead() * n_tensors
                + sys::ggml_graph_overhead_custom(graph_nodes, false)
                + 1024
        };
        let params = sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: ggml allocates its own arena of mem bytes; returns null only on OOM.
        let raw = unsafe { sys::ggml_init(params) };
        Context {
            core: Arc::new(Core {
                raw: NonNull::new(raw).expect("ggml_init failed: out of memory"),
                keep: Mutex::new(Vec::new()),
            }),
        }
    }

    fn wrap(&self, ptr: NonNull<sys::ggml_tensor>) -> Tensor {
        Tensor {
            ptr,
            core: self.core.clone(),
        }
    }

    /// A node of this context reads `t`: keep `t`'s context alive as long as this one.
    fn depend_on(&self, t: &Tensor) {
        if !Arc::ptr_eq(&self.core, &t.core) {
            self.core.keep(t.core.clone());
        }
    }

    /// Panics unless `t` was made in this context: metadata is written only through the
    /// `&mut Context` that owns it.
    fn assert_own(&self, t: &Tensor) {
        assert!(
            Arc::ptr_eq(&self.core, &t.core),
            "tensor {} belongs to another context",
            t.name()
        );
    }

    /// Bytes of host memory the context's arena holds (tensor and graph metadata).
    pub fn mem_size(&self) -> usize {
        // SAFETY: the context is live for as long as self.
        unsafe { sys::ggml_get_mem_size(self.ctx()) }
    }

    /// Keep `owner` alive as long as this context (memory its tensors point into).
    pub fn keep(&mut self, owner: Arc<dyn Any + Send + Sync>) {
        self.core.keep(owner)
    }

    /// As [`Context::keep`], for the backend module's buffers (which hold a shared reference).
    pub(crate) fn keep_shared(&self, owner: Arc<dyn Any + Send + Sync>) {
        self.core.keep(owner)
    }

    fn ctx(&self) -> *mut sys::ggml_context {
        self.core.raw.as_ptr()
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_context {
        self.ctx()
    }

    /// A new tensor with `ne.len()` (1..=4) dimensions.
    pub fn new_tensor(&mut self, ty: Type, ne: &[i64]) -> Tensor {
        assert!((1..=4).contains(&ne.len()));
        // SAFETY: live context; ne points to ne.len() valid i64.
        ptr!(self, unsafe {
            sys::ggml_new_tensor(self.ctx(), ty.raw(), ne.len() as i32, ne.as_ptr())
        })
    }

    /// A graph input: a new tensor flagged as input.
    pub fn input(&mut self, ty: Type, ne: &[i64], name: &str) -> Tensor {
        let t = self.new_tensor(ty, ne);
        self.set_name(&t, name);
        // SAFETY: t belongs to this live context.
        unsafe { sys::ggml_set_input(t.raw()) };
        t
    }

    pub fn set_name(&mut self, t: &Tensor, name: &str) {
        self.assert_own(t);
        let c = CString::new(name.replace('\0', "")).unwrap_or_default();
        // SAFETY: t is live; ggml copies at most sizeof(name)-1 bytes of the C string.
        unsafe { sys::ggml_set_name(t.raw(), c.as_ptr()) };
    }

    /// Flag `t` as a graph output (its memory is not reused by later nodes).
    pub fn set_output(&mut self, t: &Tensor) {
        self.assert_own(t);
        // SAFETY: t is live.
        unsafe { sys::ggml_set_output(t.raw()) }
    }

    /// The first tensor of this context, for iteration with [`Context::next_tensor`].
    pub fn first_tensor(&self) -> Option<Tensor> {
        // SAFETY: live context.
        NonNull::new(unsafe { sys::ggml_get_first_tensor(self.ctx()) }).map(|p| self.wrap(p))
    }
    pub fn next_tensor(&self, t: &Tensor) -> Option<Tensor> {
        self.assert_own(t);
        // SAFETY: t belongs to this live context.
        NonNull::new(unsafe { sys::ggml_get_next_tensor(self.ctx(), t.raw()) })
            .map(|p| self.wrap(p))
    }

    pub fn new_graph(&mut self, size: usize) -> Graph {
        // SAFETY: live context with room reserved at construction.
        let g = unsafe { sys::ggml_new_graph_custom(self.ctx(), size, false) };
        Graph {
            ptr: NonNull::new(g).expect("ggml_new_graph_custom: context too small"),
            core: self.core.clone(),
        }
    }

    pub fn build_forward_expand(&mut self, g: &Graph, t: &Tensor) {
        assert!(Arc::ptr_eq(&self.core, &g.core), "graph of another context");
        self.depend_on(t);
        // SAFETY: graph and tensor are live.
        unsafe { sys::ggml_build_forward_expand(g.as_ptr(), t.raw()) }
    }

    // ---- operations (each returns a new node of this context) ----

    pub fn get_rows(&mut self, a: &Tensor, rows: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(rows);
        // SAFETY (all ops below): live context and live tensors; ggml asserts shape rules.
        ptr!(self, unsafe {
            sys::ggml_get_rows(self.ctx(), a.raw(), rows.raw())
        })
    }
    pub fn rms_norm(&mut self, a: &Tensor, eps: f32) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_rms_norm(self.ctx(), a.raw(), eps)
        })
    }
    pub fn mul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        ptr!(self, unsafe { sys::ggml_mul(self.ctx(), a.raw(), b.raw()) })
    }
    pub fn add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        ptr!(self, unsafe { sys::ggml_add(self.ctx(), a.raw(), b.raw()) })
    }
    pub fn scale(&mut self, a: &Tensor, s: f32) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_scale(self.ctx(), a.raw(), s) })
    }
    /// `a` [k, m] x `b` [k, n] -> [m, n]: rows of `a` dotted with rows of `b`.
    pub fn mul_mat(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        ptr!(self, unsafe {
            sys::ggml_mul_mat(self.ctx(), a.raw(), b.raw())
        })
    }
    pub fn swiglu_split(&mut self, gate: &Tensor, up: &Tensor) -> Tensor {
        self.depend_on(gate);
        self.depend_on(up);
        ptr!(self, unsafe {
            sys::ggml_swiglu_split(self.ctx(), gate.raw(), up.raw())
        })
    }
    pub fn silu(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_silu(self.ctx(), a.raw()) })
    }
    pub fn cont(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_cont(self.ctx(), a.raw()) })
    }
    pub fn cpy(&mut self, a: &Tensor, dst: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(dst);
        ptr!(self, unsafe {
            sys::ggml_cpy(self.ctx(), a.raw(), dst.raw())
        })
    }
    pub fn cast(&mut self, a: &Tensor, ty: Type) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_cast(self.ctx(), a.raw(), ty.raw())
        })
    }
    pub fn concat(&mut self, a: &Tensor, b: &Tensor, dim: i32) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        ptr!(self, unsafe {
            sys::ggml_concat(self.ctx(), a.raw(), b.raw(), dim)
        })
    }
    pub fn reshape(&mut self, a: &Tensor, ne: &[i64]) -> Tensor {
        self.depend_on(a);
        // SAFETY: as above; ggml asserts the element count matches and `a` is contiguous.
        ptr!(self, unsafe {
            match ne.len() {
                1 => sys::ggml_reshape_1d(self.ctx(), a.raw(), ne[0]),
                2 => sys::ggml_reshape_2d(self.ctx(), a.raw(), ne[0], ne[1]),
                3 => sys::ggml_reshape_3d(self.ctx(), a.raw(), ne[0], ne[1], ne[2]),
                4 => sys::ggml_reshape_4d(self.ctx(), a.raw(), ne[0], ne[1], ne[2], ne[3]),
                _ => panic!("reshape to {} dims", ne.len()),
            }
        })
    }
    /// A view of `a` with shape `ne`, byte strides `nb` (nb[0] is implied by the type) and byte
    /// `offset`.
    pub fn view(&mut self, a: &Tensor, ne: &[i64], nb: &[usize], offset: usize) -> Tensor {
        self.depend_on(a);
        assert_eq!(nb.len() + 1, ne.len());
        // SAFETY: as above; ggml asserts the view stays inside `a`.
        ptr!(self, unsafe {
            match ne.len() {
                1 => sys::ggml_view_1d(self.ctx(), a.raw(), ne[0], offset),
                2 => sys::ggml_view_2d(self.ctx(), a.raw(), ne[0], ne[1], nb[0], offset),
                3 => sys::ggml_view_3d(
                    self.ctx(),
                    a.raw(),
                    ne[0],
                    ne[1],
                    ne[2],
                    nb[0],
                    nb[1],
                    offset,
                ),
                4 => sys::ggml_view_4d(
                    self.ctx(),
                    a.raw(),
                    ne[0],
                    ne[1],
                    ne[2],
                    ne[3],
                    nb[0],
                    nb[1],
                    nb[2],
                    offset,
                ),
                _ => panic!("view with {} dims", ne.len()),
            }
        })
    }
    pub fn permute(&mut self, a: &Tensor, axes: [i32; 4]) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_permute(self.ctx(), a.raw(), axes[0], axes[1], axes[2], axes[3])
        })
    }
    pub fn transpose(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_transpose(self.ctx(), a.raw()) })
    }
    /// RoPE at positions `pos`; `freq_factors` divides each frequency (Llama 3.1 scaling).
    pub fn rope_ext(
        &mut self,
        a: &Tensor,
        pos: &Tensor,
        freq_factors: Option<&Tensor>,
        p: &RopeParams,
    ) -> Tensor {
        self.depend_on(a);
        self.depend_on(pos);
        if let Some(t) = freq_factors {
            self.depend_on(t);
        }
        let ff = freq_factors.map_or(std::ptr::null_mut(), |t| t.raw());
        ptr!(self, unsafe {
            sys::ggml_rope_ext(
                self.ctx(),
                a.raw(),
                pos.raw(),
                ff,
                p.n_dims,
                p.mode,
                p.n_ctx_orig,
                p.freq_base,
                p.freq_scale,
                p.ext_factor,
                p.attn_factor,
                p.beta_fast,
                p.beta_slow,
            )
        })
    }
    /// Fused attention; `mask` is F16 [n_kv, n_q], 0 where visible and -inf where not.
    /// Accumulates in f32 (as llama.cpp asks).
    pub fn flash_attn_ext(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        scale: f32,
    ) -> Tensor {
        self.depend_on(q);
        self.depend_on(k);
        self.depend_on(v);
        self.depend_on(mask);
        let t = ptr!(self, unsafe {
            sys::ggml_flash_attn_ext(
                self.ctx(),
                q.raw(),
                k.raw(),
                v.raw(),
                mask.raw(),
                scale,
                0.0,
                0.0,
            )
        });
        // SAFETY: t is the flash-attn node just made.
        unsafe { sys::ggml_prec_set_acc(t.raw(), sys::GGML_PREC_F32) };
        t
    }
    pub fn soft_max_ext(&mut self, a: &Tensor, mask: Option<&Tensor>, scale: f32) -> Tensor {
        self.depend_on(a);
        if let Some(t) = mask {
            self.depend_on(t);
        }
        let m = mask.map_or(std::ptr::null_mut(), |m| m.raw());
        ptr!(self, unsafe {
            sys::ggml_soft_max_ext(self.ctx(), a.raw(), m, scale, 0.0)
        })
    }
    /// Write the rows of `src` into `dst` at row indices `idx` (I64 or I32); returns the updated
    /// `dst` view (add it to the graph).
    pub fn set_rows(&mut self, dst: &Tensor, src: &Tensor, idx: &Tensor) -> Tensor {
        self.depend_on(dst);
        self.depend_on(src);
        self.depend_on(idx);
        ptr!(self, unsafe {
            sys::ggml_set_rows(self.ctx(), dst.raw(), src.raw(), idx.raw())
        })
    }
    pub fn argmax(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_argmax(self.ctx(), a.raw()) })
    }
}

mod recurrent_ops;
