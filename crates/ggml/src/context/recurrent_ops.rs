//! The operations hybrid and mixture-of-experts targets add to a graph (Gated DeltaNet, its
//! causal convolution, multi-section RoPE, expert routing), and the device-side copy a
//! speculative step commits recurrent state with.

use super::{Context, Tensor};
use crate::backend::Backend;
use crate::sys;
use std::ptr::NonNull;

impl Context {
    pub fn sigmoid(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        // SAFETY (all ops here): live context and live tensors; ggml asserts shape rules.
        ptr!(self, unsafe { sys::ggml_sigmoid(self.ctx(), a.raw()) })
    }
    pub fn softplus(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_softplus(self.ctx(), a.raw()) })
    }
    pub fn div(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        ptr!(self, unsafe { sys::ggml_div(self.ctx(), a.raw(), b.raw()) })
    }
    /// Softmax over each row (dimension 0).
    pub fn soft_max(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_soft_max(self.ctx(), a.raw()) })
    }
    /// A new tensor of `a`'s shape with every element `value` (`a`'s data is not read).
    pub fn fill(&mut self, a: &Tensor, value: f32) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_fill(self.ctx(), a.raw(), value) })
    }
    /// The maximum of each `width`-wide piece of every row: `[n, ...]` -> `[n / width, ...]`
    /// (a last partial piece is dropped).
    pub fn max_pool_1d(&mut self, a: &Tensor, width: usize) -> Tensor {
        self.depend_on(a);
        let w = width as i32;
        ptr!(self, unsafe {
            sys::ggml_pool_1d(self.ctx(), a.raw(), sys::GGML_OP_POOL_MAX, w, w, 0)
        })
    }
    /// The sum of each row: `[n, ...]` -> `[1, ...]`.
    pub fn sum_rows(&mut self, a: &Tensor) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe { sys::ggml_sum_rows(self.ctx(), a.raw()) })
    }
    pub fn clamp(&mut self, a: &Tensor, min: f32, max: f32) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_clamp(self.ctx(), a.raw(), min, max)
        })
    }
    /// `a` repeated (tiled) up to shape `ne`.
    pub fn repeat_4d(&mut self, a: &Tensor, ne: [i64; 4]) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_repeat_4d(self.ctx(), a.raw(), ne[0], ne[1], ne[2], ne[3])
        })
    }
    /// I32 indices of the `k` largest entries of each row, largest first.
    pub fn argsort_top_k(&mut self, a: &Tensor, k: usize) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_argsort_top_k(self.ctx(), a.raw(), k as i32)
        })
    }
    /// I32 indices of the `k` largest entries of each row, in no particular order (cheaper than
    /// [`argsort_top_k`](Self::argsort_top_k) on long rows: no full sort).
    pub fn top_k(&mut self, a: &Tensor, k: usize) -> Tensor {
        self.depend_on(a);
        ptr!(self, unsafe {
            sys::ggml_top_k(self.ctx(), a.raw(), k as i32)
        })
    }
    /// Per token, the product of `b`'s rows with the experts of `a` (`[k, m, n_expert]`) that
    /// `ids` (I32 `[n_used, n_tokens]`) selects: `b` `[k, n_used or 1, n_tokens]` ->
    /// `[m, n_used, n_tokens]`.
    pub fn mul_mat_id(&mut self, a: &Tensor, b: &Tensor, ids: &Tensor) -> Tensor {
        self.depend_on(a);
        self.depend_on(b);
        self.depend_on(ids);
        ptr!(self, unsafe {
            sys::ggml_mul_mat_id(self.ctx(), a.raw(), b.raw(), ids.raw())
        })
    }
    /// Multi-section RoPE (M-RoPE / interleaved M-RoPE: `p.mode` 8 or 40): `pos` is I32
    /// `[4 * n_tokens]`, section-major; `sections` the rotary pairs given to each section.
    pub fn rope_multi(
        &mut self,
        a: &Tensor,
        pos: &Tensor,
        sections: [i32; 4],
        p: &super::RopeParams,
    ) -> Tensor {
        self.depend_on(a);
        self.depend_on(pos);
        let mut s = sections;
        ptr!(self, unsafe {
            sys::ggml_rope_multi(
                self.ctx(),
                a.raw(),
                pos.raw(),
                std::ptr::null_mut(),
                p.n_dims,
                s.as_mut_ptr(),
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
    /// Depthwise causal convolution: `sx` `[d_conv - 1 + n_t, channels, n_seqs]` (the previous
    /// `d_conv - 1` inputs then the new ones, per channel), `c` `[d_conv, channels]` ->
    /// `[channels, n_t, n_seqs]`.
    pub fn ssm_conv(&mut self, sx: &Tensor, c: &Tensor) -> Tensor {
        self.depend_on(sx);
        self.depend_on(c);
        ptr!(self, unsafe {
            sys::ggml_ssm_conv(self.ctx(), sx.raw(), c.raw())
        })
    }
    /// The gated delta rule over `n_tokens` (see ggml.h): q, k `[S, H_k, n_tokens, n_seqs]`,
    /// v `[S, H_v, n_tokens, n_seqs]`, g and beta `[1, H_v, n_tokens, n_seqs]`, state
    /// `[S, S, H_v, n_seqs]`. The result packs the outputs `[S, H_v, n_tokens, n_seqs]`, then
    /// `snapshots` states, the latest first (slot s = the state `s` tokens before the end).
    pub fn gated_delta_net(
        &mut self,
        [q, k, v]: [&Tensor; 3],
        g: &Tensor,
        beta: &Tensor,
        state: &Tensor,
        snapshots: usize,
    ) -> Tensor {
        for t in [q, k, v, g, beta, state] {
            self.depend_on(t);
        }
        ptr!(self, unsafe {
            sys::ggml_gated_delta_net(
                self.ctx(),
                q.raw(),
                k.raw(),
                v.raw(),
                g.raw(),
                beta.raw(),
                state.raw(),
                snapshots as i64,
            )
        })
    }
}

impl Tensor {
    /// Copy `n` bytes of `src` from byte `src_offset` into this tensor at byte `dst_offset`,
    /// where the two live (device to device on a GPU; no graph). Both must be allocated, of one
    /// element type, and the ranges whole elements (whole blocks of a quantized type) inside
    /// each tensor.
    pub fn copy_bytes_from(&self, src: &Tensor, src_offset: usize, dst_offset: usize, n: usize) {
        self.copy_bytes(None, src, src_offset, dst_offset, n);
    }

    /// As [`copy_bytes_from`](Self::copy_bytes_from), queued on `backend`'s stream where both
    /// tensors live on that device (a plain blocking copy elsewhere): many small copies then
    /// cost one [`Backend::synchronize`] instead of one wait each. Work queued on `backend`
    /// later (the next graph) runs after it; call `synchronize` before anything reads the
    /// destination from another stream or the host.
    pub fn copy_bytes_from_on(
        &self,
        backend: &Backend,
        src: &Tensor,
        src_offset: usize,
        dst_offset: usize,
        n: usize,
    ) {
        self.copy_bytes(Some(backend), src, src_offset, dst_offset, n);
    }

    fn copy_bytes(
        &self,
        backend: Option<&Backend>,
        src: &Tensor,
        src_offset: usize,
        dst_offset: usize,
        n: usize,
    ) {
        assert!(
            self.is_allocated() && src.is_allocated(),
            "copy between unallocated tensors"
        );
        assert_eq!(self.ty(), src.ty(), "copy between element types");
        let bb = self.ty().block_bytes() as usize;
        let per_block = self.ty().block_size() as usize;
        assert!(
            n.is_multiple_of(bb) && src_offset.is_multiple_of(bb) && dst_offset.is_multiple_of(bb)
        );
        assert!(src_offset + n <= src.nbytes() && dst_offset + n <= self.nbytes());
        if n == 0 {
            return;
        }
        let tmp = Context::new(2, 0);
        // SAFETY: the views live in `tmp`, which outlives their use here; each view lies inside
        // its (checked, allocated) source, and ggml_backend_view_init points it at the
        // source's buffer memory. The sources' buffers are alive: the handles keep them.
        unsafe {
            let ne = (n / bb * per_block) as i64;
            let sv = sys::ggml_view_1d(tmp.ctx(), src.raw(), ne, src_offset);
            let dv = sys::ggml_view_1d(tmp.ctx(), self.raw(), ne, dst_offset);
            let (sv, dv) = (
                NonNull::new(sv).expect("view"),
                NonNull::new(dv).expect("view"),
            );
            assert_eq!(
                sys::ggml_backend_view_init(sv.as_ptr()),
                sys::GGML_STATUS_SUCCESS
            );
            assert_eq!(
                sys::ggml_backend_view_init(dv.as_ptr()),
                sys::GGML_STATUS_SUCCESS
            );
            // The copy reads only the views' data pointers and sizes, at the call: dropping
            // `tmp` before a queued copy runs is fine.
            match backend {
                Some(b) => {
                    sys::ggml_backend_tensor_copy_async(b.raw(), b.raw(), sv.as_ptr(), dv.as_ptr())
                }
                None => sys::ggml_backend_tensor_copy(sv.as_ptr(), dv.as_ptr()),
            }
        }
    }
}
